/**
 * The audit log: the record of governance activity. One entry per authenticated mutation of the
 * governance plane, per runtime call made with the admin key (acting for a tenant, such as a
 * forced release) and per failed authentication on any route, queued before the reply leaves (so
 * a client that reads the log right after a call finds its entry). Runtime calls made with a
 * tenant API key (reserve, commit, release, extend, decide, events) are not audited by default:
 * the reservations and the event stream already record them, and an audit row would add a write
 * to every one of them. AUDIT_RUNTIME_REQUESTS=true audits them too. Entries carry the actor,
 * the tenant acted for (or a sentinel), the operationId, the HTTP status, the error code, and
 * the request and trace ids.
 */
import { randomHex } from '../ids.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { AppDeps } from '../http/app.js';
import type { RouteAuth } from '../http/auth.js';
import { invalid } from '../ledger/errors.js';
import { single, windowParams, type Query } from '../runtime/query.js';
import { AUDIT_SORT_KEYS, type AuditQuery, type AuditRecord, type AuditTemplate, type Store } from '../store/types.js';
import { adminAuth, adminLimit, cursorFor, listBody, numberParam, searchParam, sortParams } from './common.js';
import { auditShape } from './shapes.js';
import { routeOf } from '../http/route-of.js';

/** Tenant id of audit rows written for the admin key when no single tenant applies (spec sentinel). */
export const ADMIN_SENTINEL = '__admin__';
/** Tenant id of audit rows for requests that failed before authentication (spec sentinel). */
export const UNAUTH_SENTINEL = '__unauth__';

const DAY_MS = 86_400_000;
export const DEFAULT_AUDIT_RETENTION_DAYS = 400;
export const DEFAULT_UNAUTH_AUDIT_RETENTION_DAYS = 30;
/** IN-list filters take at most this many values (spec maxItems). */
export const MAX_IN_LIST = 25;

/** What a handler adds to its request's audit entry. */
export interface AuditNote {
  tenantId?: string | undefined;
  resourceId?: string | undefined;
  /** The admin key acting for a tenant (dual-auth operations, bulk actions). */
  onBehalfOf?: boolean | undefined;
  metadata?: Record<string, unknown> | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    auditNote: AuditNote | null;
  }
}

/** Merges a handler's note into its request's audit entry. */
export function noteAudit(req: FastifyRequest, note: AuditNote): void {
  const prev = req.auditNote ?? {};
  req.auditNote = { ...prev, ...note, metadata: { ...(prev.metadata ?? {}), ...(note.metadata ?? {}) } };
}

/** Operation ids and resource types of the mutating routes, by "METHOD url-template". */
const OPERATIONS: Record<string, [operation: string, resourceType: string]> = {
  'POST /v1/reservations': ['createReservation', 'reservation'],
  'POST /v1/decide': ['decide', 'reservation'],
  'POST /v1/events': ['createEvent', 'reservation'],
  'POST /v1/reservations/:reservation_id/commit': ['commitReservation', 'reservation'],
  'POST /v1/reservations/:reservation_id/release': ['releaseReservation', 'reservation'],
  'POST /v1/reservations/:reservation_id/extend': ['extendReservation', 'reservation'],
  'POST /v1/admin/tenants': ['createTenant', 'tenant'],
  'PATCH /v1/admin/tenants/:tenant_id': ['updateTenant', 'tenant'],
  'POST /v1/admin/tenants/bulk-action': ['bulkActionTenants', 'tenant'],
  'POST /v1/admin/budgets': ['createBudget', 'budget'],
  'PATCH /v1/admin/budgets': ['updateBudget', 'budget'],
  'POST /v1/admin/budgets/freeze': ['freezeBudget', 'budget'],
  'POST /v1/admin/budgets/unfreeze': ['unfreezeBudget', 'budget'],
  'POST /v1/admin/budgets/fund': ['fundBudget', 'budget'],
  'POST /v1/admin/budgets/bulk-action': ['bulkActionBudgets', 'budget'],
  'POST /v1/admin/policies': ['createPolicy', 'policy'],
  'PATCH /v1/admin/policies/:policy_id': ['updatePolicy', 'policy'],
  'POST /v1/admin/api-keys': ['createApiKey', 'api_key'],
  'PATCH /v1/admin/api-keys/:key_id': ['updateApiKey', 'api_key'],
  'DELETE /v1/admin/api-keys/:key_id': ['revokeApiKey', 'api_key'],
  'POST /v1/auth/validate': ['validateApiKey', 'api_key'],
  'POST /v1/admin/webhooks': ['createWebhookSubscription', 'webhook'],
  'PATCH /v1/admin/webhooks/:id': ['updateWebhookSubscription', 'webhook'],
  'DELETE /v1/admin/webhooks/:id': ['deleteWebhookSubscription', 'webhook'],
  'POST /v1/admin/webhooks/:id/test': ['testWebhookSubscription', 'webhook'],
  'POST /v1/admin/webhooks/:id/replay': ['replayEvents', 'webhook'],
  'POST /v1/admin/webhooks/bulk-action': ['bulkActionWebhooks', 'webhook'],
  'PUT /v1/admin/config/webhook-security': ['updateWebhookSecurityConfig', 'config'],
  'POST /v1/webhooks': ['createTenantWebhook', 'webhook'],
  'PATCH /v1/webhooks/:id': ['updateTenantWebhook', 'webhook'],
  'DELETE /v1/webhooks/:id': ['deleteTenantWebhook', 'webhook'],
  'POST /v1/webhooks/:id/test': ['testTenantWebhook', 'webhook'],
};

/** Runtime-plane mutations: audited for tenant keys only with AUDIT_RUNTIME_REQUESTS. */
const RUNTIME_OPERATIONS = new Set([
  'POST /v1/reservations',
  'POST /v1/decide',
  'POST /v1/events',
  'POST /v1/reservations/:reservation_id/commit',
  'POST /v1/reservations/:reservation_id/release',
  'POST /v1/reservations/:reservation_id/extend',
]);

const ID_FIELDS = ['reservation_id', 'ledger_id', 'policy_id', 'key_id', 'subscription_id', 'tenant_id', 'id'] as const;

export interface AuditRetention {
  authenticatedMs: number;
  unauthenticatedMs: number;
}

/**
 * Retention: AUDIT_RETENTION_DAYS (default 400) for authenticated entries and
 * AUDIT_RETENTION_UNAUTHENTICATED_DAYS (default 30) for failed authentications. A config object
 * may carry auditRetentionDays / auditUnauthenticatedRetentionDays (tests, embedding).
 */
export function auditRetention(config: Config, env: Record<string, string | undefined> = process.env): AuditRetention {
  const c = config as Config & { auditRetentionDays?: number; auditUnauthenticatedRetentionDays?: number };
  const days = (name: string, fromConfig: number | undefined, fallback: number): number => {
    if (fromConfig !== undefined) return fromConfig;
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0 || n > 36_500) throw new Error(`${name} must be a number of days between 0 and 36500 (got "${raw}")`);
    return n;
  };
  return {
    authenticatedMs: days('AUDIT_RETENTION_DAYS', c.auditRetentionDays, DEFAULT_AUDIT_RETENTION_DAYS) * DAY_MS,
    unauthenticatedMs: days('AUDIT_RETENTION_UNAUTHENTICATED_DAYS', c.auditUnauthenticatedRetentionDays, DEFAULT_UNAUTH_AUDIT_RETENTION_DAYS) * DAY_MS,
  };
}

const newLogId = (): string => `log_${randomHex(12)}`;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function actorType(req: FastifyRequest): string | undefined {
  const p = req.cycles?.principal;
  if (!p) return undefined;
  if (p.kind === 'tenant') return 'api_key';
  const mode = (routeOf(req).config as Partial<RouteAuth>).auth;
  return mode === 'either' || req.auditNote?.onBehalfOf ? 'admin_on_behalf_of' : 'admin';
}

/** The request-level part of an audit row (who, from where, which request, how long it is kept). */
export function auditTemplate(req: FastifyRequest, retention: AuditRetention, now: number): AuditTemplate {
  const p = req.cycles.principal;
  const actor = actorType(req);
  const ua = req.headers['user-agent'];
  return {
    key_id: p?.kind === 'tenant' ? p.keyId : undefined,
    user_agent: typeof ua === 'string' ? ua.slice(0, 512) : undefined,
    source_ip: req.ip,
    request_id: req.cycles.requestId,
    trace_id: req.cycles.traceId,
    metadata: actor ? { actor_type: actor } : {},
    expires_at: now + (p ? retention.authenticatedMs : retention.unauthenticatedMs),
  };
}

function parsePayload(payload: unknown): Record<string, unknown> | undefined {
  if (typeof payload !== 'string' || payload.length === 0 || payload.length > 256 * 1024) return undefined;
  try {
    const v = JSON.parse(payload) as unknown;
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a finished request gets an audit row (see the top of this file). */
function audited(req: FastifyRequest, status: number, runtimeToo: boolean): boolean {
  const url = routeOf(req).url;
  // Router-level failures (no route, malformed URL) never reached the request context.
  if (!url || !url.startsWith('/v1/') || !req.cycles) return false;
  const principal = req.cycles.principal;
  if (principal === undefined && (status === 401 || status === 403)) return true;
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return false;
  return runtimeToo || principal?.kind !== 'tenant' || !RUNTIME_OPERATIONS.has(`${req.method} ${url}`);
}

/** Builds the audit row of a finished request that is audited. */
async function entryFor(req: FastifyRequest, reply: FastifyReply, payload: unknown, store: Store, retention: AuditRetention): Promise<AuditRecord> {
  const url = routeOf(req).url!;
  const status = reply.statusCode;
  const principal = req.cycles.principal;
  const now = Date.now();
  const key = `${req.method} ${url}`;
  const [operation, resourceType] = OPERATIONS[key] ?? [`${req.method}:${url}`, undefined];
  const body = parsePayload(payload);
  const note = req.auditNote ?? {};
  const params = (req.params ?? {}) as Record<string, string>;
  let resourceId = note.resourceId ?? ID_FIELDS.map((f) => params[f]).find((v) => typeof v === 'string');
  if (resourceId === undefined && status < 400 && body) resourceId = ID_FIELDS.map((f) => body[f]).find((v) => typeof v === 'string') as string | undefined;

  let tenantId: string;
  if (principal === undefined) tenantId = UNAUTH_SENTINEL;
  else if (principal.kind === 'tenant') tenantId = principal.tenantId;
  else if (status >= 400) tenantId = ADMIN_SENTINEL;
  else if (note.tenantId !== undefined) tenantId = note.tenantId;
  else if (params.reservation_id !== undefined) tenantId = (await store.getReservation(params.reservation_id))?.tenant_id ?? ADMIN_SENTINEL;
  else tenantId = ADMIN_SENTINEL;

  const template = auditTemplate(req, retention, now);
  const metadata: Record<string, unknown> = { ...(template.metadata ?? {}), ...(note.metadata ?? {}) };
  let errorCode: string | undefined;
  if (status >= 400) {
    metadata.method = req.method;
    metadata.path = req.url.split('?')[0];
    if (body && typeof body.message === 'string') metadata.error_message = body.message;
    if (body && typeof body.error === 'string') errorCode = body.error;
  }
  const request = isObject(req.body) ? req.body : {};
  const amount = [request.amount, request.estimate, request.actual, request.allocated].find(isObject);
  return {
    ...template,
    log_id: newLogId(),
    timestamp: now,
    tenant_id: tenantId,
    operation,
    resource_type: resourceType,
    resource_id: resourceId,
    status,
    error_code: errorCode,
    subject: isObject(request.subject) ? request.subject : undefined,
    action: isObject(request.action) ? request.action : undefined,
    amount,
    metadata,
  };
}

export interface GovernanceHooks {
  /** After authentication: records last_used_at of a tenant key (throttled). */
  authenticated(req: FastifyRequest): void;
  /** Before the reply is written: queues the audit entry of an audited request. */
  beforeSend(req: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<void>;
}

/**
 * last_used_at of tenant keys (throttled) and the audit entry of every audited request; the
 * server's own hooks call these (one hook per phase costs less than one per concern).
 */
export function governanceHooks(app: FastifyInstance, { store, config }: AppDeps): GovernanceHooks {
  const retention = auditRetention(config);
  app.decorateRequest('auditNote', null);

  // last_used_at: at most one write per key per minute from this process (the store also refuses
  // more often than that, across processes, and never touches a revoked key).
  const touched = new Map<string, number>();
  // The audit entry is queued before the reply is written, so it commits with the store's next
  // group (sharing its fsync with other work) ahead of any request the client can send next. It
  // is not awaited: the operation itself has already committed, and a lost audit row (a crash in
  // the instant between reply and group commit) must never turn it into a failure.
  const runtimeToo = config.auditRuntimeRequests === true;
  return {
    authenticated(req) {
      const p = req.cycles?.principal;
      if (p?.kind !== 'tenant') return;
      const now = Date.now();
      const last = touched.get(p.keyId);
      if (last !== undefined && now - last < 60_000) return;
      touched.set(p.keyId, now);
      store.touchApiKey(p.keyId, now).catch((err: unknown) => req.log.warn({ err }, 'could not record API key use'));
    },
    async beforeSend(req, reply, payload) {
      try {
        if (!audited(req, reply.statusCode, runtimeToo)) return;
        const entry = await entryFor(req, reply, payload, store, retention);
        store.appendAudit([entry]).catch((err: unknown) => req.log.error({ err }, 'could not write the audit entry'));
      } catch (err) {
        req.log.error({ err }, 'could not build the audit entry');
      }
    },
  };
}

/** IN-list parameter: comma form (spec explode=false) and repeated form, at most 25 values. */
function inList(q: Query, name: string): string[] | undefined {
  const raw = q[name];
  if (raw === undefined) return undefined;
  const values = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  if (values.length > MAX_IN_LIST) throw invalid(`${name} accepts at most ${MAX_IN_LIST} values`, { field: name });
  return values.length > 0 ? values : undefined;
}

export function registerAuditRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.get('/v1/admin/audit/logs', { config: adminAuth('admin') }, async (req) => {
    const q = req.query as Query;
    const status = numberParam(q, 'status', 100, 599, true);
    const statusMin = numberParam(q, 'status_min', 100, 599, true);
    const statusMax = numberParam(q, 'status_max', 100, 599, true);
    if (status !== undefined && (statusMin !== undefined || statusMax !== undefined)) {
      throw invalid('status cannot be combined with status_min or status_max', { field: 'status' });
    }
    if (statusMin !== undefined && statusMax !== undefined && statusMin > statusMax) {
      throw invalid('status_min must not exceed status_max', { field: 'status_min' });
    }
    const traceId = single(q, 'trace_id') || undefined;
    if (traceId !== undefined && !/^[0-9a-f]{32}$/.test(traceId)) throw invalid('trace_id must be 32 lowercase hex characters', { field: 'trace_id' });
    const [from, to] = windowParams(q, 'from', 'to');
    const query: AuditQuery = {
      tenantId: single(q, 'tenant_id') || undefined,
      keyId: single(q, 'key_id') || undefined,
      resourceId: single(q, 'resource_id') || undefined,
      traceId,
      requestId: single(q, 'request_id') || undefined,
      operations: inList(q, 'operation'),
      resourceTypes: inList(q, 'resource_type'),
      errorCodes: inList(q, 'error_code'),
      errorCodesExclude: inList(q, 'error_code_exclude'),
      status,
      statusMin,
      statusMax,
      from,
      to,
      search: searchParam(q),
      ...sortParams(q, AUDIT_SORT_KEYS, 'timestamp'),
      limit: adminLimit(q),
    };
    const { limit: _l, after: _a, ...bound } = query;
    const { hash, after } = cursorFor(q, bound);
    const page = await store.queryAudit({ ...query, after });
    return listBody('logs', page.rows.map(auditShape), page.hasMore, hash, page.next);
  });
}
