/** commit, release and extend: the operations on an existing reservation. */
import type { Amount } from '../amounts.js';
import { SYSTEM_CONTEXT, type OpContext } from '../../events/model.js';
import { budgetTransitions } from '../transitions.js';
import { CyclesError } from '../errors.js';
import { applyReleaseHold, chargeUnheld } from '../math.js';
import type { BudgetRecord, ReservationRecord } from '../types.js';
import type { LedgerView } from '../view.js';
import { withRecomputedTtl } from './reserve.js';
import {
  DEFAULT_MAX_TTL_MS,
  balanceOf,
  findReplay,
  idempotencyHorizon,
  record,
  replayed,
  tenantClosed,
  tenantGuard,
  type OpResult,
} from './shared.js';

export interface ReservationCommand<R> {
  ctx: OpContext;
  reservationId: string;
  /** The caller's effective tenant; undefined for the admin key (acting on behalf of the owner). */
  callerTenant: string | undefined;
  request: R;
  hash: string;
}

type Endpoint = 'commit' | 'release' | 'extend';

interface Opened {
  r: ReservationRecord;
  prior?: OpResult;
}

/**
 * The common preamble: existence (404), ownership (403), same-key replay, closed tenant (409,
 * ahead of every state error), then the reservation's own state.
 */
function open(view: LedgerView, endpoint: Endpoint, cmd: ReservationCommand<{ idempotency_key: string }>): Opened {
  const r = view.reservation(cmd.reservationId);
  if (!r) throw new CyclesError('NOT_FOUND', `Reservation ${cmd.reservationId} not found`, { reservation_id: cmd.reservationId });
  if (cmd.callerTenant !== undefined && r.tenant_id !== cmd.callerTenant) {
    throw new CyclesError('FORBIDDEN', `Reservation ${cmd.reservationId} belongs to another tenant`);
  }
  const prior = findReplay(view, r.tenant_id, endpoint, cmd.request.idempotency_key, cmd.hash);
  if (prior) {
    return { r, prior: replayed(prior, endpoint === 'extend' ? withRecomputedTtl(view, prior.body, r.reservation_id) : prior.body) };
  }
  if (tenantGuard(view.tenant(r.tenant_id), r.tenant_id) === 'CLOSED') throw tenantClosed(r.tenant_id);
  if (r.status === 'EXPIRED') {
    throw new CyclesError('RESERVATION_EXPIRED', `Reservation ${r.reservation_id} has expired`, { reservation_id: r.reservation_id });
  }
  if (r.status !== 'ACTIVE') {
    throw new CyclesError('RESERVATION_FINALIZED', `Reservation ${r.reservation_id} is already ${r.status}`, {
      reservation_id: r.reservation_id,
      status: r.status,
    });
  }
  // Grace covers commit and release, never extend.
  const deadline = endpoint === 'extend' ? r.expires_at_ms : r.expires_at_ms + r.grace_period_ms;
  if (view.now > deadline) {
    throw new CyclesError('RESERVATION_EXPIRED', `Reservation ${r.reservation_id} has expired`, { reservation_id: r.reservation_id });
  }
  return { r };
}

function heldBudgets(view: LedgerView, r: ReservationRecord): BudgetRecord[] {
  const order = new Map(r.budgeted_scopes.map((s, i) => [s, i]));
  return view
    .budgets(r.tenant_id, r.budgeted_scopes)
    .filter((b) => b.unit === r.unit)
    .sort((a, b) => order.get(a.scope)! - order.get(b.scope)!);
}

export interface CommitRequest {
  idempotency_key: string;
  actual: Amount;
  metrics?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

export function commit(view: LedgerView, cmd: ReservationCommand<CommitRequest>): OpResult {
  const { r, prior } = open(view, 'commit', cmd);
  if (prior) return prior;
  const req = cmd.request;
  if (req.actual.unit !== r.unit) {
    throw new CyclesError('UNIT_MISMATCH', `actual.unit ${req.actual.unit} differs from the reservation's unit ${r.unit}`, {
      scope: r.scope_path,
      requested_unit: req.actual.unit,
      expected_units: [r.unit],
    });
  }
  const budgets = heldBudgets(view, r);
  for (const b of budgets) {
    if (b.status === 'FROZEN') throw new CyclesError('BUDGET_FROZEN', `Budget is frozen for scope ${b.scope}`, { scope: b.scope });
    if (b.status === 'CLOSED') throw new CyclesError('BUDGET_CLOSED', `Budget is closed for scope ${b.scope}`, { scope: b.scope });
  }
  const actual = req.actual.amount;
  const delta = actual - r.reserved;
  if (delta > 0 && r.overage_policy === 'REJECT') {
    throw new CyclesError('BUDGET_EXCEEDED', `Actual ${actual} exceeds the reserved ${r.reserved} and the overage policy is REJECT`, {
      reserved: r.reserved,
      actual,
    });
  }
  const now = view.now;
  // The hold becomes spend (up to the actual); the part of the hold not used returns to remaining.
  const base = applyReleaseHold(budgets, r.reserved, now).map((b) => ({ ...b, spent: b.spent + Math.min(actual, r.reserved) }));
  let settled = base;
  let charged = Math.min(actual, r.reserved);
  let debtIncurred = 0;
  if (delta > 0) {
    const s = chargeUnheld(base, delta, r.overage_policy, now, (scope) => `Insufficient remaining budget for scope ${scope}`);
    settled = s.budgets;
    charged += s.charged;
    debtIncurred = s.debtIncurred;
  }
  view.updateBudgets(settled);
  for (const e of budgetTransitions(budgets, settled, { reservationId: r.reservation_id, overagePolicy: r.overage_policy })) view.emit(e, cmd.ctx);
  if (delta > 0) {
    view.emit(
      {
        event_type: 'reservation.commit_overage',
        tenant_id: r.tenant_id,
        scope: r.scope_path,
        data: {
          reservation_id: r.reservation_id,
          scope: r.scope_path,
          unit: r.unit,
          estimated_amount: r.reserved,
          actual_amount: actual,
          overage: delta,
          overage_policy: r.overage_policy,
          debt_incurred: debtIncurred,
        },
      },
      cmd.ctx,
    );
  }
  view.updateReservation({
    ...r,
    status: 'COMMITTED',
    committed: charged,
    committed_metadata: req.metadata,
    metrics: req.metrics,
    debt_incurred: debtIncurred,
    finalized_at_ms: now,
  });
  const body: Record<string, unknown> = { status: 'COMMITTED', charged: { unit: r.unit, amount: charged } };
  if (actual < r.reserved) body['released'] = { unit: r.unit, amount: r.reserved - actual };
  body['balances'] = settled.map(balanceOf);
  return record(view, r.tenant_id, 'commit', req.idempotency_key, cmd.hash, 200, body, idempotencyHorizon(now), r.reservation_id);
}

export interface ReleaseRequest {
  idempotency_key: string;
  reason?: string;
}

export function release(view: LedgerView, cmd: ReservationCommand<ReleaseRequest>): OpResult {
  const { r, prior } = open(view, 'release', cmd);
  if (prior) return prior;
  const now = view.now;
  const budgets = applyReleaseHold(heldBudgets(view, r), r.reserved, now);
  view.updateBudgets(budgets);
  view.updateReservation({ ...r, status: 'RELEASED', finalized_at_ms: now });
  const body = { status: 'RELEASED', released: { unit: r.unit, amount: r.reserved }, balances: budgets.map(balanceOf) };
  return record(view, r.tenant_id, 'release', cmd.request.idempotency_key, cmd.hash, 200, body, idempotencyHorizon(now), r.reservation_id);
}

export interface ExtendRequest {
  idempotency_key: string;
  extend_by_ms: number;
  metadata?: Record<string, unknown>;
}

export function extend(view: LedgerView, cmd: ReservationCommand<ExtendRequest>): OpResult {
  const { r, prior } = open(view, 'extend', cmd);
  if (prior) return prior;
  if (r.extension_count >= r.max_extensions) {
    throw new CyclesError('MAX_EXTENSIONS_EXCEEDED', `Reservation ${r.reservation_id} reached its limit of ${r.max_extensions} extensions`, {
      max_extensions: r.max_extensions,
    });
  }
  const now = view.now;
  // New expiry counts from the current expiry, not from now; the tenant's max TTL bounds the lead.
  const maxTtl = view.tenant(r.tenant_id)?.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS;
  const expiresAt = Math.max(r.expires_at_ms, Math.min(r.expires_at_ms + cmd.request.extend_by_ms, now + maxTtl));
  view.updateReservation({ ...r, expires_at_ms: expiresAt, extension_count: r.extension_count + 1 });
  const body = {
    status: 'ACTIVE',
    expires_at_ms: expiresAt,
    remaining_ttl_ms: Math.max(0, expiresAt - now),
    balances: heldBudgets(view, r).map(balanceOf),
  };
  return record(view, r.tenant_id, 'extend', cmd.request.idempotency_key, cmd.hash, 200, body, idempotencyHorizon(now, expiresAt), r.reservation_id);
}

/**
 * Expires one reservation whose TTL and grace have passed, returning its hold to every scope.
 * Returns false (and changes nothing) when it is not due or no longer ACTIVE.
 */
export function expire(view: LedgerView, reservationId: string, ctx: OpContext = SYSTEM_CONTEXT): boolean {
  const r = view.reservation(reservationId);
  if (!r || r.status !== 'ACTIVE' || view.now <= r.expires_at_ms + r.grace_period_ms) return false;
  view.updateBudgets(applyReleaseHold(heldBudgets(view, r), r.reserved, view.now));
  view.updateReservation({ ...r, status: 'EXPIRED', expired_at_ms: view.now });
  view.emit(
    {
      event_type: 'reservation.expired',
      tenant_id: r.tenant_id,
      scope: r.scope_path,
      data: {
        reservation_id: r.reservation_id,
        scope: r.scope_path,
        unit: r.unit,
        estimated_amount: r.reserved,
        created_at: new Date(r.created_at_ms).toISOString(),
        expired_at: new Date(view.now).toISOString(),
        ttl_ms: r.ttl_ms,
        extensions_used: r.extension_count,
      },
    },
    ctx,
  );
  return true;
}
