/**
 * Mapping between Redis hashes and ledger records. Every field is a string: integers as
 * decimal, booleans as 1/0, nested values as the JSON text TypeScript produced (never re-encoded
 * by Lua). An absent field is an absent (undefined) value.
 */
import type { Unit } from '../../ledger/amounts.js';
import type { BudgetRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { ApiKeyRecord } from '../types.js';

export type Hash = Record<string, string>;

const num = (v: string | undefined): number | undefined => (v === undefined || v === '' ? undefined : Number(v));
const json = <T>(v: string | undefined): T | undefined => (v === undefined || v === '' ? undefined : (JSON.parse(v) as T));

/** Field/value pairs for HSET, skipping undefined values. */
export function pairs(fields: Record<string, string | number | boolean | undefined | null | object>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || v === null) continue;
    out.push(k, encodeField(v));
  }
  return out;
}

export function encodeField(v: string | number | boolean | object): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? '1' : '0';
  return JSON.stringify(v);
}

/** An HGETALL reply (node-redis gives a map object; a flat [field, value, ...] array is accepted too). */
export function toHash(reply: unknown): Hash | undefined {
  if (reply === null || typeof reply !== 'object') return undefined;
  const h: Hash = {};
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) h[String(reply[i])] = String(reply[i + 1]);
  } else {
    for (const [k, v] of Object.entries(reply as Record<string, unknown>)) h[k] = String(v);
  }
  return Object.keys(h).length > 0 ? h : undefined;
}

// ---- tenants ----
export function tenantFields(t: TenantRecord): string[] {
  return pairs({
    tenant_id: t.tenant_id,
    name: t.name,
    status: t.status,
    parent_tenant_id: t.parent_tenant_id,
    default_commit_overage_policy: t.default_commit_overage_policy,
    default_reservation_ttl_ms: t.default_reservation_ttl_ms,
    max_reservation_ttl_ms: t.max_reservation_ttl_ms,
    max_reservation_extensions: t.max_reservation_extensions,
    reservation_expiry_policy: t.reservation_expiry_policy,
    metadata: t.metadata,
    created_at: t.created_at,
    updated_at: t.updated_at,
    suspended_at: t.suspended_at,
    closed_at: t.closed_at,
  });
}

export function tenantFromHash(h: Hash): TenantRecord {
  return {
    tenant_id: h.tenant_id!,
    name: h.name!,
    status: h.status as TenantRecord['status'],
    parent_tenant_id: h.parent_tenant_id,
    default_commit_overage_policy: h.default_commit_overage_policy as TenantRecord['default_commit_overage_policy'],
    default_reservation_ttl_ms: num(h.default_reservation_ttl_ms),
    max_reservation_ttl_ms: num(h.max_reservation_ttl_ms),
    max_reservation_extensions: num(h.max_reservation_extensions),
    reservation_expiry_policy: h.reservation_expiry_policy,
    metadata: json(h.metadata),
    created_at: Number(h.created_at),
    updated_at: num(h.updated_at),
    suspended_at: num(h.suspended_at),
    closed_at: num(h.closed_at),
  };
}

// ---- budgets ----
export function budgetFields(b: BudgetRecord): string[] {
  return pairs({
    ledger_id: b.ledger_id,
    tenant_id: b.tenant_id,
    scope: b.scope,
    unit: b.unit,
    allocated: b.allocated,
    reserved: b.reserved,
    spent: b.spent,
    debt: b.debt,
    overdraft_limit: b.overdraft_limit,
    is_over_limit: b.is_over_limit,
    status: b.status,
    commit_overage_policy: b.commit_overage_policy,
    rollover_policy: b.rollover_policy,
    period_start: b.period_start,
    period_end: b.period_end,
    metadata: b.metadata,
    created_at: b.created_at,
    updated_at: b.updated_at,
  });
}

export function budgetFromHash(h: Hash): BudgetRecord {
  return {
    ledger_id: h.ledger_id!,
    tenant_id: h.tenant_id!,
    scope: h.scope!,
    unit: h.unit as Unit,
    allocated: Number(h.allocated),
    reserved: Number(h.reserved),
    spent: Number(h.spent),
    debt: Number(h.debt),
    overdraft_limit: Number(h.overdraft_limit),
    is_over_limit: h.is_over_limit === '1',
    status: h.status as BudgetRecord['status'],
    commit_overage_policy: h.commit_overage_policy as BudgetRecord['commit_overage_policy'],
    rollover_policy: h.rollover_policy,
    period_start: num(h.period_start),
    period_end: num(h.period_end),
    metadata: json(h.metadata),
    created_at: Number(h.created_at),
    updated_at: Number(h.updated_at),
  };
}

// ---- reservations ----
export function reservationFromHash(h: Hash): ReservationRecord {
  return {
    reservation_id: h.reservation_id!,
    tenant_id: h.tenant_id!,
    status: h.status as ReservationRecord['status'],
    subject: JSON.parse(h.subject!),
    action: JSON.parse(h.action!),
    unit: h.unit as Unit,
    reserved: Number(h.reserved),
    scope_path: h.scope_path!,
    affected_scopes: JSON.parse(h.affected_scopes!),
    budgeted_scopes: JSON.parse(h.budgeted_scopes!),
    overage_policy: h.overage_policy as ReservationRecord['overage_policy'],
    idempotency_key: h.idempotency_key!,
    created_at_ms: Number(h.created_at_ms),
    expires_at_ms: Number(h.expires_at_ms),
    ttl_ms: Number(h.ttl_ms),
    grace_period_ms: Number(h.grace_period_ms),
    max_extensions: Number(h.max_extensions),
    extension_count: Number(h.extension_count),
    metadata: json(h.metadata),
    committed: num(h.committed),
    committed_metadata: json(h.committed_metadata),
    metrics: json(h.metrics),
    debt_incurred: num(h.debt_incurred),
    finalized_at_ms: num(h.finalized_at_ms),
    expired_at_ms: num(h.expired_at_ms),
  };
}

// ---- API keys ----
export function apiKeyFields(k: Partial<ApiKeyRecord>): string[] {
  return pairs({
    key_id: k.key_id,
    tenant_id: k.tenant_id,
    key_prefix: k.key_prefix,
    key_hash: k.key_hash,
    name: k.name,
    description: k.description,
    permissions: k.permissions,
    scope_filter: k.scope_filter,
    status: k.status,
    created_at: k.created_at,
    expires_at: k.expires_at,
    revoked_at: k.revoked_at,
    revoked_reason: k.revoked_reason,
    last_used_at: k.last_used_at,
    metadata: k.metadata,
  });
}

export function apiKeyFromHash(h: Hash): ApiKeyRecord {
  return {
    key_id: h.key_id!,
    tenant_id: h.tenant_id!,
    key_prefix: h.key_prefix!,
    key_hash: h.key_hash!,
    name: h.name!,
    description: h.description,
    permissions: JSON.parse(h.permissions ?? '[]'),
    scope_filter: JSON.parse(h.scope_filter ?? '[]'),
    status: h.status as ApiKeyRecord['status'],
    created_at: Number(h.created_at),
    expires_at: Number(h.expires_at),
    revoked_at: num(h.revoked_at),
    revoked_reason: h.revoked_reason,
    last_used_at: num(h.last_used_at),
    metadata: json(h.metadata),
  };
}

/**
 * A patch as HSET pairs and HDEL fields: a key present with value undefined clears the field
 * (the object-spread semantics of the SQLite backend's `{ ...current, ...patch }`).
 */
export function patchOps(patch: Record<string, unknown>, immutable: readonly string[]): { set: string[]; del: string[] } {
  const set: string[] = [];
  const del: string[] = [];
  for (const [k, v] of Object.entries(patch)) {
    if (immutable.includes(k)) continue;
    if (v === undefined || v === null) del.push(k);
    else set.push(k, encodeField(v as string | number | boolean | object));
  }
  return { set, del };
}
