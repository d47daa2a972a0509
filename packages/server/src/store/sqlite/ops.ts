/** The embedded store's StoreOps: gauges from indexed counts and SQLite's own failure codes. */
import type { OpsSnapshot, StoreOps } from '../ops.js';
import type { SqliteStore } from './store.js';

/**
 * Result codes that mean the database itself failed (disk full, I/O, locked beyond the busy
 * timeout, unwritable or corrupt file), as opposed to a constraint the request broke.
 */
const UNAVAILABLE = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|BUSY|LOCKED|NOMEM|CORRUPT|NOTADB|PROTOCOL)/;

export function sqliteUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as Error & { code?: unknown }).code;
  if (err.name === 'SqliteError' && typeof code === 'string') return UNAVAILABLE.test(code);
  // better-sqlite3 raises a TypeError once the connection is closed.
  return err instanceof TypeError && /database connection is not open/.test(err.message);
}

export function sqliteOps(store: SqliteStore): StoreOps {
  return {
    async snapshot(): Promise<OpsSnapshot> {
      const n = (sql: string) => (store.stmt(sql).get() as { n: number }).n;
      return {
        activeReservations: n('SELECT COUNT(*) AS n FROM reservations WHERE due_at_ms IS NOT NULL'),
        overLimitScopes: n('SELECT COUNT(*) AS n FROM budgets WHERE is_over_limit = 1'),
        scopesInDebt: n('SELECT COUNT(*) AS n FROM budgets WHERE debt > 0'),
      };
    },
    async earliestDueAt(): Promise<number | undefined> {
      const row = store.stmt('SELECT MIN(due_at_ms) AS due FROM reservations WHERE due_at_ms IS NOT NULL').get() as { due: number | null };
      return row.due ?? undefined;
    },
    isUnavailable: sqliteUnavailable,
    async probeWrite(): Promise<void> {
      // A value larger than a page must allocate new pages, as real writes do; then roll back.
      // Runs between commit groups (better-sqlite3 is synchronous), so it never interleaves with one.
      store.stmt('BEGIN IMMEDIATE').run();
      try {
        store.stmt('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run('write_probe', 'p'.repeat(64 * 1024));
      } finally {
        try {
          store.stmt('ROLLBACK').run();
        } catch {
          // SQLite already rolled back (disk full, I/O error).
        }
      }
    },
  };
}
