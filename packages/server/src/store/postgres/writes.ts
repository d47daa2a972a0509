/**
 * Flushing an operation's buffered writes: one statement, whatever the operation wrote.
 * Each kind of write is a data-modifying CTE over `json_populate_recordset(NULL::table, $n)`,
 * so a sweep that expires 500 reservations costs the same single round trip as one commit.
 * JSON numbers are parsed exactly into BIGINT by PostgreSQL. The statement fails when a part
 * touched other than the expected number of rows (see the schema's cycles_expect_rows).
 */
import { budgetToRow, eventToRow, idempotencyToRow, reservationToRow, type Row } from './rows.js';
import type { Writes } from './view.js';

// Column lists come from the row mappers, so the SQL always names exactly what they produce.
const SAMPLE_RESERVATION = reservationToRow({
  reservation_id: '', tenant_id: '', status: 'ACTIVE', subject: {}, action: { kind: '', name: '' }, unit: 'TOKENS', reserved: 0,
  scope_path: '', affected_scopes: [], budgeted_scopes: [], overage_policy: 'REJECT', idempotency_key: '', created_at_ms: 0,
  expires_at_ms: 0, ttl_ms: 0, grace_period_ms: 0, max_extensions: 0, extension_count: 0,
});
const RESERVATION_COLS = Object.keys(SAMPLE_RESERVATION);
const IDEMPOTENCY_COLS = Object.keys(idempotencyToRow({ tenant_id: '', endpoint: '', key: '', request_hash: '', status: 0, body: '', created_at: 0, expires_at: 0 }));
const EVENT_COLS = Object.keys(eventToRow({ event_id: '', event_type: '', category: '', timestamp: 0, tenant_id: '', body: '' }));
/** What a ledger operation may change on a budget row (never its identity or creation data). */
const BUDGET_MUTABLE = ['allocated', 'reserved', 'spent', 'debt', 'overdraft_limit', 'is_over_limit', 'status', 'commit_overage_policy', 'metadata', 'updated_at'];

const list = (cols: readonly string[], prefix = ''): string => cols.map((c) => prefix + c).join(', ');
const setFrom = (cols: readonly string[]): string => cols.map((c) => `${c} = v.${c}`).join(', ');

type Part = 'insR' | 'updR' | 'updB' | 'putI' | 'insE';

function partSql(part: Part, param: string, nowParam: string): string {
  switch (part) {
    case 'insR':
      return `ins_r AS (INSERT INTO reservations (${list(RESERVATION_COLS)})
        SELECT ${list(RESERVATION_COLS)} FROM json_populate_recordset(NULL::reservations, ${param}::json) RETURNING 1)`;
    case 'updR': {
      const cols = RESERVATION_COLS.filter((c) => c !== 'reservation_id');
      return `upd_r AS (UPDATE reservations t SET ${setFrom(cols)}
        FROM json_populate_recordset(NULL::reservations, ${param}::json) v WHERE t.reservation_id = v.reservation_id RETURNING 1)`;
    }
    case 'updB':
      return `upd_b AS (UPDATE budgets t SET ${setFrom(BUDGET_MUTABLE)}
        FROM json_populate_recordset(NULL::budgets, ${param}::json) v WHERE t.scope = v.scope AND t.unit = v.unit RETURNING 1)`;
    case 'putI': {
      // A live record is never replaced: losing that race means another request with this key
      // committed first, and the caller retries the whole operation (which then replays it).
      const cols = IDEMPOTENCY_COLS.filter((c) => !['tenant_id', 'endpoint', 'key'].includes(c));
      return `put_i AS (INSERT INTO idempotency (${list(IDEMPOTENCY_COLS)})
        SELECT ${list(IDEMPOTENCY_COLS)} FROM json_populate_recordset(NULL::idempotency, ${param}::json)
        ON CONFLICT (tenant_id, endpoint, key) DO UPDATE SET ${cols.map((c) => `${c} = EXCLUDED.${c}`).join(', ')}
        WHERE idempotency.expires_at <= ${nowParam} RETURNING 1)`;
    }
    case 'insE':
      return `ins_e AS (INSERT INTO events (${list(EVENT_COLS)})
        SELECT ${list(EVENT_COLS)} FROM json_populate_recordset(NULL::events, ${param}::json) RETURNING 1)`;
  }
}

export const COUNT_NAME: Record<Part, string> = { insR: 'ins_r', updR: 'upd_r', updB: 'upd_b', putI: 'put_i', insE: 'ins_e' };

export interface WriteStatement {
  text: string;
  values: unknown[];
}

/** Builds the single statement that applies `w`, or undefined when there is nothing to write. */
export function writeStatement(w: Writes, now: number): WriteStatement | undefined {
  const inserts: Row[] = [];
  const updates: Row[] = [];
  for (const { record, isNew } of w.reservations.values()) (isNew ? inserts : updates).push(reservationToRow(record));
  const parts: Array<[Part, Row[]]> = [
    ['insR', inserts],
    ['updR', updates],
    ['updB', [...w.budgets.values()].map(budgetToRow)],
    ['putI', [...w.idempotency.values()].map(idempotencyToRow)],
    ['insE', w.events.map(eventToRow)],
  ];
  const used = parts.filter(([, rows]) => rows.length > 0);
  if (used.length === 0) return undefined;
  const values: unknown[] = [now];
  const ctes = used.map(([part, rows]) => {
    values.push(JSON.stringify(rows));
    return partSql(part, `$${values.length}`, '$1::bigint');
  });
  // Each part's row count is checked on the server (cycles_expect_rows, schema v2), so a write that
  // went wrong fails the transaction before the COMMIT that follows it in the same network write.
  const counts = used.map(([part, rows]) => {
    values.push(rows.length);
    const name = COUNT_NAME[part];
    return `cycles_expect_rows('${name}', (SELECT count(*) FROM ${name}), $${values.length}::bigint) AS ${name}`;
  });
  return {
    // $1 (now) is always referenced, so its type is known even when no part uses it.
    text: `WITH ${ctes.join(',\n')}\nSELECT $1::bigint AS now, ${counts.join(', ')}`,
    values,
  };
}

