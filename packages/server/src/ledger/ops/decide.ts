import type { Amount } from '../amounts.js';
import type { OpContext } from '../../events/model.js';
import { firstHoldDenial } from '../math.js';
import type { DerivedScopes, Subject } from '../scopes.js';
import type { Action } from '../types.js';
import type { LedgerView } from '../view.js';
import { deniedEvent } from './reserve.js';
import { remainingOf } from '../types.js';
import { effectiveCaps, findReplay, governingPolicy, idempotencyHorizon, record, replayed, resolveBudgets, tenantGuard, type OpResult } from './shared.js';

export interface DecideRequest {
  idempotency_key: string;
  subject: Subject;
  action: Action;
  estimate: Amount;
  metadata?: Record<string, unknown>;
}

export interface DecideCommand {
  ctx: OpContext;
  tenantId: string;
  request: DecideRequest;
  scopes: DerivedScopes;
  hash: string;
}

/**
 * decide evaluates a reservation without taking it. Budget state never yields a 4xx here:
 * it becomes 200 DENY with a reason code. Only a wrong unit (a request error) is a 400.
 */
export function decide(view: LedgerView, cmd: DecideCommand): OpResult {
  const { tenantId, request: req, scopes, hash } = cmd;
  const prior = findReplay(view, tenantId, 'decide', req.idempotency_key, hash);
  if (prior) return replayed(prior);

  const answer = (body: Record<string, unknown>, remaining?: number): OpResult => {
    if (body.decision === 'DENY') view.emit(deniedEvent(tenantId, scopes.scopePath, req, body.reason_code as string, remaining), cmd.ctx);
    return record(view, tenantId, 'decide', req.idempotency_key, hash, 200, { ...body, affected_scopes: scopes.affectedScopes }, idempotencyHorizon(view.now));
  };

  const guard = tenantGuard(view.tenant(tenantId), tenantId);
  if (guard === 'CLOSED') return answer({ decision: 'DENY', reason_code: 'TENANT_CLOSED' });
  if (guard === 'SUSPENDED') return answer({ decision: 'DENY', reason_code: 'TENANT_SUSPENDED' });

  const budgets = resolveBudgets(view, tenantId, scopes.affectedScopes, req.estimate.unit, scopes.scopePath);
  if (budgets === 'NOT_FOUND') return answer({ decision: 'DENY', reason_code: 'BUDGET_NOT_FOUND' });
  const denial = firstHoldDenial(budgets, req.estimate.amount);
  if (denial) return answer({ decision: 'DENY', reason_code: denial.reason }, remainingOf(denial.budget));
  const caps = effectiveCaps(governingPolicy(view.policies(tenantId), scopes.scopePath, view.now));
  return answer(caps ? { decision: 'ALLOW_WITH_CAPS', caps } : { decision: 'ALLOW' });
}
