import { randomHex } from '../../ids.js';
import type { Amount } from '../amounts.js';
import type { OpContext } from '../../events/model.js';
import { CyclesError } from '../errors.js';
import { chargeUnheld } from '../math.js';
import type { DerivedScopes, Subject } from '../scopes.js';
import type { Action, OveragePolicy } from '../types.js';
import type { LedgerView } from '../view.js';
import { budgetTransitions } from '../transitions.js';
import {
  balanceOf,
  budgetNotFound,
  findReplay,
  idempotencyHorizon,
  record,
  replayed,
  resolveBudgets,
  tenantClosed,
  tenantGuard,
  type OpResult,
} from './shared.js';

export interface EventRequest {
  idempotency_key: string;
  subject: Subject;
  action: Action;
  actual: Amount;
  overage_policy?: OveragePolicy;
  metrics?: Record<string, unknown>;
  client_time_ms?: number;
  metadata?: Record<string, unknown>;
}

export interface EventCommand {
  ctx: OpContext;
  tenantId: string;
  request: EventRequest;
  scopes: DerivedScopes;
  hash: string;
}

export const newEventId = (): string => `evt_${randomHex(16)}`;

/**
 * createEvent: direct debit without a reservation, applied atomically to every budgeted
 * derived scope. Unlike a reservation it does not consult is_over_limit or debt: the usage
 * already happened and must be recorded.
 */
export function createEvent(view: LedgerView, cmd: EventCommand): OpResult {
  const { tenantId, request: req, scopes, hash } = cmd;
  const prior = findReplay(view, tenantId, 'event', req.idempotency_key, hash);
  if (prior) return replayed(prior);
  const tenant = view.tenant(tenantId);
  if (tenantGuard(tenant, tenantId) === 'CLOSED') throw tenantClosed(tenantId);

  const budgets = resolveBudgets(view, tenantId, scopes.affectedScopes, req.actual.unit, scopes.scopePath);
  if (budgets === 'NOT_FOUND') throw budgetNotFound(scopes.scopePath, req.subject.tenant !== undefined, tenantId);
  for (const b of budgets) {
    if (b.status === 'FROZEN') throw new CyclesError('BUDGET_FROZEN', `Budget is frozen for scope ${b.scope}`, { scope: b.scope });
    if (b.status === 'CLOSED') throw new CyclesError('BUDGET_CLOSED', `Budget is closed for scope ${b.scope}`, { scope: b.scope });
  }
  const policy = req.overage_policy ?? tenant?.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE';
  const s = chargeUnheld(budgets, req.actual.amount, policy, view.now, (scope) => `Insufficient remaining budget for scope ${scope}`);
  view.updateBudgets(s.budgets);
  const eventId = newEventId();
  for (const e of budgetTransitions(budgets, s.budgets, { overagePolicy: policy })) view.emit(e, cmd.ctx);
  const body: Record<string, unknown> = { status: 'APPLIED', event_id: eventId };
  if (s.charged < req.actual.amount) body['charged'] = { unit: req.actual.unit, amount: s.charged };
  body['balances'] = s.budgets.map(balanceOf);
  return record(view, tenantId, 'event', req.idempotency_key, hash, 201, body, idempotencyHorizon(view.now));
}
