import type { FastifyInstance, FastifyReply } from 'fastify';
import type { StoreHealth } from '../ops/instrumented-store.js';
import type { StoreOps } from '../store/ops.js';
import type { Store } from '../store/types.js';

/**
 * Liveness says the process serves requests; readiness also proves the store answers. After
 * real traffic saw the store fail (a full disk still answers reads while every write fails),
 * readiness stays DOWN until a write succeeds again: it probes one itself, so an instance taken
 * out of rotation notices recovery without traffic. Both are unauthenticated, never rate limited,
 * under our own paths and the reference's actuator paths.
 */
export function registerHealthRoutes(app: FastifyInstance, store: Store, health?: StoreHealth, ops?: StoreOps): void {
  const live = async () => ({ status: 'UP' });
  const down = (reply: FastifyReply, error: string, since?: number) =>
    reply.code(503).send({ status: 'DOWN', store: store.kind, error, ...(since ? { since: new Date(since).toISOString() } : {}) });
  const ready = async (_req: unknown, reply: FastifyReply) => {
    try {
      await store.ping();
    } catch (err) {
      return down(reply, (err as Error).message);
    }
    const problem = health?.problem();
    if (problem) {
      try {
        await (ops?.probeWrite ? ops.probeWrite() : store.ping());
        health!.markUp('write');
      } catch (err) {
        return down(reply, (err as Error).message || problem.reason, problem.since);
      }
    }
    return { status: 'UP', store: store.kind };
  };
  const config = { auth: 'public' as const, ops: true };
  for (const path of ['/healthz', '/actuator/health/liveness']) app.get(path, { config }, live);
  for (const path of ['/readyz', '/actuator/health/readiness']) app.get(path, { config }, ready);
}
