/** Funding with its events: the ledger's fund() plus the budget.* lifecycle event of the operation. */
import { fund, type FundingCommand } from '../../ledger/ops/fund.js';
import type { OpResult } from '../../ledger/ops/shared.js';
import { budgetTransitions } from '../../ledger/transitions.js';
import type { LedgerView } from '../../ledger/view.js';
import type { FundingNote } from '../types.js';
import { budgetEvent, FUNDING_EVENT } from './governance-events.js';

/** fundBudget with its budget.* event (and threshold / over-limit transitions) in the same step. */
export function fundWithEvents(view: LedgerView, cmd: FundingCommand & FundingNote): OpResult {
  const find = () => view.budgets(cmd.tenantId, [cmd.scope]).find((b) => b.unit === cmd.unit);
  const before = find();
  const result = fund(view, cmd);
  if (result.replayed || !before) return result;
  const after = find()!;
  view.emit(
    budgetEvent(FUNDING_EVENT[cmd.operation]!, cmd.operation, before, after, {
      reason: cmd.reason,
      spentOverride: cmd.operation === 'RESET_SPENT' ? cmd.spent !== undefined : undefined,
      correlationId: cmd.correlationId,
    }),
    cmd.ctx,
  );
  for (const e of budgetTransitions([before], [after])) view.emit({ ...e, correlation_id: cmd.correlationId }, cmd.ctx);
  return result;
}
