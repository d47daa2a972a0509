/**
 * Mapping between PostgreSQL rows and ledger records. node-postgres returns BIGINT as a string;
 * `int` turns it into a number and refuses (rather than rounds) anything beyond 2^53-1, which
 * the ledger never writes. Writes go the other way as JSON (see `writeSql` in store.ts), whose
 * numbers PostgreSQL parses exactly into BIGINT.
 */
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError } from '../../ledger/errors.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { EventRecord } from '../../events/model.js';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { ApiKeyRecord } from '../types.js';

export type Row = Record<string, unknown>;

export function int(v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v as string);
  if (!Number.isSafeInteger(n)) throw new CyclesError('INTERNAL_ERROR', `Stored integer ${String(v)} is outside the exact range`);
  return n;
}

const optInt = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : int(v));
const opt = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (v as T));
const json = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (JSON.parse(v as string) as T));
const toJson = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));

export function tenantFromRow(r: Row): TenantRecord {
  return {
    tenant_id: r.tenant_id as string,
    name: r.name as string,
    status: r.status as TenantRecord['status'],
    parent_tenant_id: opt(r.parent_tenant_id),
    default_commit_overage_policy: opt(r.default_commit_overage_policy),
    default_reservation_ttl_ms: optInt(r.default_reservation_ttl_ms),
    max_reservation_ttl_ms: optInt(r.max_reservation_ttl_ms),
    max_reservation_extensions: optInt(r.max_reservation_extensions),
    reservation_expiry_policy: opt(r.reservation_expiry_policy),
    metadata: json(r.metadata),
    created_at: int(r.created_at),
    updated_at: optInt(r.updated_at),
    suspended_at: optInt(r.suspended_at),
    closed_at: optInt(r.closed_at),
  };
}

export function tenantToRow(t: TenantRecord): Row {
  return {
    tenant_id: t.tenant_id,
    name: t.name,
    status: t.status,
    parent_tenant_id: t.parent_tenant_id ?? null,
    default_commit_overage_policy: t.default_commit_overage_policy ?? null,
    default_reservation_ttl_ms: t.default_reservation_ttl_ms ?? null,
    max_reservation_ttl_ms: t.max_reservation_ttl_ms ?? null,
    max_reservation_extensions: t.max_reservation_extensions ?? null,
    reservation_expiry_policy: t.reservation_expiry_policy ?? null,
    metadata: toJson(t.metadata),
    created_at: t.created_at,
    updated_at: t.updated_at ?? null,
    suspended_at: t.suspended_at ?? null,
    closed_at: t.closed_at ?? null,
  };
}

export function budgetFromRow(r: Row): BudgetRecord {
  return {
    ledger_id: r.ledger_id as string,
    tenant_id: r.tenant_id as string,
    scope: r.scope as string,
    unit: r.unit as Unit,
    allocated: int(r.allocated),
    reserved: int(r.reserved),
    spent: int(r.spent),
    debt: int(r.debt),
    overdraft_limit: int(r.overdraft_limit),
    is_over_limit: r.is_over_limit === true,
    status: r.status as BudgetRecord['status'],
    commit_overage_policy: opt(r.commit_overage_policy),
    rollover_policy: opt(r.rollover_policy),
    period_start: optInt(r.period_start),
    period_end: optInt(r.period_end),
    metadata: json(r.metadata),
    created_at: int(r.created_at),
    updated_at: int(r.updated_at),
  };
}

export function budgetToRow(b: BudgetRecord): Row {
  return {
    scope: b.scope,
    unit: b.unit,
    ledger_id: b.ledger_id,
    tenant_id: b.tenant_id,
    allocated: b.allocated,
    reserved: b.reserved,
    spent: b.spent,
    debt: b.debt,
    overdraft_limit: b.overdraft_limit,
    is_over_limit: b.is_over_limit,
    status: b.status,
    commit_overage_policy: b.commit_overage_policy ?? null,
    rollover_policy: b.rollover_policy ?? null,
    period_start: b.period_start ?? null,
    period_end: b.period_end ?? null,
    metadata: toJson(b.metadata),
    created_at: b.created_at,
    updated_at: b.updated_at,
    ...scopeLevels(b.scope),
  };
}

/** Splits "tenant:a/workspace:w/agent:x" into per-level columns and the leaf level. */
export function scopeLevels(scope: string): Row {
  const out: Row = { lvl_workspace: null, lvl_app: null, lvl_workflow: null, lvl_agent: null, lvl_toolset: null, leaf_level: 'tenant' };
  for (const seg of scope.split('/')) {
    const i = seg.indexOf(':');
    const level = seg.slice(0, i);
    if (level !== 'tenant') out[`lvl_${level}`] = seg.slice(i + 1);
    out.leaf_level = level;
  }
  return out;
}

export function reservationFromRow(r: Row): ReservationRecord {
  return {
    reservation_id: r.reservation_id as string,
    tenant_id: r.tenant_id as string,
    status: r.status as ReservationRecord['status'],
    subject: JSON.parse(r.subject as string),
    action: JSON.parse(r.action as string),
    unit: r.unit as Unit,
    reserved: int(r.reserved),
    scope_path: r.scope_path as string,
    affected_scopes: JSON.parse(r.affected_scopes as string),
    budgeted_scopes: JSON.parse(r.budgeted_scopes as string),
    overage_policy: r.overage_policy as ReservationRecord['overage_policy'],
    idempotency_key: r.idempotency_key as string,
    created_at_ms: int(r.created_at_ms),
    expires_at_ms: int(r.expires_at_ms),
    ttl_ms: int(r.ttl_ms),
    grace_period_ms: int(r.grace_period_ms),
    max_extensions: int(r.max_extensions),
    extension_count: int(r.extension_count),
    metadata: json(r.metadata),
    committed: optInt(r.committed),
    committed_metadata: json(r.committed_metadata),
    metrics: json(r.metrics),
    debt_incurred: optInt(r.debt_incurred),
    finalized_at_ms: optInt(r.finalized_at_ms),
    expired_at_ms: optInt(r.expired_at_ms),
  };
}

export function reservationToRow(x: ReservationRecord): Row {
  const s = x.subject;
  return {
    reservation_id: x.reservation_id,
    tenant_id: x.tenant_id,
    status: x.status,
    subject: JSON.stringify(s),
    action: JSON.stringify(x.action),
    unit: x.unit,
    reserved: x.reserved,
    scope_path: x.scope_path,
    affected_scopes: JSON.stringify(x.affected_scopes),
    budgeted_scopes: JSON.stringify(x.budgeted_scopes),
    overage_policy: x.overage_policy,
    idempotency_key: x.idempotency_key,
    created_at_ms: x.created_at_ms,
    expires_at_ms: x.expires_at_ms,
    ttl_ms: x.ttl_ms,
    grace_period_ms: x.grace_period_ms,
    max_extensions: x.max_extensions,
    extension_count: x.extension_count,
    metadata: toJson(x.metadata),
    committed: x.committed ?? null,
    committed_metadata: toJson(x.committed_metadata),
    metrics: toJson(x.metrics),
    debt_incurred: x.debt_incurred ?? null,
    finalized_at_ms: x.finalized_at_ms ?? null,
    expired_at_ms: x.expired_at_ms ?? null,
    // Filters compare the canonical (lower-cased) values, as scope paths do.
    workspace: s.workspace?.toLowerCase() ?? null,
    app: s.app?.toLowerCase() ?? null,
    workflow: s.workflow?.toLowerCase() ?? null,
    agent: s.agent?.toLowerCase() ?? null,
    toolset: s.toolset?.toLowerCase() ?? null,
    due_at_ms: x.status === 'ACTIVE' ? x.expires_at_ms + x.grace_period_ms : null,
  };
}

export function idempotencyFromRow(r: Row): IdempotencyRecord {
  return {
    tenant_id: r.tenant_id as string,
    endpoint: r.endpoint as string,
    key: r.key as string,
    request_hash: r.request_hash as string,
    status: int(r.status),
    body: r.body as string,
    reservation_id: opt(r.reservation_id),
    created_at: int(r.created_at),
    expires_at: int(r.expires_at),
  };
}

export function idempotencyToRow(r: IdempotencyRecord): Row {
  return {
    tenant_id: r.tenant_id,
    endpoint: r.endpoint,
    key: r.key,
    request_hash: r.request_hash,
    status: r.status,
    body: r.body,
    reservation_id: r.reservation_id ?? null,
    created_at: r.created_at,
    expires_at: r.expires_at,
  };
}

export function apiKeyFromRow(r: Row): ApiKeyRecord {
  return {
    key_id: r.key_id as string,
    tenant_id: r.tenant_id as string,
    key_prefix: r.key_prefix as string,
    key_hash: r.key_hash as string,
    name: r.name as string,
    description: opt(r.description),
    permissions: JSON.parse(r.permissions as string),
    scope_filter: JSON.parse(r.scope_filter as string),
    status: r.status as ApiKeyRecord['status'],
    created_at: int(r.created_at),
    expires_at: int(r.expires_at),
    revoked_at: optInt(r.revoked_at),
    revoked_reason: opt(r.revoked_reason),
    last_used_at: optInt(r.last_used_at),
    metadata: json(r.metadata),
  };
}

export function apiKeyToRow(k: ApiKeyRecord): Row {
  return {
    key_id: k.key_id,
    tenant_id: k.tenant_id,
    key_prefix: k.key_prefix,
    key_hash: k.key_hash,
    name: k.name,
    description: k.description ?? null,
    permissions: JSON.stringify(k.permissions),
    scope_filter: JSON.stringify(k.scope_filter),
    status: k.status,
    created_at: k.created_at,
    expires_at: k.expires_at,
    revoked_at: k.revoked_at ?? null,
    revoked_reason: k.revoked_reason ?? null,
    last_used_at: k.last_used_at ?? null,
    metadata: toJson(k.metadata),
  };
}

export function eventFromRow(r: Row): EventRecord {
  return {
    event_id: r.event_id as string,
    event_type: r.event_type as string,
    category: r.category as string,
    timestamp: int(r.timestamp),
    tenant_id: r.tenant_id as string,
    scope: opt(r.scope),
    correlation_id: opt(r.correlation_id),
    request_id: opt(r.request_id),
    trace_id: opt(r.trace_id),
    trace_flags: opt(r.trace_flags),
    body: r.body as string,
  };
}

export function eventToRow(e: EventRecord): Row {
  return {
    event_id: e.event_id,
    event_type: e.event_type,
    category: e.category,
    timestamp: e.timestamp,
    tenant_id: e.tenant_id,
    scope: e.scope ?? null,
    correlation_id: e.correlation_id ?? null,
    request_id: e.request_id ?? null,
    trace_id: e.trace_id ?? null,
    trace_flags: e.trace_flags ?? null,
    body: e.body,
  };
}

export function policyFromRow(r: Row): PolicyRecord {
  return {
    policy_id: r.policy_id as string,
    tenant_id: r.tenant_id as string,
    name: r.name as string,
    description: opt(r.description),
    scope_pattern: r.scope_pattern as string,
    priority: int(r.priority),
    caps: json(r.caps),
    commit_overage_policy: opt(r.commit_overage_policy),
    reservation_ttl_override: json(r.reservation_ttl_override),
    rate_limits: json(r.rate_limits),
    status: r.status as PolicyRecord['status'],
    effective_from: optInt(r.effective_from),
    effective_until: optInt(r.effective_until),
    created_at: int(r.created_at),
    updated_at: optInt(r.updated_at),
  };
}

export function policyToRow(p: PolicyRecord): Row {
  return {
    policy_id: p.policy_id,
    tenant_id: p.tenant_id,
    name: p.name,
    description: p.description ?? null,
    scope_pattern: p.scope_pattern,
    priority: p.priority,
    caps: toJson(p.caps),
    commit_overage_policy: p.commit_overage_policy ?? null,
    reservation_ttl_override: toJson(p.reservation_ttl_override),
    rate_limits: toJson(p.rate_limits),
    status: p.status,
    effective_from: p.effective_from ?? null,
    effective_until: p.effective_until ?? null,
    created_at: p.created_at,
    updated_at: p.updated_at ?? null,
  };
}
