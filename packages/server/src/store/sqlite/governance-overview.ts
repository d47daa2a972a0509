/** The dashboard home page (getAdminOverview), aggregated in SQL in one read. */
import type { OverviewSnapshot } from '../types.js';
import type { CascadeAccess } from './governance-cascade.js';
import type { Row } from './governance-sql.js';
import { budgetFromRow } from './rows.js';

/** Length of the top-offender and recent-event lists (spec maxItems). */
export const OVERVIEW_TOP = 10;

export function readOverview(db: CascadeAccess, now: number, windowMs: number): OverviewSnapshot {
  const tenants = db
    .stmt(
      `SELECT COUNT(*) AS total, SUM(status = 'ACTIVE') AS active, SUM(status = 'SUSPENDED') AS suspended, SUM(status = 'CLOSED') AS closed FROM tenants`,
    )
    .get() as Row;
  const budgets = db
    .stmt(
      `SELECT COUNT(*) AS total, SUM(status = 'ACTIVE') AS active, SUM(status = 'FROZEN') AS frozen, SUM(status = 'CLOSED') AS closed,
              SUM(is_over_limit = 1) AS over_limit, SUM(debt > 0) AS with_debt FROM budgets`,
    )
    .get() as Row;
  const byUnit = Object.fromEntries((db.stmt('SELECT unit, COUNT(*) AS n FROM budgets GROUP BY unit ORDER BY unit').all() as Row[]).map((r) => [r.unit, r.n]));
  const n = (v: unknown): number => (typeof v === 'number' ? v : 0);

  const overLimit = (db.stmt('SELECT * FROM budgets WHERE is_over_limit = 1 ORDER BY debt DESC, ledger_id LIMIT ?').all(OVERVIEW_TOP) as Row[]).map(budgetFromRow);
  const inDebt = (db.stmt('SELECT * FROM budgets WHERE debt > 0 ORDER BY debt DESC, ledger_id LIMIT ?').all(OVERVIEW_TOP) as Row[]).map(budgetFromRow);

  const since = now - windowMs;
  const eventsByCategory = Object.fromEntries(
    (db.stmt('SELECT category, COUNT(*) AS n FROM events WHERE timestamp >= ? GROUP BY category ORDER BY category').all(since) as Row[]).map((r) => [r.category, r.n]),
  );
  const recent = (type: string): string[] =>
    (db.stmt('SELECT body FROM events WHERE event_type = ? AND timestamp >= ? ORDER BY timestamp DESC, seq DESC LIMIT ?').all(type, since, OVERVIEW_TOP) as Row[]).map(
      (r) => r.body as string,
    );
  const denialsByReason = Object.fromEntries(
    (
      db
        .stmt(
          `SELECT json_extract(body, '$.data.reason_code') AS reason, COUNT(*) AS n FROM events
           WHERE event_type = 'reservation.denied' AND timestamp >= ? GROUP BY reason ORDER BY reason`,
        )
        .all(since) as Row[]
    )
      .filter((r) => typeof r.reason === 'string')
      .map((r) => [r.reason, r.n]),
  );

  // Webhook subscriptions live in the webhooks module's table; counted here when it exists.
  let webhooks = { total: 0, active: 0, disabled: 0, with_failures: 0 };
  let failingWebhooks: OverviewSnapshot['failingWebhooks'] = [];
  if (db.stmt("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'webhook_subscriptions'").get()) {
    const w = db
      .stmt(
        `SELECT COUNT(*) AS total, SUM(status = 'ACTIVE') AS active, SUM(status = 'DISABLED') AS disabled,
                SUM(consecutive_failures > 0) AS with_failures FROM webhook_subscriptions`,
      )
      .get() as Row;
    webhooks = { total: n(w.total), active: n(w.active), disabled: n(w.disabled), with_failures: n(w.with_failures) };
    failingWebhooks = (
      db
        .stmt(
          `SELECT subscription_id, url, consecutive_failures, last_failure_at FROM webhook_subscriptions
           WHERE consecutive_failures > 0 ORDER BY consecutive_failures DESC, subscription_id LIMIT ?`,
        )
        .all(OVERVIEW_TOP) as Row[]
    ).map((r) => ({
      subscription_id: r.subscription_id as string,
      url: r.url as string,
      consecutive_failures: r.consecutive_failures as number,
      last_failure_at: (r.last_failure_at as number | null) ?? undefined,
    }));
  }

  return {
    tenants: { total: n(tenants.total), active: n(tenants.active), suspended: n(tenants.suspended), closed: n(tenants.closed) },
    budgets: {
      total: n(budgets.total),
      active: n(budgets.active),
      frozen: n(budgets.frozen),
      closed: n(budgets.closed),
      over_limit: n(budgets.over_limit),
      with_debt: n(budgets.with_debt),
      by_unit: byUnit as Record<string, number>,
    },
    overLimit,
    inDebt,
    webhooks,
    failingWebhooks,
    eventsByCategory: eventsByCategory as Record<string, number>,
    recentDenials: recent('reservation.denied'),
    recentExpiries: recent('reservation.expired'),
    denialsByReason: denialsByReason as Record<string, number>,
  };
}
