import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { CyclesError } from '../ledger/errors.js';
import { metricsContentType, registry, reservationsActive, scopesInDebt, scopesOverLimit } from '../ops/metrics.js';
import type { StoreOps } from '../store/ops.js';
import { sameDigest, sha256Hex } from '../security/keys.js';

/**
 * Prometheus metrics at /metrics and the reference's /actuator/prometheus. With METRICS_AUTH=admin
 * the scraper presents the admin key, as X-Admin-API-Key or as `Authorization: Bearer <key>`
 * (what Prometheus' `authorization` scrape setting sends). Store gauges are read at scrape time.
 */
export function registerMetricsRoutes(app: FastifyInstance, config: Config, ops: StoreOps): void {
  const presented = (headers: Record<string, string | string[] | undefined>): string | undefined => {
    const admin = headers['x-admin-api-key'];
    if (typeof admin === 'string' && admin.trim() !== '') return admin.trim();
    const auth = headers['authorization'];
    const m = typeof auth === 'string' ? /^Bearer\s+(.+)$/i.exec(auth.trim()) : null;
    return m?.[1];
  };
  const handler = async (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
    if (config.metricsAuth === 'admin') {
      const key = presented(req.headers);
      if (key === undefined) throw new CyclesError('UNAUTHORIZED', 'Metrics require the admin key (X-Admin-API-Key or Authorization: Bearer)');
      if (!sameDigest(sha256Hex(key), app.cyclesSecrets.adminKeyHash)) throw new CyclesError('UNAUTHORIZED', 'Invalid admin API key');
    }
    try {
      const s = await ops.snapshot();
      scopesOverLimit.set(s.overLimitScopes);
      scopesInDebt.set(s.scopesInDebt);
      reservationsActive.set(s.activeReservations);
    } catch (err) {
      // The store gauges keep their last values; cycles_store_up tells the store is down.
      req.log.warn({ err }, 'metrics: store gauges unavailable');
    }
    return reply.type(metricsContentType).send(await registry.metrics());
  };
  const routeConfig = { auth: 'public' as const, ops: true, throttleAuth: config.metricsAuth === 'admin' };
  for (const path of ['/metrics', '/actuator/prometheus']) app.get(path, { config: routeConfig }, handler);
}
