/** SQLite side of the event outbox: reads for the events API. */
import type { EventRecord } from '../../events/model.js';
import type { EventQuery } from '../types.js';

type Row = Record<string, unknown>;

const SORT_COLUMN = { timestamp: 'timestamp', event_type: 'event_type', category: 'category', scope: 'scope', tenant_id: 'tenant_id' } as const;

export function eventFromRow(r: Row): EventRecord {
  return {
    event_id: r.event_id as string,
    event_type: r.event_type as string,
    category: r.category as string,
    timestamp: r.timestamp as number,
    tenant_id: r.tenant_id as string,
    scope: (r.scope as string | null) ?? undefined,
    correlation_id: (r.correlation_id as string | null) ?? undefined,
    request_id: (r.request_id as string | null) ?? undefined,
    trace_id: (r.trace_id as string | null) ?? undefined,
    trace_flags: (r.trace_flags as string | null) ?? undefined,
    body: r.body as string,
  };
}

export function eventListSql(q: EventQuery): { sql: string; params: Row } {
  const where: string[] = [];
  const params: Row = { limit: q.limit + 1 };
  const add = (clause: string, name: string, value: unknown) => {
    if (value === undefined || value === '') return;
    where.push(clause);
    params[name] = value;
  };
  add('tenant_id = @tenant', 'tenant', q.tenantId);
  if (q.categories) {
    q.categories.forEach((c, i) => (params[`cat${i}`] = c));
    where.push(q.categories.length ? `category IN (${q.categories.map((_, i) => `@cat${i}`).join(',')})` : '0');
  }
  add('event_type = @type', 'type', q.eventType);
  add('category = @category', 'category', q.category);
  if (q.scopePrefix) {
    where.push("(scope = @prefix OR substr(scope, 1, length(@prefix) + 1) = @prefix || '/')");
    params.prefix = q.scopePrefix;
  }
  add('correlation_id = @corr', 'corr', q.correlationId);
  add('trace_id = @trace', 'trace', q.traceId);
  add('request_id = @req', 'req', q.requestId);
  add('timestamp >= @from', 'from', q.from);
  add('timestamp <= @to', 'to', q.to);
  if (q.search) {
    where.push("(instr(lower(coalesce(correlation_id, '')), @search) > 0 OR instr(lower(coalesce(scope, '')), @search) > 0)");
    params.search = q.search.toLowerCase();
  }
  const col = SORT_COLUMN[q.sortBy];
  const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
  const cmp = q.sortDir === 'asc' ? '>' : '<';
  // NULL scopes sort as '' so keyset comparisons stay total.
  const expr = col === 'scope' ? "coalesce(scope, '')" : col;
  if (q.after) {
    params.afterValue = q.after.value;
    params.afterId = q.after.id;
    where.push(`(${expr} ${cmp} @afterValue OR (${expr} = @afterValue AND event_id ${cmp} @afterId))`);
  }
  const sql = `SELECT * FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY ${expr} ${dir}, event_id ${dir} LIMIT @limit`;
  return { sql, params };
}
