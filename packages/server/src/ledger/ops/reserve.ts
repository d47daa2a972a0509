import { randomHex } from '../../ids.js';
import type { Amount } from '../amounts.js';
import type { OpContext } from '../../events/model.js';
import { CyclesError } from '../errors.js';
import { applyHold, denialMessage, firstHoldDenial } from '../math.js';
import type { DerivedScopes, Subject } from '../scopes.js';
import type { Action, OveragePolicy, ReservationRecord } from '../types.js';
import type { LedgerView } from '../view.js';
import { budgetTransitions } from '../transitions.js';
import { remainingOf } from '../types.js';
import type { EventDraft } from '../../events/model.js';
import {
  DEFAULT_GRACE_MS,
  balanceOf,
  budgetNotFound,
  defaultOveragePolicy,
  effectiveCaps,
  governingPolicy,
  ttlLimits,
  findReplay,
  idempotencyHorizon,
  record,
  replayed,
  resolveBudgets,
  tenantClosed,
  tenantGuard,
  type OpResult,
} from './shared.js';

export interface ReserveRequest {
  idempotency_key: string;
  subject: Subject;
  action: Action;
  estimate: Amount;
  ttl_ms?: number;
  grace_period_ms?: number;
  overage_policy?: OveragePolicy;
  dry_run?: boolean;
  metadata?: Record<string, unknown>;
}

export interface ReserveCommand {
  ctx: OpContext;
  tenantId: string;
  request: ReserveRequest;
  scopes: DerivedScopes;
  hash: string;
}

/**
 * `rsv_` + 32 hex: the creation time in milliseconds (12 hex digits) and 80 random bits. Ids
 * that ascend with time are appended at the right edge of every B-tree keyed by them (the primary
 * key and the (tenant, ..., reservation_id) list indexes) instead of dirtying a random page of
 * each per insert, which is most of what an embedded commit group writes; the random part keeps
 * them unguessable and unique.
 */
export const newReservationId = (now: number): string => `rsv_${Math.max(0, Math.trunc(now)).toString(16).padStart(12, '0').slice(-12)}${randomHex(10)}`;

/** createReservation, live or dry-run, in one atomic step. */
export function reserve(view: LedgerView, cmd: ReserveCommand): OpResult {
  const { tenantId, request: req, scopes, hash } = cmd;
  const dry = req.dry_run === true;
  const prior = findReplay(view, tenantId, 'reserve', req.idempotency_key, hash);
  if (prior) return replayed(prior, withRecomputedTtl(view, prior.body));

  const deny = (reason: string, remaining?: number): OpResult => {
    view.emit(deniedEvent(tenantId, scopes.scopePath, req, reason, remaining), cmd.ctx);
    return record(view, tenantId, 'reserve', req.idempotency_key, hash, 200, {
      decision: 'DENY',
      reason_code: reason,
      scope_path: scopes.scopePath,
      affected_scopes: scopes.affectedScopes,
    }, idempotencyHorizon(view.now));
  };

  const tenant = view.tenant(tenantId);
  const guard = tenantGuard(tenant, tenantId);
  if (guard === 'CLOSED') {
    if (dry) return deny('TENANT_CLOSED');
    throw tenantClosed(tenantId);
  }
  if (guard === 'SUSPENDED') {
    if (dry) return deny('TENANT_SUSPENDED');
    throw new CyclesError('FORBIDDEN', `Tenant ${tenantId} is suspended; new reservations are blocked`, { tenant: tenantId });
  }

  const estimate = req.estimate.amount;
  const budgets = resolveBudgets(view, tenantId, scopes.affectedScopes, req.estimate.unit, scopes.scopePath);
  if (budgets === 'NOT_FOUND') {
    if (dry) return deny('BUDGET_NOT_FOUND');
    throw budgetNotFound(scopes.scopePath, req.subject.tenant !== undefined, tenantId);
  }
  const denial = firstHoldDenial(budgets, estimate);
  if (denial) {
    if (dry) return deny(denial.reason, remainingOf(denial.budget));
    throw new CyclesError(denial.reason, denialMessage(denial.reason, denial.budget.scope), { scope: denial.budget.scope });
  }

  // The governing policy (if any): caps, default overage policy, TTL limits.
  const policy = governingPolicy(view.policies(tenantId), scopes.scopePath, view.now);
  const caps = effectiveCaps(policy);
  const decision = caps ? 'ALLOW_WITH_CAPS' : 'ALLOW';

  if (dry) {
    return record(view, tenantId, 'reserve', req.idempotency_key, hash, 200, {
      decision,
      reserved: { unit: req.estimate.unit, amount: estimate },
      scope_path: scopes.scopePath,
      affected_scopes: scopes.affectedScopes,
      ...(caps ? { caps } : {}),
      balances: budgets.map(balanceOf),
    }, idempotencyHorizon(view.now));
  }

  const limits = ttlLimits(policy, tenant);
  const ttl = Math.min(req.ttl_ms ?? limits.defaultTtl, limits.maxTtl);
  const grace = req.grace_period_ms ?? DEFAULT_GRACE_MS;
  const now = view.now;
  const reservation: ReservationRecord = {
    reservation_id: newReservationId(now),
    tenant_id: tenantId,
    status: 'ACTIVE',
    subject: req.subject,
    action: req.action,
    unit: req.estimate.unit,
    reserved: estimate,
    scope_path: scopes.scopePath,
    affected_scopes: scopes.affectedScopes,
    budgeted_scopes: budgets.map((b) => b.scope),
    overage_policy: defaultOveragePolicy(req.overage_policy, policy, budgets, tenant),
    idempotency_key: req.idempotency_key,
    created_at_ms: now,
    expires_at_ms: now + ttl,
    ttl_ms: ttl,
    grace_period_ms: grace,
    max_extensions: limits.maxExtensions,
    extension_count: 0,
    metadata: req.metadata,
  };
  const held = applyHold(budgets, estimate, now);
  view.insertReservation(reservation);
  view.updateBudgets(held);
  for (const e of budgetTransitions(budgets, held, { reservationId: reservation.reservation_id })) view.emit(e, cmd.ctx);
  return record(
    view,
    tenantId,
    'reserve',
    req.idempotency_key,
    hash,
    200,
    {
      decision,
      reservation_id: reservation.reservation_id,
      reserved: { unit: reservation.unit, amount: estimate },
      expires_at_ms: reservation.expires_at_ms,
      remaining_ttl_ms: ttl,
      scope_path: scopes.scopePath,
      affected_scopes: scopes.affectedScopes,
      ...(caps ? { caps } : {}),
      balances: held.map(balanceOf),
    },
    idempotencyHorizon(now, reservation.expires_at_ms + grace),
    reservation.reservation_id,
  );
}

/**
 * remaining_ttl_ms is the one field a replay recomputes: max(0, expires_at_ms - now) from the
 * original expiry, and 0 once the reservation is no longer ACTIVE.
 */
export function withRecomputedTtl(view: LedgerView, body: string, reservationId?: string): string {
  const parsed = JSON.parse(body) as Record<string, unknown>;
  if (!('remaining_ttl_ms' in parsed)) return body;
  const id = reservationId ?? (parsed['reservation_id'] as string | undefined);
  const expiresAt = parsed['expires_at_ms'] as number;
  let active = true;
  if (id) active = view.reservation(id)?.status === 'ACTIVE';
  parsed['remaining_ttl_ms'] = active ? Math.max(0, expiresAt - view.now) : 0;
  return JSON.stringify(parsed);
}

/** reservation.denied for an evaluated (dry-run or decide) denial; live denials are errors and emit nothing. */
export function deniedEvent(
  tenantId: string,
  scopePath: string,
  req: { subject: object; action: object; estimate: { unit: string; amount: number } },
  reason: string,
  remaining?: number,
): EventDraft {
  const data: Record<string, unknown> = { scope: scopePath, unit: req.estimate.unit, reason_code: reason, requested_amount: req.estimate.amount };
  if (remaining !== undefined) data.remaining = remaining;
  data.action = req.action;
  data.subject = req.subject;
  return { event_type: 'reservation.denied', tenant_id: tenantId, scope: scopePath, data };
}
