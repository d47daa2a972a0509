/** The dashboard home page (getAdminOverview), aggregated in SQL, as on the embedded store. */
import type { OverviewSnapshot } from '../types.js';
import { budgetFromRow, int, type Row } from './rows.js';
import type { PostgresStore } from './store.js';

/** Length of the top-offender and recent-event lists (spec maxItems). */
export const OVERVIEW_TOP = 10;

const counts = (rows: Row[], key: string): Record<string, number> => Object.fromEntries(rows.filter((r) => typeof r[key] === 'string').map((r) => [r[key], int(r.n)]));

export async function readOverview(s: PostgresStore, now: number, windowMs: number): Promise<OverviewSnapshot> {
  const since = now - windowMs;
  const [tenants] = await s.query(`SELECT count(*) AS total, count(*) FILTER (WHERE status = 'ACTIVE') AS active,
      count(*) FILTER (WHERE status = 'SUSPENDED') AS suspended, count(*) FILTER (WHERE status = 'CLOSED') AS closed FROM tenants`);
  const [budgets] = await s.query(`SELECT count(*) AS total, count(*) FILTER (WHERE status = 'ACTIVE') AS active,
      count(*) FILTER (WHERE status = 'FROZEN') AS frozen, count(*) FILTER (WHERE status = 'CLOSED') AS closed,
      count(*) FILTER (WHERE is_over_limit) AS over_limit, count(*) FILTER (WHERE debt > 0) AS with_debt FROM budgets`);
  const byUnit = counts(await s.query('SELECT unit, count(*) AS n FROM budgets GROUP BY unit ORDER BY unit'), 'unit');
  const overLimit = (await s.query('SELECT * FROM budgets WHERE is_over_limit ORDER BY debt DESC, ledger_id LIMIT $1', [OVERVIEW_TOP])).map(budgetFromRow);
  const inDebt = (await s.query('SELECT * FROM budgets WHERE debt > 0 ORDER BY debt DESC, ledger_id LIMIT $1', [OVERVIEW_TOP])).map(budgetFromRow);
  const eventsByCategory = counts(await s.query('SELECT category, count(*) AS n FROM events WHERE timestamp >= $1 GROUP BY category ORDER BY category', [since]), 'category');
  const recent = async (type: string): Promise<string[]> =>
    (await s.query('SELECT body FROM events WHERE event_type = $1 AND timestamp >= $2 ORDER BY timestamp DESC, seq DESC LIMIT $3', [type, since, OVERVIEW_TOP])).map(
      (r) => r.body as string,
    );
  const denialsByReason = counts(
    await s.query(
      `SELECT body::json -> 'data' ->> 'reason_code' AS reason, count(*) AS n FROM events
       WHERE event_type = 'reservation.denied' AND timestamp >= $1 GROUP BY reason ORDER BY reason`,
      [since],
    ),
    'reason',
  );
  const [w] = await s.query(`SELECT count(*) AS total, count(*) FILTER (WHERE status = 'ACTIVE') AS active,
      count(*) FILTER (WHERE status = 'DISABLED') AS disabled, count(*) FILTER (WHERE consecutive_failures > 0) AS with_failures
      FROM webhook_subscriptions`);
  const failingWebhooks = (
    await s.query(
      `SELECT subscription_id, url, consecutive_failures, last_failure_at FROM webhook_subscriptions
       WHERE consecutive_failures > 0 ORDER BY consecutive_failures DESC, subscription_id LIMIT $1`,
      [OVERVIEW_TOP],
    )
  ).map((r) => ({
    subscription_id: r.subscription_id as string,
    url: r.url as string,
    consecutive_failures: int(r.consecutive_failures),
    last_failure_at: r.last_failure_at === null || r.last_failure_at === undefined ? undefined : int(r.last_failure_at),
  }));
  const n = (r: Row | undefined, k: string) => int(r?.[k] ?? 0);
  return {
    tenants: { total: n(tenants, 'total'), active: n(tenants, 'active'), suspended: n(tenants, 'suspended'), closed: n(tenants, 'closed') },
    budgets: {
      total: n(budgets, 'total'),
      active: n(budgets, 'active'),
      frozen: n(budgets, 'frozen'),
      closed: n(budgets, 'closed'),
      over_limit: n(budgets, 'over_limit'),
      with_debt: n(budgets, 'with_debt'),
      by_unit: byUnit,
    },
    overLimit,
    inDebt,
    webhooks: { total: n(w, 'total'), active: n(w, 'active'), disabled: n(w, 'disabled'), with_failures: n(w, 'with_failures') },
    failingWebhooks,
    eventsByCategory,
    recentDenials: await recent('reservation.denied'),
    recentExpiries: await recent('reservation.expired'),
    denialsByReason,
  };
}
