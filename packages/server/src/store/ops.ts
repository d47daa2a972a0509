/**
 * What operations tooling needs from a store besides the ledger: point-in-time gauges, the
 * sweeper's backlog, and which failures mean "the store itself is down" (answered with 503,
 * never 500). Each backend provides one (SQLite: store/sqlite/ops.ts; the Redis and PostgreSQL
 * backends plug in their own next to their Store).
 */
export interface OpsSnapshot {
  /** Reservations currently ACTIVE. */
  activeReservations: number;
  /** Budgets with is_over_limit = true. */
  overLimitScopes: number;
  /** Budgets with debt > 0. */
  scopesInDebt: number;
}

export interface StoreOps {
  snapshot(): Promise<OpsSnapshot>;
  /** expires_at + grace of the earliest ACTIVE reservation; undefined when none is active. */
  earliestDueAt(): Promise<number | undefined>;
  /** True when `err` is a failure of the store (disk full, I/O error, lost connection), not of the request. */
  isUnavailable(err: unknown): boolean;
  /**
   * Proves the store accepts writes again (run by readiness after a failure, so an instance taken
   * out of rotation notices recovery without traffic). Writes nothing that lasts. Without it,
   * readiness falls back to ping().
   */
  probeWrite?(): Promise<void>;
}
