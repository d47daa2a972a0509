/**
 * Budget events come from state transitions, never from state: "exhausted" fires when a
 * budget becomes exhausted, not on every later call. Operations compare each budget before
 * and after their change and emit what crossed, in the same atomic step.
 */
import type { EventDraft } from '../events/model.js';
import { remainingOf, type BudgetRecord } from './types.js';

/** Utilization thresholds reported as budget.threshold_crossed (1.0 is budget.exhausted). */
export const UTILIZATION_THRESHOLDS = [0.8, 0.95] as const;

const utilization = (b: BudgetRecord): number => (b.allocated > 0 ? (b.spent + b.reserved) / b.allocated : b.spent + b.reserved > 0 ? 1 : 0);

function thresholdData(b: BudgetRecord, threshold: number): Record<string, unknown> {
  return {
    scope: b.scope,
    unit: b.unit,
    threshold,
    utilization: Math.round(utilization(b) * 10_000) / 10_000,
    allocated: b.allocated,
    remaining: remainingOf(b),
    spent: b.spent,
    reserved: b.reserved,
    direction: 'rising',
  };
}

export function overLimitData(b: BudgetRecord): Record<string, unknown> {
  return {
    scope: b.scope,
    unit: b.unit,
    debt: b.debt,
    overdraft_limit: b.overdraft_limit,
    is_over_limit: b.is_over_limit,
    debt_utilization: b.overdraft_limit > 0 ? Math.round((b.debt / b.overdraft_limit) * 10_000) / 10_000 : b.debt > 0 ? 1 : 0,
  };
}

export interface TransitionContext {
  reservationId?: string | undefined;
  overagePolicy?: string | undefined;
}

/** Events for every budget whose state crossed a boundary between `before` and `after` (matched by scope). */
export function budgetTransitions(before: readonly BudgetRecord[], after: readonly BudgetRecord[], extra: TransitionContext = {}): EventDraft[] {
  const prior = new Map(before.map((b) => [`${b.scope}|${b.unit}`, b]));
  const out: EventDraft[] = [];
  for (const b of after) {
    const p = prior.get(`${b.scope}|${b.unit}`);
    if (!p) continue;
    const base = { tenant_id: b.tenant_id, scope: b.scope };
    const u0 = utilization(p);
    const u1 = utilization(b);
    for (const t of UTILIZATION_THRESHOLDS) {
      if (u0 < t && u1 >= t) out.push({ ...base, event_type: 'budget.threshold_crossed', data: thresholdData(b, t) });
    }
    if (remainingOf(p) > 0 && remainingOf(b) <= 0) out.push({ ...base, event_type: 'budget.exhausted', data: thresholdData(b, 1) });
    if (!p.is_over_limit && b.is_over_limit) out.push({ ...base, event_type: 'budget.over_limit_entered', data: overLimitData(b) });
    if (p.is_over_limit && !b.is_over_limit) out.push({ ...base, event_type: 'budget.over_limit_exited', data: overLimitData(b) });
    if (b.debt > p.debt) {
      const data: Record<string, unknown> = { scope: b.scope, unit: b.unit };
      if (extra.reservationId) data.reservation_id = extra.reservationId;
      data.debt_incurred = b.debt - p.debt;
      data.total_debt = b.debt;
      data.overdraft_limit = b.overdraft_limit;
      if (extra.overagePolicy) data.overage_policy = extra.overagePolicy;
      out.push({ ...base, event_type: 'budget.debt_incurred', data });
    }
  }
  return out;
}
