/**
 * The protocol's Event: an immutable record of a state change, written in the same atomic
 * step as the change (transactional outbox) and delivered to webhooks from there.
 */
import { randomHex } from '../ids.js';

export const EVENT_CATEGORIES = ['budget', 'tenant', 'api_key', 'policy', 'reservation', 'system', 'webhook'] as const;
export type EventCategory = (typeof EVENT_CATEGORIES)[number];

/** Categories a tenant may see (events API, tenant-owned webhooks); the rest are admin-only. */
export const TENANT_CATEGORIES: readonly EventCategory[] = ['budget', 'reservation', 'tenant'];

/** Tenant id of events that belong to no tenant, and owner of system-wide webhook subscriptions. */
export const SYSTEM_TENANT = '__system__';

export type ActorType = 'admin' | 'api_key' | 'admin_on_behalf_of' | 'system' | 'scheduler';

export interface Actor {
  type: ActorType;
  key_id?: string | undefined;
  source_ip?: string | undefined;
}

/** Who asked and under which correlation ids: stamped on every event and audit row of a request. */
export interface OpContext {
  requestId?: string | undefined;
  traceId?: string | undefined;
  /** Flags of a valid inbound traceparent, propagated to webhook deliveries. */
  traceFlags?: string | undefined;
  actor: Actor;
}

export const SYSTEM_CONTEXT: OpContext = { actor: { type: 'system' } };

/** What an operation emits; the store assigns id and timestamp when it writes it. */
export interface EventDraft {
  event_type: string;
  tenant_id: string;
  scope?: string | undefined;
  data?: Record<string, unknown> | undefined;
  correlation_id?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
}

export interface EventRecord {
  event_id: string;
  event_type: string;
  category: string;
  timestamp: number;
  tenant_id: string;
  scope?: string | undefined;
  correlation_id?: string | undefined;
  request_id?: string | undefined;
  trace_id?: string | undefined;
  trace_flags?: string | undefined;
  /** The exact Event JSON, serialised once: what the events API returns and webhooks sign. */
  body: string;
}

export const newEventRecordId = (): string => `evt_${randomHex(8)}`;

export const categoryOf = (eventType: string): string => eventType.slice(0, Math.max(0, eventType.indexOf('.'))) || eventType;

export const SOURCE = 'cycles-ts';

/** Builds the stored record, with the Event JSON in the spec's field order. */
export function buildEvent(draft: EventDraft, ctx: OpContext, now: number, eventId = newEventRecordId()): EventRecord {
  const event: Record<string, unknown> = {
    event_id: eventId,
    event_type: draft.event_type,
    category: categoryOf(draft.event_type),
    timestamp: new Date(now).toISOString(),
    tenant_id: draft.tenant_id,
    source: SOURCE,
  };
  if (draft.scope !== undefined) event.scope = draft.scope;
  const actor: Record<string, unknown> = { type: ctx.actor.type };
  if (ctx.actor.key_id) actor.key_id = ctx.actor.key_id;
  if (ctx.actor.source_ip) actor.source_ip = ctx.actor.source_ip;
  event.actor = actor;
  if (draft.data !== undefined) event.data = draft.data;
  if (draft.correlation_id !== undefined) event.correlation_id = draft.correlation_id;
  if (ctx.requestId !== undefined) event.request_id = ctx.requestId;
  if (ctx.traceId !== undefined) event.trace_id = ctx.traceId;
  if (draft.metadata !== undefined) event.metadata = draft.metadata;
  return {
    event_id: eventId,
    event_type: draft.event_type,
    category: event.category as string,
    timestamp: now,
    tenant_id: draft.tenant_id,
    scope: draft.scope,
    correlation_id: draft.correlation_id,
    request_id: ctx.requestId,
    trace_id: ctx.traceId,
    trace_flags: ctx.traceFlags,
    body: JSON.stringify(event),
  };
}

/** Every EventType of the protocol (custom types use the custom. prefix). */
export const EVENT_TYPES = (
  'budget.created budget.updated budget.funded budget.debited budget.reset budget.reset_spent budget.debt_repaid budget.frozen ' +
  'budget.unfrozen budget.closed budget.closed_via_tenant_cascade budget.threshold_crossed budget.exhausted budget.over_limit_entered ' +
  'budget.over_limit_exited budget.debt_incurred budget.burn_rate_anomaly reservation.denied reservation.denial_rate_spike ' +
  'reservation.expired reservation.expiry_rate_spike reservation.commit_overage reservation.released_via_tenant_cascade tenant.created ' +
  'tenant.updated tenant.suspended tenant.reactivated tenant.closed tenant.settings_changed webhook.created webhook.updated ' +
  'webhook.paused webhook.resumed webhook.disabled webhook.deleted webhook.disabled_via_tenant_cascade api_key.created ' +
  'api_key.revoked api_key.revoked_via_tenant_cascade api_key.expired api_key.permissions_changed api_key.auth_failed ' +
  'api_key.auth_failure_rate_spike policy.created policy.updated policy.deleted system.store_connection_lost ' +
  'system.store_connection_restored system.high_latency system.webhook_delivery_failed system.webhook_test'
).split(' ');

export const isKnownEventType = (t: string): boolean => EVENT_TYPES.includes(t) || /^custom\.[a-z0-9_.-]+$/.test(t);
