/** Wire shapes of the governance plane (timestamps are ISO-8601 strings there). */
import { remainingOf, type BudgetRecord, type TenantRecord } from '../ledger/types.js';
import {
  DEFAULT_MAX_EXTENSIONS,
  DEFAULT_MAX_TTL_MS,
  DEFAULT_TTL_MS,
} from '../ledger/ops/shared.js';
import type { ApiKeyRecord, AuditRecord, PolicyRecord } from '../store/types.js';

export const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());

/** Drops undefined fields so optional properties are absent rather than null. */
export function compact<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/** Tenants are returned with their effective defaults filled in. */
export function tenantShape(t: TenantRecord): Record<string, unknown> {
  return compact({
    tenant_id: t.tenant_id,
    name: t.name,
    status: t.status,
    parent_tenant_id: t.parent_tenant_id,
    default_commit_overage_policy: t.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE',
    default_reservation_ttl_ms: t.default_reservation_ttl_ms ?? DEFAULT_TTL_MS,
    max_reservation_ttl_ms: t.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS,
    max_reservation_extensions: t.max_reservation_extensions ?? DEFAULT_MAX_EXTENSIONS,
    reservation_expiry_policy: t.reservation_expiry_policy,
    metadata: t.metadata,
    created_at: iso(t.created_at),
    updated_at: iso(t.updated_at),
    suspended_at: iso(t.suspended_at),
    closed_at: iso(t.closed_at),
  });
}

export function ledgerShape(b: BudgetRecord): Record<string, unknown> {
  const amt = (v: number) => ({ unit: b.unit, amount: v });
  return compact({
    ledger_id: b.ledger_id,
    tenant_id: b.tenant_id,
    scope: b.scope,
    scope_path: b.scope,
    unit: b.unit,
    allocated: amt(b.allocated),
    remaining: amt(remainingOf(b)),
    reserved: amt(b.reserved),
    spent: amt(b.spent),
    debt: amt(b.debt),
    overdraft_limit: amt(b.overdraft_limit),
    is_over_limit: b.is_over_limit,
    commit_overage_policy: b.commit_overage_policy,
    status: b.status,
    rollover_policy: b.rollover_policy,
    period_start: iso(b.period_start),
    period_end: iso(b.period_end),
    created_at: iso(b.created_at),
    updated_at: iso(b.updated_at),
  });
}

export function apiKeyShape(k: ApiKeyRecord, now: number): Record<string, unknown> {
  // Expiry is a property of time, not a stored transition: report it as it is now.
  const status = k.status === 'ACTIVE' && k.expires_at <= now ? 'EXPIRED' : k.status;
  return compact({
    key_id: k.key_id,
    tenant_id: k.tenant_id,
    key_prefix: k.key_prefix,
    status,
    name: k.name,
    description: k.description,
    permissions: k.permissions,
    scope_filter: k.scope_filter,
    created_at: iso(k.created_at),
    expires_at: iso(k.expires_at),
    revoked_at: iso(k.revoked_at),
    revoked_reason: k.revoked_reason,
    last_used_at: iso(k.last_used_at),
    metadata: k.metadata,
  });
}

/** Policy on the wire (its owning tenant is not part of the shape). */
export function policyShape(p: PolicyRecord): Record<string, unknown> {
  return compact({
    policy_id: p.policy_id,
    name: p.name,
    description: p.description,
    scope_pattern: p.scope_pattern,
    priority: p.priority,
    caps: p.caps,
    commit_overage_policy: p.commit_overage_policy,
    reservation_ttl_override: p.reservation_ttl_override,
    rate_limits: p.rate_limits,
    status: p.status,
    effective_from: iso(p.effective_from),
    effective_until: iso(p.effective_until),
    created_at: iso(p.created_at),
    updated_at: iso(p.updated_at),
  });
}

export function auditShape(a: AuditRecord): Record<string, unknown> {
  return compact({
    log_id: a.log_id,
    timestamp: iso(a.timestamp),
    tenant_id: a.tenant_id,
    key_id: a.key_id,
    user_agent: a.user_agent,
    source_ip: a.source_ip,
    operation: a.operation,
    resource_type: a.resource_type,
    resource_id: a.resource_id,
    request_id: a.request_id,
    trace_id: a.trace_id,
    status: a.status,
    error_code: a.error_code,
    subject: a.subject,
    action: a.action,
    amount: a.amount,
    metadata: a.metadata,
  });
}
