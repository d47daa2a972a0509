import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import type { RouteAuth } from '../http/auth.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { decodeCursor, encodeCursor, enumParam, filterHash, single, windowParams, type Query } from '../runtime/query.js';
import { WEBHOOK_SORT_KEYS, type Store } from '../store/types.js';
import { deliveryHeaders } from './dispatcher.js';
import { subscriptionMatches } from './matching.js';
import { EVENT_CATEGORIES, SOURCE, SYSTEM_TENANT, TENANT_CATEGORIES, isKnownEventType, type EventDraft } from './model.js';
import { newSigningSecret, type SecretBox } from './secrets.js';
import { send } from './sender.js';
import { validateWebhookUrl } from './ssrf.js';
import { DEFAULT_RETRY_POLICY, newSubscriptionId, type DeliveryRecord, type WebhookRecord } from './types.js';
import { replayBody, webhookCreateBody, webhookUpdateBody } from './webhook-schemas.js';
import { webhookSecurityBody, type WebhookSecurity, type WebhookSecurityConfig } from './webhook-security.js';

export interface WebhookDeps {
  box: SecretBox;
  /** The webhook security configuration (network policy for URLs and sends). */
  security: WebhookSecurity;
  /** Timeout of the synchronous /test probe. */
  testTimeoutMs: number;
  /** Nudges the dispatcher after a replay queues work. */
  kick?: () => void;
}

const MASK = '********';
const REPLAY_SCAN_LIMIT = 20_000;
const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/** The subscription as the API shows it: secret never, header values masked. */
export function webhookShape(w: WebhookRecord): Record<string, unknown> {
  const out: Record<string, unknown> = { subscription_id: w.subscription_id, tenant_id: w.tenant_id };
  if (w.name !== undefined) out.name = w.name;
  if (w.description !== undefined) out.description = w.description;
  out.url = w.url;
  out.event_types = w.event_types;
  out.event_categories = w.event_categories;
  if (w.scope_filter !== undefined) out.scope_filter = w.scope_filter;
  if (w.thresholds !== undefined) out.thresholds = w.thresholds;
  if (w.header_names.length) out.headers = Object.fromEntries(w.header_names.map((h) => [h, MASK]));
  out.status = w.status;
  out.retry_policy = w.retry_policy;
  out.disable_after_failures = w.disable_after_failures;
  out.consecutive_failures = w.consecutive_failures;
  out.created_at = iso(w.created_at);
  for (const k of ['updated_at', 'last_triggered_at', 'last_success_at', 'last_failure_at'] as const) if (w[k] !== undefined) out[k] = iso(w[k]);
  if (w.metadata !== undefined) out.metadata = w.metadata;
  return out;
}

export function deliveryShape(d: DeliveryRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {
    delivery_id: d.delivery_id,
    subscription_id: d.subscription_id,
    event_id: d.event_id,
    event_type: d.event_type,
    status: d.status,
    attempted_at: iso(d.attempted_at),
  };
  if (d.completed_at !== undefined) out.completed_at = iso(d.completed_at);
  out.attempts = d.attempts;
  if (d.response_status !== undefined) out.response_status = d.response_status;
  if (d.response_time_ms !== undefined) out.response_time_ms = d.response_time_ms;
  if (d.error_message !== undefined) out.error_message = d.error_message;
  if (d.status === 'RETRYING') out.next_retry_at = iso(d.next_attempt_at);
  if (d.trace_id !== undefined) out.trace_id = d.trace_id;
  if (d.trace_flags !== undefined) out.trace_flags = d.trace_flags;
  if (d.traceparent_inbound_valid !== undefined) out.traceparent_inbound_valid = d.traceparent_inbound_valid;
  return out;
}

/**
 * The two subscription invariants, on the effective (stored + requested) selectors:
 * 1. at least one of event_types / event_categories is non-empty (no match-all);
 * 2. a tenant-owned subscription selects only tenant-accessible types and categories.
 */
export function checkSelectors(owner: string, types: readonly string[], categories: readonly string[]): void {
  for (const t of types) if (!isKnownEventType(t)) throw invalid(`event_types: unknown event type "${t}"`, { field: 'event_types' });
  for (const c of categories) {
    if (!(EVENT_CATEGORIES as readonly string[]).includes(c)) throw invalid(`event_categories: unknown category "${c}"`, { field: 'event_categories' });
  }
  if (types.length === 0 && categories.length === 0) {
    throw invalid('A subscription needs at least one event type or event category', { field: 'event_types' });
  }
  if (owner === SYSTEM_TENANT) return;
  const allowed = TENANT_CATEGORIES as readonly string[];
  const badType = types.find((t) => !allowed.includes(t.split('.')[0] ?? ''));
  if (badType) throw invalid(`event_types: "${badType}" is admin-only; tenant-owned subscriptions may select budget, reservation and tenant events`, { field: 'event_types' });
  const badCat = categories.find((c) => !allowed.includes(c));
  if (badCat) throw invalid(`event_categories: "${badCat}" is admin-only for tenant-owned subscriptions`, { field: 'event_categories' });
}

interface WebhookBody {
  name?: string;
  description?: string;
  url?: string;
  event_types?: string[];
  event_categories?: string[];
  scope_filter?: string;
  thresholds?: Record<string, unknown>;
  signing_secret?: string;
  headers?: Record<string, string>;
  retry_policy?: Partial<WebhookRecord['retry_policy']>;
  disable_after_failures?: number;
  metadata?: Record<string, unknown>;
  status?: 'ACTIVE' | 'PAUSED';
}

export function registerWebhookRoutes(app: FastifyInstance, { store }: AppDeps, deps: WebhookDeps): void {
  const auth = (mode: RouteAuth['auth'], permission?: string): RouteAuth => ({ auth: mode, permission, plane: 'admin' });

  async function guardTenant(tenantId: string): Promise<void> {
    if (tenantId === SYSTEM_TENANT) return;
    const t = await store.getTenant(tenantId);
    if (!t) throw new CyclesError('TENANT_NOT_FOUND', `Tenant ${tenantId} not found`, { tenant_id: tenantId });
    if (t.status === 'CLOSED') throw new CyclesError('TENANT_CLOSED', `Tenant ${tenantId} is closed`, { tenant_id: tenantId });
  }

  /** Tenant keys see only their own subscriptions; another tenant's id is simply not found. */
  async function loadFor(req: FastifyRequest, id: string): Promise<WebhookRecord> {
    const w = await store.getWebhook(id);
    const p = req.cycles.principal;
    if (!w || (p?.kind === 'tenant' && w.tenant_id !== p.tenantId)) throw new CyclesError('WEBHOOK_NOT_FOUND', `Webhook subscription ${id} not found`);
    return w;
  }

  async function create(req: FastifyRequest, owner: string): Promise<{ subscription: Record<string, unknown>; signing_secret: string }> {
    const b = req.body as WebhookBody;
    await guardTenant(owner);
    checkSelectors(owner, b.event_types ?? [], b.event_categories ?? []);
    await validateWebhookUrl(b.url!, await deps.security.policy());
    const id = newSubscriptionId();
    const secret = b.signing_secret ?? newSigningSecret();
    const now = Date.now();
    const rec: WebhookRecord = {
      subscription_id: id,
      tenant_id: owner,
      url: b.url!,
      name: b.name,
      description: b.description,
      event_types: b.event_types ?? [],
      event_categories: b.event_categories ?? [],
      scope_filter: b.scope_filter,
      thresholds: b.thresholds,
      header_names: Object.keys(b.headers ?? {}),
      headers_sealed: b.headers && Object.keys(b.headers).length ? deps.box.seal(JSON.stringify(b.headers), `headers:${id}`) : undefined,
      secret_sealed: deps.box.seal(secret, `secret:${id}`),
      retry_policy: { ...DEFAULT_RETRY_POLICY, ...b.retry_policy },
      disable_after_failures: b.disable_after_failures ?? 10,
      status: 'ACTIVE',
      consecutive_failures: 0,
      metadata: b.metadata,
      created_at: now,
      updated_at: now,
    };
    const event: EventDraft = {
      event_type: 'webhook.created',
      tenant_id: owner,
      correlation_id: `webhook_create:${id}`,
      data: { subscription_id: id, tenant_id: owner, new_status: 'ACTIVE' },
    };
    await store.createWebhook(rec, [event], opContext(req));
    return { subscription: webhookShape(rec), signing_secret: secret };
  }

  async function update(req: FastifyRequest, current: WebhookRecord): Promise<Record<string, unknown>> {
    const b = req.body as WebhookBody;
    await guardTenant(current.tenant_id);
    const next: WebhookRecord = { ...current, retry_policy: { ...current.retry_policy } };
    const changed: string[] = [];
    const set = <K extends keyof WebhookRecord>(field: string, key: K, value: WebhookRecord[K] | undefined) => {
      if (value === undefined) return;
      if (JSON.stringify(next[key]) !== JSON.stringify(value)) changed.push(field);
      next[key] = value;
    };
    set('name', 'name', b.name);
    set('description', 'description', b.description);
    set('url', 'url', b.url);
    set('event_types', 'event_types', b.event_types);
    set('event_categories', 'event_categories', b.event_categories);
    set('scope_filter', 'scope_filter', b.scope_filter);
    set('thresholds', 'thresholds', b.thresholds);
    set('disable_after_failures', 'disable_after_failures', b.disable_after_failures);
    set('metadata', 'metadata', b.metadata);
    if (b.retry_policy) set('retry_policy', 'retry_policy', { ...current.retry_policy, ...b.retry_policy });
    if (b.headers) {
      changed.push('headers');
      next.header_names = Object.keys(b.headers);
      next.headers_sealed = next.header_names.length ? deps.box.seal(JSON.stringify(b.headers), `headers:${current.subscription_id}`) : undefined;
    }
    if (b.signing_secret !== undefined) {
      // A rotation always counts as a change, even to the same value.
      changed.push('signing_secret');
      next.secret_sealed = deps.box.seal(b.signing_secret, `secret:${current.subscription_id}`);
    }
    // Invariants hold on what will be stored, with the stored owner, so a status-only PATCH cannot revive an offender.
    checkSelectors(current.tenant_id, next.event_types, next.event_categories);
    if (b.url !== undefined && b.url !== current.url) await validateWebhookUrl(b.url, await deps.security.policy());
    let eventType: string | undefined;
    if (b.status !== undefined && b.status !== current.status) {
      next.status = b.status;
      if (b.status === 'ACTIVE') {
        next.consecutive_failures = 0;
        eventType = 'webhook.resumed';
      } else {
        eventType = 'webhook.paused';
      }
    } else if (changed.length > 0) {
      eventType = 'webhook.updated';
    }
    if (!eventType) return webhookShape(current);
    next.updated_at = Date.now();
    const data: Record<string, unknown> = { subscription_id: current.subscription_id, tenant_id: current.tenant_id, previous_status: current.status, new_status: next.status };
    if (changed.length) data.changed_fields = changed;
    await store.updateWebhook(next, [{ event_type: eventType, tenant_id: current.tenant_id, correlation_id: `webhook_update:${current.subscription_id}:${req.cycles.requestId}`, data }], opContext(req));
    return webhookShape(next);
  }

  async function remove(req: FastifyRequest, current: WebhookRecord): Promise<void> {
    await guardTenant(current.tenant_id);
    await store.deleteWebhook(
      current.subscription_id,
      [{ event_type: 'webhook.deleted', tenant_id: current.tenant_id, correlation_id: `webhook_delete:${current.subscription_id}`, data: { subscription_id: current.subscription_id, tenant_id: current.tenant_id, previous_status: current.status } }],
      opContext(req),
    );
  }

  /** Sends a synthetic, signed system.webhook_test event now; touches neither status nor failure counts. */
  async function probe(req: FastifyRequest, w: WebhookRecord): Promise<Record<string, unknown>> {
    await guardTenant(w.tenant_id);
    const eventId = `evt_test_${randomBytes(6).toString('hex')}`;
    const event = {
      event_id: eventId,
      event_type: 'system.webhook_test',
      category: 'system',
      timestamp: new Date().toISOString(),
      tenant_id: w.tenant_id,
      source: SOURCE,
      actor: { type: req.cycles.principal?.kind === 'tenant' ? 'api_key' : 'admin' },
      data: { subscription_id: w.subscription_id, test: true },
      request_id: req.cycles.requestId,
      trace_id: req.cycles.traceId,
    };
    const body = JSON.stringify(event);
    try {
      // As for deliveries: the address rules apply, the URL patterns only to new URLs (an existing
      // subscription is not judged again by patterns added after it was stored).
      const policy = { ...(await deps.security.policy()), urlPatterns: undefined };
      await validateWebhookUrl(w.url, policy);
      const headers = deliveryHeaders(deps.box, w, body, { event_id: eventId, event_type: event.event_type, trace_id: req.cycles.traceId, trace_flags: req.cycles.traceFlags, request_id: req.cycles.requestId });
      const r = await send({ url: w.url, body, headers, timeoutMs: deps.testTimeoutMs, policy });
      const out: Record<string, unknown> = { success: r.ok };
      if (r.status !== undefined) out.response_status = r.status;
      out.response_time_ms = r.timeMs;
      if (r.error) out.error_message = r.error;
      out.event_id = eventId;
      return out;
    } catch (err) {
      return { success: false, error_message: (err as Error).message, event_id: eventId };
    }
  }

  async function deliveries(req: FastifyRequest, w: WebhookRecord) {
    const q = req.query as Query;
    const status = enumParam(q, 'status', ['PENDING', 'SUCCESS', 'FAILED', 'RETRYING'] as const);
    const [from, to] = windowParams(q, 'from', 'to');
    const hash = filterHash({ id: w.subscription_id, status, from, to });
    const after = decodeCursor(single(q, 'cursor'), hash);
    const limit = clampLimit(q);
    const page = await store.listDeliveries({ subscriptionId: w.subscription_id, status, from, to, after, limit });
    const last = page.rows[page.rows.length - 1];
    const out: Record<string, unknown> = { deliveries: page.rows.map(deliveryShape) };
    if (page.hasMore && last) out.next_cursor = encodeCursor(hash, { value: last.attempted_at, id: last.delivery_id });
    out.has_more = page.hasMore;
    return out;
  }

  async function list(req: FastifyRequest, tenantId: string | undefined) {
    const q = req.query as Query;
    const status = enumParam(q, 'status', ['ACTIVE', 'PAUSED', 'DISABLED'] as const);
    const eventType = single(q, 'event_type') || undefined;
    const search = single(q, 'search')?.trim() || undefined;
    if (search && search.length > 128) throw invalid('search must be at most 128 characters', { field: 'search' });
    const sortBy = enumParam(q, 'sort_by', WEBHOOK_SORT_KEYS) ?? 'consecutive_failures';
    const sortDir = enumParam(q, 'sort_dir', ['asc', 'desc'] as const) ?? 'desc';
    const hash = filterHash({ tenantId, status, eventType, search, sortBy, sortDir });
    const after = decodeCursor(single(q, 'cursor'), hash);
    const page = await store.listWebhooks({ tenantId, status, eventType, search, sortBy, sortDir, after, limit: clampLimit(q) });
    const last = page.rows[page.rows.length - 1];
    const out: Record<string, unknown> = { subscriptions: page.rows.map(webhookShape) };
    if (page.hasMore && last) out.next_cursor = encodeCursor(hash, { value: last[sortBy] as string | number, id: last.subscription_id });
    out.has_more = page.hasMore;
    return out;
  }

  // ---------------- admin plane ----------------
  app.post('/v1/admin/webhooks', { schema: { body: webhookCreateBody }, config: auth('admin') }, async (req, reply) => {
    const owner = single(req.query as Query, 'tenant_id') || SYSTEM_TENANT;
    return reply.code(201).send(await create(req, owner));
  });
  app.get('/v1/admin/webhooks', { config: auth('admin') }, async (req) => list(req, single(req.query as Query, 'tenant_id') || undefined));
  app.get('/v1/admin/webhooks/:id', { config: auth('admin') }, async (req) => webhookShape(await loadFor(req, (req.params as { id: string }).id)));
  app.patch('/v1/admin/webhooks/:id', { schema: { body: webhookUpdateBody }, config: auth('admin') }, async (req) => update(req, await loadFor(req, (req.params as { id: string }).id)));
  app.delete('/v1/admin/webhooks/:id', { config: auth('admin') }, async (req, reply) => {
    await remove(req, await loadFor(req, (req.params as { id: string }).id));
    return reply.code(204).send();
  });
  app.post('/v1/admin/webhooks/:id/test', { config: auth('admin') }, async (req) => probe(req, await loadFor(req, (req.params as { id: string }).id)));
  app.get('/v1/admin/webhooks/:id/deliveries', { config: auth('admin') }, async (req) => deliveries(req, await loadFor(req, (req.params as { id: string }).id)));

  app.get('/v1/admin/config/webhook-security', { config: auth('admin') }, async () => deps.security.config());
  app.put('/v1/admin/config/webhook-security', { schema: { body: webhookSecurityBody }, config: auth('admin') }, async (req) =>
    deps.security.update((req.body ?? {}) as Partial<WebhookSecurityConfig>),
  );

  app.post('/v1/admin/webhooks/:id/replay', { schema: { body: replayBody }, config: auth('admin') }, async (req, reply) => {
    const w = await loadFor(req, (req.params as { id: string }).id);
    await guardTenant(w.tenant_id);
    const b = (req.body ?? {}) as { from?: string; to?: string; event_types?: string[]; max_events?: number };
    const maxEvents = b.max_events ?? 100;
    const from = b.from ? Date.parse(b.from) : undefined;
    const to = b.to ? Date.parse(b.to) : undefined;
    if (from !== undefined && to !== undefined && from > to) throw invalid('from must not be after to', { field: 'from' });
    const replayId = `rpl_${randomBytes(8).toString('hex')}`;
    if (w.status !== 'ACTIVE') return reply.code(202).send({ replay_id: replayId, events_queued: 0, estimated_completion_seconds: 0 });
    // Selection uses the live matcher (selectors, scope filter, tenant boundary), so a replay can never
    // deliver what the subscription would not have received live.
    const selected: string[] = [];
    let scanned = 0;
    let after: { value: number; id: string } | undefined;
    for (;;) {
      const page = await store.listEvents({
        tenantId: w.tenant_id === SYSTEM_TENANT ? undefined : w.tenant_id,
        from,
        to,
        sortBy: 'timestamp',
        sortDir: 'asc',
        after,
        limit: 500,
      });
      for (const e of page.rows) {
        scanned++;
        if (b.event_types?.length && !b.event_types.includes(e.event_type)) continue;
        if (subscriptionMatches(w, e)) selected.push(e.event_id);
      }
      if (selected.length > maxEvents) {
        throw invalid(`The window holds more than max_events (${maxEvents}) deliverable events; narrow it with from/to or event_types`, { field: 'max_events', max_events: maxEvents });
      }
      if (scanned > REPLAY_SCAN_LIMIT) throw invalid(`The window holds more than ${REPLAY_SCAN_LIMIT} events; narrow it with from/to`, { field: 'from' });
      const last = page.rows[page.rows.length - 1];
      if (!page.hasMore || !last) break;
      after = { value: last.timestamp, id: last.event_id };
    }
    // Through the store even when nothing was selected: a replay while another is still being
    // delivered is refused with 409 REPLAY_IN_PROGRESS either way.
    const queued = await store.enqueueReplay(w.subscription_id, selected, replayId);
    deps.kick?.();
    return reply.code(202).send({ replay_id: replayId, events_queued: queued, estimated_completion_seconds: Math.max(1, Math.ceil(queued / 10)) });
  });

  // ---------------- tenant plane ----------------
  app.post('/v1/webhooks', { schema: { body: webhookCreateBody }, config: auth('tenant', 'webhooks:write') }, async (req, reply) => {
    const p = req.cycles.principal;
    if (p?.kind !== 'tenant') throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    return reply.code(201).send(await create(req, p.tenantId));
  });
  app.get('/v1/webhooks', { config: auth('either', 'webhooks:read') }, async (req) => {
    const p = req.cycles.principal;
    const tenant = single(req.query as Query, 'tenant');
    if (p?.kind === 'tenant') {
      if (tenant) throw invalid('tenant must not be set with a tenant API key; the key determines the tenant', { field: 'tenant' });
      return list(req, p.tenantId);
    }
    if (!tenant) throw invalid('tenant query parameter is required when using admin key authentication', { field: 'tenant' });
    return list(req, tenant);
  });
  app.get('/v1/webhooks/:id', { config: auth('either', 'webhooks:read') }, async (req) => webhookShape(await loadFor(req, (req.params as { id: string }).id)));
  app.patch('/v1/webhooks/:id', { schema: { body: webhookUpdateBody }, config: auth('either', 'webhooks:write') }, async (req) => update(req, await loadFor(req, (req.params as { id: string }).id)));
  app.delete('/v1/webhooks/:id', { config: auth('either', 'webhooks:write') }, async (req, reply) => {
    await remove(req, await loadFor(req, (req.params as { id: string }).id));
    return reply.code(204).send();
  });
  app.post('/v1/webhooks/:id/test', { config: auth('either', 'webhooks:write') }, async (req) => probe(req, await loadFor(req, (req.params as { id: string }).id)));
  app.get('/v1/webhooks/:id/deliveries', { config: auth('either', 'webhooks:read') }, async (req) => deliveries(req, await loadFor(req, (req.params as { id: string }).id)));
}

function clampLimit(q: Query): number {
  const raw = single(q, 'limit');
  if (raw === undefined || raw === '') return 50;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw invalid('limit must be an integer', { field: 'limit' });
  return Math.min(100, Math.max(1, Math.trunc(n)));
}

export type { Store };
