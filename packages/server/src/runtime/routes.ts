import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import type { OpContext } from '../events/model.js';
import type { RouteAuth } from '../http/auth.js';
import { noteReplay } from '../ops/observe.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import type { OpResult } from '../ledger/ops/shared.js';
import { balanceOf, requestHash } from '../ledger/ops/shared.js';
import { deriveScopes, SCOPE_LEVELS, type Subject } from '../ledger/scopes.js';
import { RESERVATION_STATUSES, type Action } from '../ledger/types.js';
import { RESERVATION_SORT_KEYS, type BudgetQuery, type ReservationQuery } from '../store/types.js';
import { decodeCursor, encodeCursor, enumParam, filterHash, limitParam, single, windowParams, type Query } from './query.js';
import { parseInclude, reservationView } from './reservations.js';
import { commitBody, decideBody, eventBody, extendBody, releaseBody, reservationIdParams, reserveBody } from './schemas.js';

const auth = (mode: RouteAuth['auth'], permission?: string): RouteAuth => ({ auth: mode, permission, plane: 'runtime' });

export function sendOp(reply: FastifyReply, result: OpResult): FastifyReply {
  noteReplay(reply.request, result.replayed);
  return reply.code(result.status).type('application/json; charset=utf-8').send(result.body);
}

/** The optional X-Idempotency-Key header must equal the body's key when both are present. */
function checkIdempotencyHeader(req: FastifyRequest, bodyKey: string): void {
  const header = req.headers['x-idempotency-key'];
  if (header !== undefined && header !== bodyKey) {
    throw invalid('X-Idempotency-Key header does not match body idempotency_key', { field: 'idempotency_key' });
  }
}

function effectiveTenant(req: FastifyRequest): string {
  const p = req.cycles.principal;
  if (p?.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'A tenant API key is required');
  return p.tenantId;
}

/** subject.tenant is a budgeting dimension that must name the caller's own tenant. */
function checkSubjectTenant(subject: Subject, tenantId: string): void {
  if (subject.tenant !== undefined && subject.tenant.toLowerCase() !== tenantId) {
    throw new CyclesError('FORBIDDEN', `subject.tenant "${subject.tenant}" does not match the API key's tenant`);
  }
}

/** Stored actions drop v0.1.26 policy keys: this server ignores them and reads must match the v0.1.25 schema. */
function storedAction(action: Action): Action {
  if (!('policy_keys' in action)) return action;
  const { policy_keys: _ignored, ...rest } = action;
  return rest as Action;
}

export function registerRuntimeRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.post('/v1/reservations', { schema: { body: reserveBody }, config: auth('tenant', 'reservations:create') }, async (req, reply) => {
    const body = req.body as Parameters<typeof store.reserve>[0]['request'];
    checkIdempotencyHeader(req, body.idempotency_key);
    const tenantId = effectiveTenant(req);
    checkSubjectTenant(body.subject, tenantId);
    const scopes = deriveScopes(body.subject);
    const result = await store.reserve({
      ctx: opContext(req),
      tenantId,
      request: { ...body, action: storedAction(body.action) },
      scopes,
      hash: requestHash('reserve', body),
    });
    return sendOp(reply, result);
  });

  app.post('/v1/decide', { schema: { body: decideBody }, config: auth('tenant', 'reservations:create') }, async (req, reply) => {
    const body = req.body as Parameters<typeof store.decide>[0]['request'];
    checkIdempotencyHeader(req, body.idempotency_key);
    const tenantId = effectiveTenant(req);
    checkSubjectTenant(body.subject, tenantId);
    const result = await store.decide({ ctx: opContext(req), tenantId, request: body, scopes: deriveScopes(body.subject), hash: requestHash('decide', body) });
    return sendOp(reply, result);
  });

  app.post('/v1/events', { schema: { body: eventBody }, config: auth('tenant', 'reservations:commit') }, async (req, reply) => {
    const body = req.body as Parameters<typeof store.createEvent>[0]['request'];
    checkIdempotencyHeader(req, body.idempotency_key);
    const tenantId = effectiveTenant(req);
    checkSubjectTenant(body.subject, tenantId);
    const result = await store.createEvent({
      ctx: opContext(req),
      tenantId,
      request: { ...body, action: storedAction(body.action) },
      scopes: deriveScopes(body.subject),
      hash: requestHash('event', body),
    });
    return sendOp(reply, result);
  });

  type IdParams = { reservation_id: string };
  const perReservation = <R extends { idempotency_key: string }>(
    path: string,
    schema: object,
    mode: RouteAuth['auth'],
    permission: string,
    endpoint: 'commit' | 'release' | 'extend',
    run: (cmd: { ctx: OpContext; reservationId: string; callerTenant: string | undefined; request: R; hash: string }) => Promise<OpResult>,
  ) =>
    app.post(path, { schema: { body: schema, params: reservationIdParams }, config: auth(mode, permission) }, async (req, reply) => {
      const body = req.body as R;
      checkIdempotencyHeader(req, body.idempotency_key);
      const { reservation_id } = req.params as IdParams;
      const p = req.cycles.principal;
      const callerTenant = p?.kind === 'tenant' ? p.tenantId : undefined;
      return sendOp(reply, await run({ ctx: opContext(req, callerTenant === undefined), reservationId: reservation_id, callerTenant, request: body, hash: requestHash(endpoint, body, reservation_id) }));
    });

  perReservation('/v1/reservations/:reservation_id/commit', commitBody, 'tenant', 'reservations:commit', 'commit', (c) => store.commit(c as never));
  perReservation('/v1/reservations/:reservation_id/release', releaseBody, 'either', 'reservations:release', 'release', (c) => store.release(c as never));
  perReservation('/v1/reservations/:reservation_id/extend', extendBody, 'tenant', 'reservations:extend', 'extend', (c) => store.extend(c as never));

  app.get('/v1/reservations/:reservation_id', { schema: { params: reservationIdParams }, config: auth('either', 'reservations:list') }, async (req) => {
    const { reservation_id } = req.params as IdParams;
    const r = await store.getReservation(reservation_id);
    if (!r) throw new CyclesError('NOT_FOUND', `Reservation ${reservation_id} not found`);
    const p = req.cycles.principal;
    if (p?.kind === 'tenant' && p.tenantId !== r.tenant_id) throw new CyclesError('FORBIDDEN', `Reservation ${reservation_id} belongs to another tenant`);
    if (r.status === 'EXPIRED') throw new CyclesError('RESERVATION_EXPIRED', `Reservation ${reservation_id} has expired`, { reservation_id });
    return reservationView(r, 'all');
  });

  app.get('/v1/reservations', { config: auth('either', 'reservations:list') }, async (req) => {
    const q = req.query as Query;
    const p = req.cycles.principal;
    const tenantParam = single(q, 'tenant');
    let tenantId: string;
    if (p?.kind === 'tenant') {
      if (tenantParam !== undefined && tenantParam !== '' && tenantParam.toLowerCase() !== p.tenantId) {
        throw new CyclesError('FORBIDDEN', 'tenant query parameter does not match the API key\'s tenant');
      }
      tenantId = p.tenantId;
    } else {
      if (tenantParam === undefined || tenantParam === '') throw invalid('tenant query parameter is required when using admin key authentication', { field: 'tenant' });
      tenantId = tenantParam.toLowerCase();
    }
    const limit = limitParam(q, 200);
    const sortBy = enumParam(q, 'sort_by', RESERVATION_SORT_KEYS) ?? 'created_at_ms';
    const sortDir = enumParam(q, 'sort_dir', ['asc', 'desc'] as const) ?? 'desc';
    const subject: ReservationQuery['subject'] = {};
    for (const level of SCOPE_LEVELS) {
      if (level === 'tenant') continue;
      const v = single(q, level);
      if (v !== undefined && v !== '') subject[level] = v;
    }
    const [createdFrom, createdTo] = windowParams(q, 'from', 'to');
    const [expiresFrom, expiresTo] = windowParams(q, 'expires_from', 'expires_to');
    const [finalizedFrom, finalizedTo] = windowParams(q, 'finalized_from', 'finalized_to');
    const query: ReservationQuery = {
      tenantId,
      status: enumParam(q, 'status', RESERVATION_STATUSES),
      idempotencyKey: single(q, 'idempotency_key') || undefined,
      subject,
      createdFrom,
      createdTo,
      expiresFrom,
      expiresTo,
      finalizedFrom,
      finalizedTo,
      sortBy,
      sortDir,
      limit,
    };
    const { limit: _l, after: _a, ...bound } = query;
    const hash = filterHash(bound);
    query.after = decodeCursor(single(q, 'cursor'), hash);
    const page = await store.listReservations(query);
    const projection = parseInclude(single(q, 'include'));
    const out: Record<string, unknown> = { reservations: page.rows.map((r) => reservationView(r, projection)) };
    const last = page.rows[page.rows.length - 1];
    if (page.hasMore && last) {
      const value = sortBy === 'reservation_id' || sortBy === 'tenant' ? last.reservation_id : sortBy === 'reserved' ? last.reserved : last[sortBy];
      out.next_cursor = encodeCursor(hash, { value, id: last.reservation_id });
    }
    out.has_more = page.hasMore;
    return out;
  });

  app.get('/v1/balances', { config: auth('tenant', 'balances:read') }, async (req) => {
    const q = req.query as Query;
    const tenantId = effectiveTenant(req);
    const subject: Subject = {};
    for (const level of SCOPE_LEVELS) {
      const v = single(q, level);
      if (v !== undefined && v !== '') subject[level] = v;
    }
    if (Object.keys(subject).length === 0) {
      throw invalid('At least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required', { field: 'tenant' });
    }
    checkSubjectTenant(subject, tenantId);
    const limit = limitParam(q, 200);
    const includeChildren = single(q, 'include_children') === 'true';
    const segments: NonNullable<BudgetQuery['segments']> = {};
    let deepest = 'tenant';
    for (const level of SCOPE_LEVELS) {
      const v = subject[level];
      if (v === undefined) continue;
      if (!/^[a-zA-Z0-9_.-]+$/.test(v)) throw invalid(`${level} must match ^[a-zA-Z0-9_.-]+$`, { field: level });
      if (level !== 'tenant') segments[level] = v.toLowerCase();
      deepest = level;
    }
    const hash = filterHash({ tenantId, segments, includeChildren, deepest });
    const after = decodeCursor(single(q, 'cursor'), hash);
    const page = await store.listBudgets({
      tenantId,
      segments,
      leafLevel: includeChildren ? undefined : deepest,
      afterId: after?.id,
      limit,
    });
    const out: Record<string, unknown> = { balances: page.rows.map(balanceOf) };
    const last = page.rows[page.rows.length - 1];
    if (page.hasMore && last) out.next_cursor = encodeCursor(hash, { value: last.ledger_id, id: last.ledger_id });
    out.has_more = page.hasMore;
    return out;
  });
}
