/**
 * The governance events (spec EventData* payloads), built from the records before and after a
 * change. Written with view.emit inside the same atomic step as the change itself.
 */
import type { EventDraft } from '../../events/model.js';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import { remainingOf, type BudgetRecord, type TenantRecord, type TenantStatus } from '../../ledger/types.js';
import type { ApiKeyRecord } from '../types.js';

export const CASCADE_REASON = 'tenant_closed';

export const cascadeCorrelation = (tenantId: string, requestId: string | undefined): string =>
  `tenant_close_cascade:${tenantId}:${requestId ?? 'internal'}`;

export function tenantEvent(
  type: string,
  t: TenantRecord,
  previousStatus: TenantStatus | undefined,
  changedFields: string[],
  correlationId?: string,
): EventDraft {
  const data: Record<string, unknown> = { tenant_id: t.tenant_id };
  if (previousStatus !== undefined) data.previous_status = previousStatus;
  data.new_status = t.status;
  data.changed_fields = changedFields;
  return { event_type: type, tenant_id: t.tenant_id, scope: `tenant:${t.tenant_id}`, data, correlation_id: correlationId };
}

const ledgerState = (b: BudgetRecord) => ({
  allocated: b.allocated,
  remaining: remainingOf(b),
  debt: b.debt,
  spent: b.spent,
  reserved: b.reserved,
  status: b.status,
});

export type BudgetOperation = 'CREDIT' | 'DEBIT' | 'RESET' | 'RESET_SPENT' | 'REPAY_DEBT' | 'STATUS_CHANGE' | 'CREATE' | 'UPDATE';

export function budgetEvent(
  type: string,
  operation: BudgetOperation,
  before: BudgetRecord | undefined,
  after: BudgetRecord,
  extra: { reason?: string | undefined; spentOverride?: boolean | undefined; correlationId?: string | undefined } = {},
): EventDraft {
  const data: Record<string, unknown> = { ledger_id: after.ledger_id, scope: after.scope, unit: after.unit, operation };
  if (before) data.previous_state = ledgerState(before);
  data.new_state = ledgerState(after);
  if (extra.spentOverride !== undefined) data.spent_override_provided = extra.spentOverride;
  if (extra.reason !== undefined) data.reason = extra.reason;
  return { event_type: type, tenant_id: after.tenant_id, scope: after.scope, data, correlation_id: extra.correlationId };
}

/** Funding operation -> event type (fundBudget and bulkActionBudgets alike). */
export const FUNDING_EVENT: Record<string, string> = {
  CREDIT: 'budget.funded',
  DEBIT: 'budget.debited',
  RESET: 'budget.reset',
  RESET_SPENT: 'budget.reset_spent',
  REPAY_DEBT: 'budget.debt_repaid',
};

export function apiKeyEvent(type: string, k: ApiKeyRecord, previousStatus: ApiKeyRecord['status'] | undefined): EventDraft {
  const data: Record<string, unknown> = { key_id: k.key_id, key_name: k.name };
  if (previousStatus !== undefined) data.previous_status = previousStatus;
  data.new_status = k.status;
  data.permissions = k.permissions;
  return { event_type: type, tenant_id: k.tenant_id, data };
}

export function policyEvent(type: string, p: PolicyRecord, changedFields: string[]): EventDraft {
  return {
    event_type: type,
    tenant_id: p.tenant_id,
    scope: p.scope_pattern,
    data: { policy_id: p.policy_id, name: p.name, scope_pattern: p.scope_pattern, changed_fields: changedFields },
  };
}

/** One of the *_via_tenant_cascade events (EventDataTenantCascade). */
export function cascadeEvent(type: string, tenantId: string, data: Record<string, unknown>, correlationId: string, scope?: string): EventDraft {
  return { event_type: type, tenant_id: tenantId, scope, data: { ...data, cascade_reason: CASCADE_REASON }, correlation_id: correlationId };
}

/** Field names whose values differ (deep, via JSON) between two records. */
export function changedFields<T extends object>(before: T, after: T, fields: readonly (keyof T & string)[]): string[] {
  return fields.filter((f) => JSON.stringify(before[f] ?? null) !== JSON.stringify(after[f] ?? null));
}
