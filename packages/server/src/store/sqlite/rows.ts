/** Mapping between SQLite rows and ledger records (JSON columns, 0/1 booleans, NULL = absent). */
import type { Unit } from '../../ledger/amounts.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { ApiKeyRecord } from '../types.js';

type Row = Record<string, unknown>;

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
    default_reservation_ttl_ms: opt(r.default_reservation_ttl_ms),
    max_reservation_ttl_ms: opt(r.max_reservation_ttl_ms),
    max_reservation_extensions: opt(r.max_reservation_extensions),
    reservation_expiry_policy: opt(r.reservation_expiry_policy),
    metadata: json(r.metadata),
    created_at: r.created_at as number,
    updated_at: opt(r.updated_at),
    suspended_at: opt(r.suspended_at),
    closed_at: opt(r.closed_at),
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
    allocated: r.allocated as number,
    reserved: r.reserved as number,
    spent: r.spent as number,
    debt: r.debt as number,
    overdraft_limit: r.overdraft_limit as number,
    is_over_limit: r.is_over_limit === 1,
    status: r.status as BudgetRecord['status'],
    commit_overage_policy: opt(r.commit_overage_policy),
    rollover_policy: opt(r.rollover_policy),
    period_start: opt(r.period_start),
    period_end: opt(r.period_end),
    metadata: json(r.metadata),
    created_at: r.created_at as number,
    updated_at: r.updated_at as number,
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
    is_over_limit: b.is_over_limit ? 1 : 0,
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
    reserved: r.reserved as number,
    scope_path: r.scope_path as string,
    affected_scopes: JSON.parse(r.affected_scopes as string),
    budgeted_scopes: JSON.parse(r.budgeted_scopes as string),
    overage_policy: r.overage_policy as ReservationRecord['overage_policy'],
    idempotency_key: r.idempotency_key as string,
    created_at_ms: r.created_at_ms as number,
    expires_at_ms: r.expires_at_ms as number,
    ttl_ms: r.ttl_ms as number,
    grace_period_ms: r.grace_period_ms as number,
    max_extensions: r.max_extensions as number,
    extension_count: r.extension_count as number,
    metadata: json(r.metadata),
    committed: opt(r.committed),
    committed_metadata: json(r.committed_metadata),
    metrics: json(r.metrics),
    debt_incurred: opt(r.debt_incurred),
    finalized_at_ms: opt(r.finalized_at_ms),
    expired_at_ms: opt(r.expired_at_ms),
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
    status: r.status as number,
    body: r.body as string,
    reservation_id: opt(r.reservation_id),
    created_at: r.created_at as number,
    expires_at: r.expires_at as number,
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
    created_at: r.created_at as number,
    expires_at: r.expires_at as number,
    revoked_at: opt(r.revoked_at),
    revoked_reason: opt(r.revoked_reason),
    last_used_at: opt(r.last_used_at),
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

/** Builds "INSERT OR REPLACE" / "UPDATE" column lists from a row object's keys. */
export const columns = (row: Row): string[] => Object.keys(row);
