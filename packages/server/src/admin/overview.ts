/** getAdminOverview: the dashboard home page in one request. */
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../http/app.js';
import { remainingOf } from '../ledger/types.js';
import { adminAuth } from './common.js';
import { iso } from './shapes.js';

/** The window of event_counts, recent_denials and recent_expiries (spec: one hour). */
export const OVERVIEW_WINDOW_SECONDS = 3600;

export function registerOverviewRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.get('/v1/admin/overview', { config: adminAuth('admin') }, async (_req, reply) => {
    const now = Date.now();
    const o = await store.overview(now, OVERVIEW_WINDOW_SECONDS * 1000);
    const body: Record<string, unknown> = {
      as_of: iso(now),
      event_window_seconds: OVERVIEW_WINDOW_SECONDS,
      tenant_counts: o.tenants,
      budget_counts: o.budgets,
      over_limit_scopes: o.overLimit.map((b) => ({ scope: b.scope, unit: b.unit, allocated: b.allocated, remaining: remainingOf(b), debt: b.debt })),
      debt_scopes: o.inDebt.map((b) => ({ scope: b.scope, unit: b.unit, debt: b.debt, overdraft_limit: b.overdraft_limit })),
      webhook_counts: o.webhooks,
      failing_webhooks: o.failingWebhooks.map((w) => ({
        subscription_id: w.subscription_id,
        url: w.url,
        consecutive_failures: w.consecutive_failures,
        ...(w.last_failure_at !== undefined ? { last_failure_at: iso(w.last_failure_at) } : {}),
      })),
      event_counts: { total_recent: Object.values(o.eventsByCategory).reduce((a, b) => a + b, 0), by_category: o.eventsByCategory },
      recent_denials_by_reason: o.denialsByReason,
    };
    // Recent events are embedded as their stored JSON, byte for byte what the events API returns.
    const text = JSON.stringify(body).slice(0, -1) + `,"recent_denials":[${o.recentDenials.join(',')}],"recent_expiries":[${o.recentExpiries.join(',')}]}`;
    return reply.type('application/json; charset=utf-8').send(text);
  });
}
