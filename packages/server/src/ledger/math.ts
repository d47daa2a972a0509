/**
 * The ledger rules of the Cycles protocol as pure functions over budget records.
 * Every TypeScript backend applies these; the Redis backend mirrors them in Lua and a
 * differential test keeps the two equal. Each function either throws a CyclesError
 * before computing anything, or returns the complete new state: check first, then apply.
 */
import { MAX_AMOUNT } from './amounts.js';
import { CyclesError } from './errors.js';
import { remainingOf, type BudgetRecord, type OveragePolicy } from './types.js';

/** Reason a budget refuses a new hold, in the order the checks run. */
export type HoldDenial = 'BUDGET_FROZEN' | 'BUDGET_CLOSED' | 'OVERDRAFT_LIMIT_EXCEEDED' | 'DEBT_OUTSTANDING' | 'BUDGET_EXCEEDED';

/**
 * Checks whether a budget can take a new hold of `estimate`.
 * is_over_limit outranks debt; debt blocks only when no overdraft is permitted.
 */
export function holdDenial(b: BudgetRecord, estimate: number): HoldDenial | undefined {
  if (b.status === 'FROZEN') return 'BUDGET_FROZEN';
  if (b.status === 'CLOSED') return 'BUDGET_CLOSED';
  if (b.is_over_limit) return 'OVERDRAFT_LIMIT_EXCEEDED';
  if (b.debt > 0 && b.overdraft_limit === 0) return 'DEBT_OUTSTANDING';
  if (remainingOf(b) < estimate) return 'BUDGET_EXCEEDED';
  return undefined;
}

export function denialMessage(reason: HoldDenial, scope: string): string {
  switch (reason) {
    case 'BUDGET_FROZEN':
      return `Budget is frozen for scope ${scope}`;
    case 'BUDGET_CLOSED':
      return `Budget is closed for scope ${scope}`;
    case 'OVERDRAFT_LIMIT_EXCEEDED':
      return `Scope ${scope} is over its overdraft limit; new reservations are blocked until it is reconciled`;
    case 'DEBT_OUTSTANDING':
      return `Scope ${scope} has outstanding debt; repay it before new reservations`;
    case 'BUDGET_EXCEEDED':
      return `Insufficient remaining budget for scope ${scope}`;
  }
}

/** First denial across budgets in canonical order, or undefined when every budget admits the hold. */
export function firstHoldDenial(budgets: BudgetRecord[], estimate: number): { reason: HoldDenial; budget: BudgetRecord } | undefined {
  for (const b of budgets) {
    const reason = holdDenial(b, estimate);
    if (reason) return { reason, budget: b };
  }
  return undefined;
}

export function applyHold(budgets: BudgetRecord[], estimate: number, now: number): BudgetRecord[] {
  return budgets.map((b) => ({ ...b, reserved: checked(b.reserved + estimate, b.scope), updated_at: now }));
}

export function applyReleaseHold(budgets: BudgetRecord[], held: number, now: number): BudgetRecord[] {
  return budgets.map((b) => ({ ...b, reserved: Math.max(0, b.reserved - held), updated_at: now }));
}

export interface Settlement {
  budgets: BudgetRecord[];
  /** What was charged (spent + debt added) on every scope. */
  charged: number;
  /** Total debt created across scopes by this settlement (per scope it is the same or zero). */
  debtIncurred: number;
  /** Per-scope debt created, for debt_incurred events. */
  debtByScope: Map<string, number>;
}

/**
 * Charges `amount` against budgets that have no hold for it (the overage part of a commit,
 * or a whole direct-debit event), following the overage policy:
 *  - REJECT: refuses when any scope's remaining cannot cover it.
 *  - ALLOW_IF_AVAILABLE: caps the charge at the smallest max(remaining, 0) and marks the scopes
 *    that could not cover it as over limit. Never creates debt, never refuses.
 *  - ALLOW_WITH_OVERDRAFT: scopes without an overdraft limit cap the charge as above; scopes with
 *    a limit fund what remaining covers and carry the shortfall as debt, refusing when that debt
 *    would exceed the limit.
 * `rejectMessage` lets commit and event word the REJECT refusal their own way.
 */
export function chargeUnheld(
  budgets: BudgetRecord[],
  amount: number,
  policy: OveragePolicy,
  now: number,
  rejectMessage: (scope: string) => string,
): Settlement {
  const debtByScope = new Map<string, number>();
  if (amount === 0 || budgets.length === 0) {
    return { budgets: budgets.map((b) => ({ ...b })), charged: amount, debtIncurred: 0, debtByScope };
  }
  if (policy === 'REJECT') {
    for (const b of budgets) {
      if (remainingOf(b) < amount) throw new CyclesError('BUDGET_EXCEEDED', rejectMessage(b.scope), { scope: b.scope });
    }
    return {
      budgets: budgets.map((b) => ({ ...b, spent: checked(b.spent + amount, b.scope), updated_at: now })),
      charged: amount,
      debtIncurred: 0,
      debtByScope,
    };
  }
  // Scopes that may not go into debt cap what can be charged at all.
  const capping = policy === 'ALLOW_IF_AVAILABLE' ? budgets : budgets.filter((b) => b.overdraft_limit === 0);
  let capped = amount;
  for (const b of capping) capped = Math.min(capped, Math.max(remainingOf(b), 0));

  // Overdraft scopes: refuse before mutating anything if the shortfall would exceed the limit.
  if (policy === 'ALLOW_WITH_OVERDRAFT') {
    for (const b of budgets) {
      if (b.overdraft_limit === 0) continue;
      const deficit = capped - Math.max(remainingOf(b), 0);
      if (deficit > 0 && b.debt + deficit > b.overdraft_limit) {
        throw new CyclesError(
          'OVERDRAFT_LIMIT_EXCEEDED',
          `Overdraft limit exceeded for scope ${b.scope}: debt ${b.debt} + shortfall ${deficit} > limit ${b.overdraft_limit}`,
          { scope: b.scope, debt: b.debt, shortfall: deficit, overdraft_limit: b.overdraft_limit },
        );
      }
    }
  }
  let debtIncurred = 0;
  const next = budgets.map((b) => {
    const remaining = remainingOf(b);
    const funded = Math.min(capped, Math.max(remaining, 0));
    const deficit = capped - funded;
    const n: BudgetRecord = { ...b, updated_at: now };
    n.spent = checked(b.spent + funded, b.scope);
    if (deficit > 0) {
      // Only overdraft scopes can reach here: capping scopes have remaining >= capped.
      n.debt = checked(b.debt + deficit, b.scope);
      debtByScope.set(b.scope, deficit);
      debtIncurred = Math.max(debtIncurred, deficit);
      if (n.debt > n.overdraft_limit) n.is_over_limit = true;
    }
    // A capped charge leaves the uncovered part unaccounted: block new holds until reconciled.
    if (capped < amount && remaining < amount && (policy === 'ALLOW_IF_AVAILABLE' || b.overdraft_limit === 0)) {
      n.is_over_limit = true;
    }
    return n;
  });
  return { budgets: next, charged: capped, debtIncurred, debtByScope };
}

/** Guards every ledger field against leaving the exactly representable range. */
export function checked(v: number, scope: string): number {
  if (v > MAX_AMOUNT || v < -MAX_AMOUNT) {
    throw new CyclesError('INVALID_REQUEST', `Ledger amount for scope ${scope} would exceed ${MAX_AMOUNT}`, { scope });
  }
  return v;
}
