/**
 * SQL for the list endpoints. Each mirrors the embedded store's query (same filters, same
 * order, same keyset cursor), with positional parameters; sort columns are COLLATE "C" so the
 * order is the embedded store's byte order.
 */
import { invalid } from '../../ledger/errors.js';
import type { ApiKeyQuery, BudgetQuery, EventQuery, ReservationQuery, ReservationSortKey, TenantQuery } from '../types.js';

/** Collects positional parameters: `p(value)` returns its placeholder. */
export class Params {
  readonly values: unknown[] = [];
  p(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

export interface Sql {
  text: string;
  values: unknown[];
}

const whereOf = (where: string[]): string => (where.length ? `WHERE ${where.join(' AND ')}` : '');

/** Sort keys map onto indexed columns; the reservation id breaks ties so keyset pages are stable. */
const RESERVATION_SORT: Record<ReservationSortKey, { col: string; numeric: boolean }> = {
  reservation_id: { col: 'reservation_id', numeric: false },
  // Lists are always within one tenant, so sorting by tenant is sorting by id.
  tenant: { col: 'reservation_id', numeric: false },
  scope_path: { col: 'scope_path', numeric: false },
  status: { col: 'status', numeric: false },
  reserved: { col: 'reserved', numeric: true },
  created_at_ms: { col: 'created_at_ms', numeric: true },
  expires_at_ms: { col: 'expires_at_ms', numeric: true },
};

/** A cursor's sort value must fit its column; a forged one is a 400, never a database error. */
function cursorValue(value: string | number, numeric: boolean): string | number {
  if (!numeric) return String(value);
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n)) throw invalid('cursor is invalid', { field: 'cursor' });
  return n;
}

export function reservationListSql(q: ReservationQuery): Sql {
  const P = new Params();
  const where = [`tenant_id = ${P.p(q.tenantId)}`];
  const add = (col: string, op: string, value: unknown) => {
    if (value !== undefined) where.push(`${col} ${op} ${P.p(value)}`);
  };
  add('status', '=', q.status);
  add('idempotency_key', '=', q.idempotencyKey);
  for (const [level, value] of Object.entries(q.subject)) {
    if (!['workspace', 'app', 'workflow', 'agent', 'toolset'].includes(level)) continue;
    add(level, '=', value?.toLowerCase());
  }
  add('created_at_ms', '>=', q.createdFrom);
  add('created_at_ms', '<=', q.createdTo);
  add('expires_at_ms', '>=', q.expiresFrom);
  add('expires_at_ms', '<=', q.expiresTo);
  // finalized_at_ms is NULL for ACTIVE and EXPIRED rows, so any finalized bound excludes them.
  add('finalized_at_ms', '>=', q.finalizedFrom);
  add('finalized_at_ms', '<=', q.finalizedTo);

  const { col, numeric } = RESERVATION_SORT[q.sortBy];
  const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
  const cmp = q.sortDir === 'asc' ? '>' : '<';
  if (q.after) {
    const id = P.p(q.after.id);
    if (col === 'reservation_id') where.push(`reservation_id ${cmp} ${id}`);
    else {
      const v = P.p(cursorValue(q.after.value, numeric));
      where.push(`(${col} ${cmp} ${v} OR (${col} = ${v} AND reservation_id ${cmp} ${id}))`);
    }
  }
  const order = col === 'reservation_id' ? `reservation_id ${dir}` : `${col} ${dir}, reservation_id ${dir}`;
  return { text: `SELECT * FROM reservations ${whereOf(where)} ORDER BY ${order} LIMIT ${P.p(q.limit + 1)}`, values: P.values };
}

export function tenantListSql(q: TenantQuery): Sql {
  const P = new Params();
  const where: string[] = [];
  if (q.status) where.push(`status = ${P.p(q.status)}`);
  if (q.parentTenantId) where.push(`parent_tenant_id = ${P.p(q.parentTenantId)}`);
  if (q.afterId) where.push(`tenant_id > ${P.p(q.afterId)}`);
  return { text: `SELECT * FROM tenants ${whereOf(where)} ORDER BY tenant_id LIMIT ${P.p(q.limit + 1)}`, values: P.values };
}

export function apiKeyListSql(q: ApiKeyQuery): Sql {
  const P = new Params();
  const where: string[] = [];
  if (q.tenantId) where.push(`tenant_id = ${P.p(q.tenantId)}`);
  if (q.status) where.push(`status = ${P.p(q.status)}`);
  if (q.afterId) where.push(`key_id > ${P.p(q.afterId)}`);
  return { text: `SELECT * FROM api_keys ${whereOf(where)} ORDER BY key_id LIMIT ${P.p(q.limit + 1)}`, values: P.values };
}

const SCOPE_LEVELS = ['workspace', 'app', 'workflow', 'agent', 'toolset'];

export function budgetListSql(q: BudgetQuery): Sql {
  const P = new Params();
  const where: string[] = [];
  if (q.tenantId) where.push(`tenant_id = ${P.p(q.tenantId)}`);
  if (q.scopePrefix) {
    const prefix = P.p(q.scopePrefix);
    where.push(`(scope = ${prefix} OR starts_with(scope, ${prefix} || '/'))`);
  }
  if (q.scopes) where.push(q.scopes.length ? `scope = ANY(${P.p(q.scopes)}::text[])` : 'false');
  for (const [level, value] of Object.entries(q.segments ?? {})) {
    if (!SCOPE_LEVELS.includes(level)) continue;
    where.push(`lvl_${level} = ${P.p(value)}`);
  }
  if (q.leafLevel) where.push(`leaf_level = ${P.p(q.leafLevel)}`);
  if (q.unit) where.push(`unit = ${P.p(q.unit)}`);
  if (q.status) where.push(`status = ${P.p(q.status)}`);
  if (q.afterId) where.push(`ledger_id > ${P.p(q.afterId)}`);
  return { text: `SELECT * FROM budgets ${whereOf(where)} ORDER BY ledger_id LIMIT ${P.p(q.limit + 1)}`, values: P.values };
}

const EVENT_SORT = {
  timestamp: { col: 'timestamp', numeric: true },
  event_type: { col: 'event_type', numeric: false },
  category: { col: 'category', numeric: false },
  scope: { col: "coalesce(scope, '')", numeric: false },
  tenant_id: { col: 'tenant_id', numeric: false },
} as const;

export function eventListSql(q: EventQuery): Sql {
  const P = new Params();
  const where: string[] = [];
  const add = (col: string, op: string, value: unknown) => {
    if (value !== undefined && value !== '') where.push(`${col} ${op} ${P.p(value)}`);
  };
  add('tenant_id', '=', q.tenantId);
  if (q.categories) where.push(q.categories.length ? `category = ANY(${P.p([...q.categories])}::text[])` : 'false');
  add('event_type', '=', q.eventType);
  add('category', '=', q.category);
  if (q.scopePrefix) {
    const prefix = P.p(q.scopePrefix);
    where.push(`(scope = ${prefix} OR starts_with(scope, ${prefix} || '/'))`);
  }
  add('correlation_id', '=', q.correlationId);
  add('trace_id', '=', q.traceId);
  add('request_id', '=', q.requestId);
  add('timestamp', '>=', q.from);
  add('timestamp', '<=', q.to);
  if (q.search) {
    const s = P.p(q.search.toLowerCase());
    where.push(`(strpos(lower(coalesce(correlation_id, '')), ${s}) > 0 OR strpos(lower(coalesce(scope, '')), ${s}) > 0)`);
  }
  const { col, numeric } = EVENT_SORT[q.sortBy];
  const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
  const cmp = q.sortDir === 'asc' ? '>' : '<';
  if (q.after) {
    const v = P.p(cursorValue(q.after.value, numeric));
    const id = P.p(q.after.id);
    where.push(`(${col} ${cmp} ${v} OR (${col} = ${v} AND event_id ${cmp} ${id}))`);
  }
  return {
    text: `SELECT * FROM events ${whereOf(where)} ORDER BY ${col} ${dir}, event_id ${dir} LIMIT ${P.p(q.limit + 1)}`,
    values: P.values,
  };
}
