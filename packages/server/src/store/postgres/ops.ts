/** The PostgreSQL store's StoreOps: gauges from indexed counts and PostgreSQL's own failure codes. */
import type { OpsSnapshot, StoreOps } from '../ops.js';
import { int } from './rows.js';
import { isUnavailable, type PostgresStore } from './store.js';

export function postgresOps(store: PostgresStore): StoreOps {
  return {
    async snapshot(): Promise<OpsSnapshot> {
      const [row] = await store.query(`SELECT
        (SELECT count(*) FROM reservations WHERE due_at_ms IS NOT NULL) AS active,
        (SELECT count(*) FROM budgets WHERE is_over_limit) AS over_limit,
        (SELECT count(*) FROM budgets WHERE debt > 0) AS in_debt`);
      return { activeReservations: int(row?.active), overLimitScopes: int(row?.over_limit), scopesInDebt: int(row?.in_debt) };
    },
    async earliestDueAt(): Promise<number | undefined> {
      const [row] = await store.query('SELECT min(due_at_ms) AS due FROM reservations WHERE due_at_ms IS NOT NULL');
      return row?.due === null || row?.due === undefined ? undefined : int(row.due);
    },
    isUnavailable,
  };
}
