/**
 * The Redis store's StoreOps. The gauges walk the per-tenant structures (there is no global
 * count to read), so a snapshot is cached briefly; the sweeper's backlog reads the expiry
 * registry and the due queues of the tenants it points at first.
 */
import { CyclesError } from '../../ledger/errors.js';
import type { OpsSnapshot, StoreOps } from '../ops.js';
import { firstScore } from './conn.js';
import type { RedisStore } from './store.js';

const SNAPSHOT_TTL_MS = 15_000;
/** Tenants whose due queues are read to find the earliest due reservation. */
const EARLIEST_PROBE = 8;

export function redisUnavailable(err: unknown): boolean {
  return err instanceof CyclesError && err.code === 'SERVICE_UNAVAILABLE';
}

export function redisOps(store: RedisStore): StoreOps {
  let cached: { at: number; value: OpsSnapshot } | undefined;
  return {
    async snapshot(): Promise<OpsSnapshot> {
      if (cached && Date.now() - cached.at < SNAPSHOT_TTL_MS) return cached.value;
      const value = await store.gauges();
      cached = { at: Date.now(), value };
      return value;
    },
    async earliestDueAt(): Promise<number | undefined> {
      const conn = await store.conn();
      const registry = store.keys.sweepDue();
      const tenants = await conn.call<string[]>(registry, ['ZRANGE', registry, '0', String(EARLIEST_PROBE - 1)], true);
      const heads = await Promise.all(tenants.map((t) => conn.call(store.keys.due(t), ['ZRANGE', store.keys.due(t), '0', '0', 'WITHSCORES'], true)));
      const dues = heads.map(firstScore).filter((s): s is string => s !== undefined).map(Number);
      return dues.length > 0 ? Math.min(...dues) : undefined;
    },
    isUnavailable: redisUnavailable,
  };
}
