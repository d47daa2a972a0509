/**
 * Listing on Redis without SCAN: every list walks a per-tenant (or, for admin lists across
 * tenants, a global) score-0 sorted set in member order, fetches the records of a batch, and
 * applies the remaining filters in TypeScript until the page is full. Reservation index members
 * are `<sort value>\0<id>` with numbers zero-padded, so member order is exactly
 * ORDER BY value, reservation_id and a keyset cursor is an exclusive lexicographic bound.
 */
import type { EventRecord } from '../../events/model.js';
import type { BudgetRecord, ReservationRecord } from '../../ledger/types.js';
import type { BudgetQuery, EventQuery, KeysetPosition, Page, ReservationQuery, ReservationSortKey } from '../types.js';
import type { RedisConn } from './conn.js';
import { pad16, SEP, tenantOfScope, type Keyspace, type ReservationIndex } from './keys.js';
import { eventsOf, type StreamEntry } from './outbox.js';
import { budgetFromHash, reservationFromHash, toHash } from './records.js';

const INDEX_OF: Record<ReservationSortKey, ReservationIndex> = {
  reservation_id: 'id',
  tenant: 'id',
  scope_path: 'scope',
  status: 'status',
  reserved: 'reserved',
  created_at_ms: 'created',
  expires_at_ms: 'expires',
};

function memberOf(index: ReservationIndex, value: string | number, id: string): string {
  switch (index) {
    case 'id':
      return id;
    case 'created':
    case 'expires':
    case 'reserved':
      return pad16(Number(value)) + SEP + id;
    default:
      return String(value) + SEP + id;
  }
}

const idOfMember = (m: string): string => m.slice(m.lastIndexOf(SEP) + 1);

/** The sort value's lexicographic bounds implied by the query's windows, when they are on the sort key. */
function windowBounds(q: ReservationQuery, index: ReservationIndex): { lo?: string; hi?: string } {
  const numeric = (from: number | undefined, to: number | undefined) => ({
    lo: from === undefined ? undefined : '[' + pad16(Math.max(0, from)),
    hi: to === undefined ? undefined : to < 0 ? '[' : '(' + pad16(to + 1),
  });
  if (index === 'created') return numeric(q.createdFrom, q.createdTo);
  if (index === 'expires') return numeric(q.expiresFrom, q.expiresTo);
  if (index === 'status' && q.status) return { lo: '[' + q.status + SEP, hi: '(' + q.status + '\u0001' };
  return {};
}

function reservationMatches(r: ReservationRecord, q: ReservationQuery): boolean {
  if (r.tenant_id !== q.tenantId) return false;
  if (q.status && r.status !== q.status) return false;
  if (q.idempotencyKey !== undefined && r.idempotency_key !== q.idempotencyKey) return false;
  for (const [level, value] of Object.entries(q.subject)) {
    if (value === undefined) continue;
    const have = (r.subject as Record<string, unknown>)[level];
    if (typeof have !== 'string' || have.toLowerCase() !== value.toLowerCase()) return false;
  }
  const within = (v: number | undefined, from: number | undefined, to: number | undefined) =>
    (from === undefined || (v !== undefined && v >= from)) && (to === undefined || (v !== undefined && v <= to));
  if (!within(r.created_at_ms, q.createdFrom, q.createdTo)) return false;
  if (!within(r.expires_at_ms, q.expiresFrom, q.expiresTo)) return false;
  if (!within(r.finalized_at_ms, q.finalizedFrom, q.finalizedTo)) return false;
  return true;
}

const BATCH = 100;

/** Walks a lexicographic index in one direction from `start`, yielding member batches. */
/**
 * Walks a sorted set in member order, in batches of `first` members and then twice as many each
 * time (up to BATCH): a page of 20 without filters reads 21 records, not a whole batch, while a
 * filter that rejects most rows still gets large batches soon.
 */
async function* walk(conn: RedisConn, key: string, asc: boolean, lo: string, hi: string, first = BATCH): AsyncGenerator<string[]> {
  let from = asc ? lo : hi;
  let size = Math.max(1, Math.min(BATCH, first));
  for (;;) {
    const args = asc ? ['ZRANGE', key, from, hi, 'BYLEX', 'LIMIT', '0', String(size)] : ['ZRANGE', key, from, lo, 'BYLEX', 'REV', 'LIMIT', '0', String(size)];
    const batch = (await conn.call<string[]>(key, args, true)) ?? [];
    if (batch.length > 0) yield batch;
    if (batch.length < size) return;
    from = '(' + batch[batch.length - 1]!;
    size = Math.min(BATCH, size * 2);
  }
}

const maxBound = (a: string | undefined, b: string | undefined): string | undefined => (a === undefined ? b : b === undefined ? a : a.slice(1) >= b.slice(1) ? a : b);
const minBound = (a: string | undefined, b: string | undefined): string | undefined => (a === undefined ? b : b === undefined ? a : a.slice(1) <= b.slice(1) ? a : b);

export async function listReservations(conn: RedisConn, keys: Keyspace, q: ReservationQuery): Promise<Page<ReservationRecord>> {
  const index = INDEX_OF[q.sortBy];
  const key = keys.reservationIndex(q.tenantId, index);
  const asc = q.sortDir === 'asc';
  const w = windowBounds(q, index);
  let lo = w.lo;
  let hi = w.hi;
  if (q.after) {
    const cursor = '(' + memberOf(index, q.after.value, q.after.id);
    if (asc) lo = maxBound(lo, cursor);
    else hi = minBound(hi, cursor);
  }
  const rows: ReservationRecord[] = [];
  for await (const batch of walk(conn, key, asc, lo ?? '-', hi ?? '+', q.limit + 1)) {
    const hashes = await Promise.all(batch.map((m) => conn.call(key, ['HGETALL', keys.reservation(q.tenantId, idOfMember(m))], true)));
    for (const reply of hashes) {
      const h = toHash(reply);
      if (!h) continue;
      const r = reservationFromHash(h);
      if (reservationMatches(r, q)) rows.push(r);
      if (rows.length > q.limit) break;
    }
    if (rows.length > q.limit) break;
  }
  return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
}

const LEVELS = ['workspace', 'app', 'workflow', 'agent', 'toolset'] as const;

function budgetMatches(b: BudgetRecord, q: BudgetQuery): boolean {
  if (q.tenantId && b.tenant_id !== q.tenantId) return false;
  if (q.scopePrefix && b.scope !== q.scopePrefix && !b.scope.startsWith(q.scopePrefix + '/')) return false;
  if (q.scopes && !q.scopes.includes(b.scope)) return false;
  if (q.unit && b.unit !== q.unit) return false;
  if (q.status && b.status !== q.status) return false;
  const segs = b.scope.split('/');
  const levels = new Map(segs.map((s) => [s.slice(0, s.indexOf(':')), s.slice(s.indexOf(':') + 1)]));
  for (const level of LEVELS) {
    const want = q.segments?.[level];
    if (want !== undefined && levels.get(level) !== want) return false;
  }
  if (q.leafLevel) {
    const leaf = segs[segs.length - 1]!;
    if (leaf.slice(0, leaf.indexOf(':')) !== q.leafLevel) return false;
  }
  return true;
}

export async function listBudgets(conn: RedisConn, keys: Keyspace, q: BudgetQuery): Promise<Page<BudgetRecord>> {
  const index = q.tenantId ? keys.tenantBudgets(q.tenantId) : keys.allBudgets();
  const map = q.tenantId ? keys.tenantLedgers(q.tenantId) : keys.allLedgers();
  const rows: BudgetRecord[] = [];
  for await (const batch of walk(conn, index, true, q.afterId ? '(' + q.afterId : '-', '+')) {
    const names = await conn.call<Array<string | null>>(map, ['HMGET', map, ...batch], true);
    const hashes = await Promise.all(
      names.map((name) => {
        if (!name) return null;
        const bar = name.indexOf('|');
        const unit = name.slice(0, bar);
        const scope = name.slice(bar + 1);
        const k = keys.budget(tenantOfScope(scope), scope, unit);
        return conn.call(k, ['HGETALL', k], true);
      }),
    );
    for (const reply of hashes) {
      const h = toHash(reply);
      if (!h) continue;
      const b = budgetFromHash(h);
      if (budgetMatches(b, q)) rows.push(b);
      if (rows.length > q.limit) break;
    }
    if (rows.length > q.limit) break;
  }
  return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
}

/** Ids of a global lexicographic index after `afterId`, in order, for the admin lists. */
export async function* walkIds(conn: RedisConn, key: string, afterId: string | undefined): AsyncGenerator<string[]> {
  yield* walk(conn, key, true, afterId ? '(' + afterId : '-', '+');
}

// ---------------------------------------------------------------- events

/** Stream ids carry the append time; an event's timestamp is its script's clock, within this slack. */
const STREAM_SLACK_MS = 2_000;

type SortValue = string | number;

function eventSortValue(e: EventRecord, key: EventQuery['sortBy']): SortValue {
  switch (key) {
    case 'timestamp':
      return e.timestamp;
    case 'scope':
      return e.scope ?? '';
    default:
      return e[key];
  }
}

const cmp = (a: SortValue, b: SortValue): number => (a < b ? -1 : a > b ? 1 : 0);

function eventOrder(q: EventQuery): (a: EventRecord, b: EventRecord) => number {
  const sign = q.sortDir === 'asc' ? 1 : -1;
  return (a, b) => sign * (cmp(eventSortValue(a, q.sortBy), eventSortValue(b, q.sortBy)) || cmp(a.event_id, b.event_id));
}

function afterCursor(e: EventRecord, q: EventQuery, after: KeysetPosition): boolean {
  const v = eventSortValue(e, q.sortBy);
  const c = cmp(v, typeof v === 'number' ? Number(after.value) : String(after.value)) || cmp(e.event_id, after.id);
  return q.sortDir === 'asc' ? c > 0 : c < 0;
}

function eventMatches(e: EventRecord, q: EventQuery): boolean {
  if (q.tenantId !== undefined && e.tenant_id !== q.tenantId) return false;
  if (q.categories && !q.categories.includes(e.category)) return false;
  if (q.eventType && e.event_type !== q.eventType) return false;
  if (q.category && e.category !== q.category) return false;
  if (q.scopePrefix && (e.scope === undefined || (e.scope !== q.scopePrefix && !e.scope.startsWith(q.scopePrefix + '/')))) return false;
  if (q.correlationId && e.correlation_id !== q.correlationId) return false;
  if (q.traceId && e.trace_id !== q.traceId) return false;
  if (q.requestId && e.request_id !== q.requestId) return false;
  if (q.from !== undefined && e.timestamp < q.from) return false;
  if (q.to !== undefined && e.timestamp > q.to) return false;
  if (q.search) {
    const s = q.search.toLowerCase();
    if (!(e.correlation_id ?? '').toLowerCase().includes(s) && !(e.scope ?? '').toLowerCase().includes(s)) return false;
  }
  if (q.after && !afterCursor(e, q, q.after)) return false;
  return true;
}

/**
 * One tenant's matching events. Timestamp-sorted queries read the stream in the requested
 * direction from the cursor and stop once `need` events are in hand and the stream has moved
 * past their timestamps; other sorts read the whole time window.
 */
async function tenantEvents(conn: RedisConn, keys: Keyspace, tenant: string, q: EventQuery, need: number): Promise<EventRecord[]> {
  const key = keys.outboxOf(tenant);
  const byTime = q.sortBy === 'timestamp';
  const asc = byTime ? q.sortDir === 'asc' : true;
  let lo = q.from !== undefined ? Math.max(0, q.from - STREAM_SLACK_MS) : 0;
  let hi = q.to !== undefined ? q.to + STREAM_SLACK_MS : Number.MAX_SAFE_INTEGER;
  if (byTime && q.after) {
    const t = Number(q.after.value);
    if (asc) lo = Math.max(lo, t - STREAM_SLACK_MS);
    else hi = Math.min(hi, t + STREAM_SLACK_MS);
  }
  const out: EventRecord[] = [];
  let start = asc ? String(lo) : String(hi);
  const end = asc ? String(hi) : String(lo);
  for (;;) {
    const entries = (await conn.call<StreamEntry[]>(key, [asc ? 'XRANGE' : 'XREVRANGE', key, start, end, 'COUNT', '200'], true)) ?? [];
    for (const entry of entries) {
      if (byTime && out.length >= need) {
        const ms = Number(entry[0].split('-')[0]);
        const edge = out[out.length - 1]!.timestamp;
        if (asc ? ms > edge + STREAM_SLACK_MS : ms < edge - STREAM_SLACK_MS) return out;
      }
      for (const e of eventsOf(tenant, entry)) if (eventMatches(e, q)) out.push(e);
    }
    if (entries.length < 200) return out;
    start = '(' + entries[entries.length - 1]![0];
  }
}

export async function listEvents(conn: RedisConn, keys: Keyspace, q: EventQuery, tenants: readonly string[]): Promise<Page<EventRecord>> {
  const order = eventOrder(q);
  const all: EventRecord[] = [];
  for (const t of tenants) {
    const found = await tenantEvents(conn, keys, t, q, q.limit + 1);
    all.push(...found);
  }
  all.sort(order);
  return { rows: all.slice(0, q.limit), hasMore: all.length > q.limit };
}

export async function getEvent(conn: RedisConn, keys: Keyspace, tenant: string, entryId: string, index: number): Promise<EventRecord | undefined> {
  const key = keys.outboxOf(tenant);
  const entries = (await conn.call<StreamEntry[]>(key, ['XRANGE', key, entryId, entryId], true)) ?? [];
  return entries[0] ? eventsOf(tenant, entries[0])[index] : undefined;
}
