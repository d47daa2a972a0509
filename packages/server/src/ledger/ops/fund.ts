import { CyclesError } from '../errors.js';
import { checked } from '../math.js';
import { remainingOf, type BudgetRecord } from '../types.js';
import type { LedgerView } from '../view.js';
import type { Unit } from '../amounts.js';
import type { OpContext } from '../../events/model.js';
import { findReplay, idempotencyHorizon, record, replayed, tenantClosed, tenantGuard, type OpResult } from './shared.js';

export type FundingOperation = 'CREDIT' | 'DEBIT' | 'RESET' | 'RESET_SPENT' | 'REPAY_DEBT';

export interface FundingCommand {
  ctx: OpContext;
  tenantId: string;
  scope: string;
  unit: Unit;
  operation: FundingOperation;
  amount: number;
  spent?: number | undefined;
  idempotencyKey?: string | undefined;
  hash: string;
}

/**
 * Applies a funding operation to one ledger. Every operation recomputes is_over_limit from
 * debt and overdraft_limit, which is how operators reconcile an over-limit scope.
 */
export function fund(view: LedgerView, cmd: FundingCommand): OpResult {
  const key = cmd.idempotencyKey;
  if (key) {
    const prior = findReplay(view, cmd.tenantId, 'fund', key, cmd.hash);
    if (prior) return replayed(prior);
  }
  if (tenantGuard(view.tenant(cmd.tenantId), cmd.tenantId) === 'CLOSED') throw tenantClosed(cmd.tenantId);
  const b = view.budgets(cmd.tenantId, [cmd.scope]).find((x) => x.unit === cmd.unit);
  if (!b) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${cmd.scope} (${cmd.unit})`, { scope: cmd.scope, unit: cmd.unit });
  if (b.status === 'FROZEN') throw new CyclesError('BUDGET_FROZEN', `Budget ${cmd.scope} (${cmd.unit}) is frozen`);
  if (b.status === 'CLOSED') throw new CyclesError('BUDGET_CLOSED', `Budget ${cmd.scope} (${cmd.unit}) is closed`);

  const a = cmd.amount;
  const n: BudgetRecord = { ...b, updated_at: view.now };
  switch (cmd.operation) {
    case 'CREDIT':
      n.allocated = checked(b.allocated + a, b.scope);
      break;
    case 'DEBIT':
      if (remainingOf(b) < a) {
        throw new CyclesError('BUDGET_EXCEEDED', `Cannot debit ${a}: remaining is ${remainingOf(b)} for ${b.scope}`, { scope: b.scope });
      }
      n.allocated = b.allocated - a;
      break;
    case 'RESET':
      n.allocated = a;
      break;
    case 'RESET_SPENT':
      n.allocated = a;
      n.spent = cmd.spent ?? 0;
      break;
    case 'REPAY_DEBT': {
      const repaid = Math.min(b.debt, a);
      n.debt = b.debt - repaid;
      n.allocated = checked(b.allocated + (a - repaid), b.scope);
      break;
    }
  }
  n.is_over_limit = n.debt > n.overdraft_limit;
  view.updateBudgets([n]);
  const u = b.unit;
  const amt = (v: number) => ({ unit: u, amount: v });
  const body = {
    operation: cmd.operation,
    previous_allocated: amt(b.allocated),
    new_allocated: amt(n.allocated),
    previous_remaining: amt(remainingOf(b)),
    new_remaining: amt(remainingOf(n)),
    previous_debt: amt(b.debt),
    new_debt: amt(n.debt),
    previous_spent: amt(b.spent),
    new_spent: amt(n.spent),
    timestamp: new Date(view.now).toISOString(),
  };
  if (!key) return { status: 200, body: JSON.stringify(body), replayed: false };
  return record(view, cmd.tenantId, 'fund', key, cmd.hash, 200, body, idempotencyHorizon(view.now));
}
