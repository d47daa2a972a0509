import type { ReservationQuery, ReservationSortKey } from '../types.js';

/** Sort keys map onto indexed columns; the reservation id breaks ties so keyset pages are stable. */
const SORT_COLUMN: Record<ReservationSortKey, string> = {
  reservation_id: 'reservation_id',
  // Lists are always within one tenant, so sorting by tenant is sorting by id.
  tenant: 'reservation_id',
  scope_path: 'scope_path',
  status: 'status',
  reserved: 'reserved',
  created_at_ms: 'created_at_ms',
  expires_at_ms: 'expires_at_ms',
};

export function reservationListSql(q: ReservationQuery): { sql: string; params: Record<string, unknown> } {
  const where = ['tenant_id = @tenant'];
  const params: Record<string, unknown> = { tenant: q.tenantId, limit: q.limit + 1 };
  const add = (clause: string, name: string, value: unknown) => {
    if (value === undefined) return;
    where.push(clause);
    params[name] = value;
  };
  add('status = @status', 'status', q.status);
  add('idempotency_key = @idem', 'idem', q.idempotencyKey);
  for (const [level, value] of Object.entries(q.subject)) add(`${level} = @${level}`, level, value?.toLowerCase());
  add('created_at_ms >= @createdFrom', 'createdFrom', q.createdFrom);
  add('created_at_ms <= @createdTo', 'createdTo', q.createdTo);
  add('expires_at_ms >= @expiresFrom', 'expiresFrom', q.expiresFrom);
  add('expires_at_ms <= @expiresTo', 'expiresTo', q.expiresTo);
  // finalized_at_ms is NULL for ACTIVE and EXPIRED rows, so any finalized bound excludes them.
  add('finalized_at_ms >= @finalizedFrom', 'finalizedFrom', q.finalizedFrom);
  add('finalized_at_ms <= @finalizedTo', 'finalizedTo', q.finalizedTo);

  const col = SORT_COLUMN[q.sortBy];
  const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
  const cmp = q.sortDir === 'asc' ? '>' : '<';
  if (q.after) {
    params.afterValue = q.after.value;
    params.afterId = q.after.id;
    where.push(
      col === 'reservation_id'
        ? `reservation_id ${cmp} @afterId`
        : `(${col} ${cmp} @afterValue OR (${col} = @afterValue AND reservation_id ${cmp} @afterId))`,
    );
  }
  const order = col === 'reservation_id' ? `reservation_id ${dir}` : `${col} ${dir}, reservation_id ${dir}`;
  return { sql: `SELECT * FROM reservations WHERE ${where.join(' AND ')} ORDER BY ${order} LIMIT @limit`, params };
}
