import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AppDeps } from '../http/app.js';
import type { RouteAuth } from '../http/auth.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { decodeCursor, encodeCursor, enumParam, filterHash, single, windowParams, type Query } from '../runtime/query.js';
import { EVENT_SORT_KEYS, type EventQuery } from '../store/types.js';
import { EVENT_CATEGORIES, TENANT_CATEGORIES, type EventRecord } from './model.js';

const auth = (mode: RouteAuth['auth'], permission?: string): RouteAuth => ({ auth: mode, permission, plane: 'admin' });

function listLimit(q: Query): number {
  const raw = single(q, 'limit');
  if (raw === undefined || raw === '') return 50;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw invalid('limit must be an integer', { field: 'limit' });
  return Math.min(100, Math.max(1, Math.trunc(n)));
}

function search(q: Query): string | undefined {
  const s = single(q, 'search')?.trim();
  if (!s) return undefined;
  if (s.length > 128) throw invalid('search must be at most 128 characters', { field: 'search' });
  return s;
}

/** Events are stored as their exact JSON; a page is assembled from those bytes without re-encoding. */
function sendEvents(reply: FastifyReply, rows: EventRecord[], hasMore: boolean, nextCursor: string | undefined): FastifyReply {
  let text = `{"events":[${rows.map((r) => r.body).join(',')}]`;
  if (nextCursor) text += `,"next_cursor":${JSON.stringify(nextCursor)}`;
  text += `,"has_more":${hasMore}}`;
  return reply.type('application/json; charset=utf-8').send(text);
}

function sortValue(e: EventRecord, key: EventQuery['sortBy']): string | number {
  switch (key) {
    case 'timestamp':
      return e.timestamp;
    case 'scope':
      return e.scope ?? '';
    default:
      return e[key];
  }
}

export function registerEventRoutes(app: FastifyInstance, { store }: AppDeps): void {
  async function list(reply: FastifyReply, q: Query, base: Partial<EventQuery>): Promise<FastifyReply> {
    const [from, to] = windowParams(q, 'from', 'to');
    const category = enumParam(q, 'category', EVENT_CATEGORIES);
    const query: EventQuery = {
      ...base,
      eventType: single(q, 'event_type') || undefined,
      category,
      scopePrefix: single(q, 'scope') || undefined,
      correlationId: single(q, 'correlation_id') || undefined,
      from,
      to,
      sortBy: enumParam(q, 'sort_by', EVENT_SORT_KEYS) ?? 'timestamp',
      sortDir: enumParam(q, 'sort_dir', ['asc', 'desc'] as const) ?? 'desc',
      limit: listLimit(q),
    };
    const { limit: _l, after: _a, ...bound } = query;
    const hash = filterHash(bound);
    query.after = decodeCursor(single(q, 'cursor'), hash);
    const page = await store.listEvents(query);
    const last = page.rows[page.rows.length - 1];
    const next = page.hasMore && last ? encodeCursor(hash, { value: sortValue(last, query.sortBy), id: last.event_id }) : undefined;
    return sendEvents(reply, page.rows, page.hasMore, next);
  }

  app.get('/v1/admin/events', { config: auth('admin') }, async (req, reply) => {
    const q = req.query as Query;
    return list(reply, q, {
      tenantId: single(q, 'tenant_id') || undefined,
      traceId: single(q, 'trace_id') || undefined,
      requestId: single(q, 'request_id') || undefined,
      search: search(q),
    });
  });

  app.get('/v1/admin/events/:event_id', { config: auth('admin') }, async (req, reply) => {
    const { event_id } = req.params as { event_id: string };
    const e = await store.getEvent(event_id);
    if (!e) throw new CyclesError('EVENT_NOT_FOUND', `Event ${event_id} not found`);
    return reply.type('application/json; charset=utf-8').send(e.body);
  });

  // Tenants see only their own budget, reservation and tenant events, whatever they filter on.
  app.get('/v1/events', { config: auth('tenant', 'events:read') }, async (req, reply) => {
    const p = req.cycles.principal;
    if (p?.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'A tenant API key is required');
    const q = req.query as Query;
    const category = single(q, 'category');
    if (category && !TENANT_CATEGORIES.includes(category as (typeof TENANT_CATEGORIES)[number])) {
      throw invalid(`category must be one of ${TENANT_CATEGORIES.join(', ')} for tenant keys`, { field: 'category' });
    }
    return list(reply, q, { tenantId: p.tenantId, categories: TENANT_CATEGORIES });
  });
}
