/**
 * Scripts abort with a code and parameters ({'ERR', code, ...}); this turns each into the very
 * CyclesError (code, message, details) the TypeScript ledger throws at the same point.
 */
import { MAX_AMOUNT } from '../../ledger/amounts.js';
import { CyclesError, type ErrorCode } from '../../ledger/errors.js';
import { denialMessage, type HoldDenial } from '../../ledger/math.js';
import { budgetNotFound, tenantClosed } from '../../ledger/ops/shared.js';

export interface ErrorContext {
  tenantId?: string | undefined;
  reservationId?: string | undefined;
  scopePath?: string | undefined;
  unit?: string | undefined;
  subjectHasTenant?: boolean | undefined;
  /** Budget addressed by a funding operation. */
  scope?: string | undefined;
}

export function scriptError(params: readonly string[], c: ErrorContext): CyclesError {
  const [code, a = '', b = '', d = '', e = ''] = params;
  const id = c.reservationId ?? '';
  const tenant = c.tenantId ?? '';
  switch (code) {
    case 'IDEM_MISMATCH':
      return new CyclesError('IDEMPOTENCY_MISMATCH', `Idempotency key "${a}" was already used with a different request payload`, { idempotency_key: a });
    case 'TENANT_STATUS':
      return new CyclesError('INTERNAL_ERROR', `Tenant ${tenant} has an undeterminable status`);
    case 'TENANT_CLOSED':
      return tenantClosed(tenant);
    case 'TENANT_SUSPENDED':
      return new CyclesError('FORBIDDEN', `Tenant ${tenant} is suspended; new reservations are blocked`, { tenant });
    case 'BUDGET_NOT_FOUND':
      return budgetNotFound(c.scopePath ?? '', c.subjectHasTenant === true, tenant);
    case 'UNIT_MISMATCH': {
      const expected = b.split(',');
      return new CyclesError('UNIT_MISMATCH', `No budget in unit ${c.unit} for scope ${c.scopePath}; budgets at ${a} use ${expected.join(', ')}`, {
        scope: a,
        requested_unit: c.unit,
        expected_units: expected,
      });
    }
    case 'HOLD_DENIED':
      return new CyclesError(a as ErrorCode, denialMessage(a as HoldDenial, b), { scope: b });
    case 'CHECKED':
      return new CyclesError('INVALID_REQUEST', `Ledger amount for scope ${a} would exceed ${MAX_AMOUNT}`, { scope: a });
    case 'RSV_NOT_FOUND':
      return new CyclesError('NOT_FOUND', `Reservation ${id} not found`, { reservation_id: id });
    case 'RSV_FORBIDDEN':
      return new CyclesError('FORBIDDEN', `Reservation ${id} belongs to another tenant`);
    case 'RSV_EXPIRED':
      return new CyclesError('RESERVATION_EXPIRED', `Reservation ${id} has expired`, { reservation_id: id });
    case 'RSV_FINALIZED':
      return new CyclesError('RESERVATION_FINALIZED', `Reservation ${id} is already ${a}`, { reservation_id: id, status: a });
    case 'COMMIT_UNIT':
      return new CyclesError('UNIT_MISMATCH', `actual.unit ${a} differs from the reservation's unit ${b}`, { scope: d, requested_unit: a, expected_units: [b] });
    case 'BUDGET_FROZEN':
      return new CyclesError('BUDGET_FROZEN', `Budget is frozen for scope ${a}`, { scope: a });
    case 'BUDGET_CLOSED':
      return new CyclesError('BUDGET_CLOSED', `Budget is closed for scope ${a}`, { scope: a });
    case 'COMMIT_REJECT':
      return new CyclesError('BUDGET_EXCEEDED', `Actual ${b} exceeds the reserved ${a} and the overage policy is REJECT`, { reserved: Number(a), actual: Number(b) });
    case 'REJECT_INSUFFICIENT':
      return new CyclesError('BUDGET_EXCEEDED', `Insufficient remaining budget for scope ${a}`, { scope: a });
    case 'OVERDRAFT':
      return new CyclesError('OVERDRAFT_LIMIT_EXCEEDED', `Overdraft limit exceeded for scope ${a}: debt ${b} + shortfall ${d} > limit ${e}`, {
        scope: a,
        debt: Number(b),
        shortfall: Number(d),
        overdraft_limit: Number(e),
      });
    case 'MAX_EXTENSIONS':
      return new CyclesError('MAX_EXTENSIONS_EXCEEDED', `Reservation ${id} reached its limit of ${a} extensions`, { max_extensions: Number(a) });
    case 'FUND_NOT_FOUND':
      return new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${c.scope} (${c.unit})`, { scope: c.scope, unit: c.unit });
    case 'FUND_FROZEN':
      return new CyclesError('BUDGET_FROZEN', `Budget ${c.scope} (${c.unit}) is frozen`);
    case 'FUND_CLOSED':
      return new CyclesError('BUDGET_CLOSED', `Budget ${c.scope} (${c.unit}) is closed`);
    case 'FUND_DEBIT':
      return new CyclesError('BUDGET_EXCEEDED', `Cannot debit ${a}: remaining is ${b} for ${c.scope}`, { scope: c.scope });
    default:
      return new CyclesError('INTERNAL_ERROR', `Unexpected store reply ${String(code)}`);
  }
}
