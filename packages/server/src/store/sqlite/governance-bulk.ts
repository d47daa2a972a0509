/**
 * Bulk actions (spec bulkActionTenants / bulkActionBudgets), synchronous and in one transaction:
 * replay -> count -> 500 cap -> expected_count -> apply every row. A row failure never aborts the
 * batch: each row runs in its own savepoint and lands in succeeded, skipped or failed. The reply
 * is kept 15 minutes under the idempotency key and replayed byte for byte.
 */
import type { LedgerView } from '../../ledger/view.js';
import { CyclesError } from '../../ledger/errors.js';
import { findReplay, record, replayed, type OpResult } from '../../ledger/ops/shared.js';
import type { TenantRecord } from '../../ledger/types.js';
import type { BudgetBulkCommand, BulkRow, TenantBulkCommand, TenantChange } from '../types.js';
import type { CascadeAccess } from './governance-cascade.js';
import { fundWithEvents } from './governance-fund.js';
import { budgetFromRow, tenantFromRow } from './rows.js';
import { ledgerWhere, Where, type Row } from './governance-sql.js';

/** Bulk replies are remembered this long (spec: 15 minutes). */
export const BULK_REPLAY_WINDOW_MS = 15 * 60_000;

/** Idempotency records of admin-plane bulk actions belong to no tenant. */
const ADMIN_SCOPE = '__admin__';

interface Outcome {
  succeeded: BulkRow[];
  failed: BulkRow[];
  skipped: BulkRow[];
}

/** Runs `fn` in a savepoint; a thrown error rolls back that row only. */
function inSavepoint(db: CascadeAccess, fn: () => void): unknown {
  db.stmt('SAVEPOINT bulk_row').run();
  try {
    fn();
    db.stmt('RELEASE bulk_row').run();
    return undefined;
  } catch (e) {
    db.stmt('ROLLBACK TO bulk_row').run();
    db.stmt('RELEASE bulk_row').run();
    return e;
  }
}

function gate(total: number, cmd: { maxRows: number; expectedCount?: number | undefined }): void {
  if (total > cmd.maxRows) {
    throw new CyclesError(
      'LIMIT_EXCEEDED',
      `The filter matches ${total} rows; a bulk action applies to at most ${cmd.maxRows}. Narrow the filter.`,
      { total_matched: total, max_rows: cmd.maxRows },
      400,
    );
  }
  if (cmd.expectedCount !== undefined && cmd.expectedCount !== total) {
    throw new CyclesError('COUNT_MISMATCH', `expected_count is ${cmd.expectedCount} but the filter matches ${total}; nothing was changed`, {
      total_matched: total,
      expected_count: cmd.expectedCount,
    });
  }
}

const failedRow = (id: string, e: unknown): BulkRow => ({
  id,
  error_code: e instanceof CyclesError ? e.code : 'INTERNAL_ERROR',
  message: e instanceof CyclesError ? e.message : 'Internal error while applying the action to this row',
});

export function runTenantBulk(
  db: CascadeAccess,
  v: LedgerView,
  cmd: TenantBulkCommand,
  apply: (tenantId: string, change: TenantChange) => TenantRecord,
): OpResult {
  const endpoint = 'bulkActionTenants';
  const prior = findReplay(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash);
  if (prior) return replayed(prior);
  const w = new Where().add('status = @p', cmd.filter.status).add('parent_tenant_id = @p', cmd.filter.parentTenantId).search(['tenant_id', 'name'], cmd.filter.search);
  const total = (db.stmt(`SELECT COUNT(*) AS n FROM tenants ${w.sql()}`).get(w.params) as Row).n as number;
  gate(total, cmd);
  const rows = (db.stmt(`SELECT * FROM tenants ${w.sql()} ORDER BY tenant_id`).all(w.params) as Row[]).map(tenantFromRow);
  const out: Outcome = { succeeded: [], failed: [], skipped: [] };
  const target = { SUSPEND: 'SUSPENDED', REACTIVATE: 'ACTIVE', CLOSE: 'CLOSED' } as const;
  const correlation = `tenant_bulk_action:${cmd.action.toLowerCase()}:${cmd.ctx.requestId ?? 'internal'}`;
  for (const t of rows) {
    const want = target[cmd.action];
    if (t.status === want) {
      out.skipped.push({ id: t.tenant_id, reason: 'ALREADY_IN_TARGET_STATE' });
      continue;
    }
    if (t.status === 'CLOSED') {
      out.failed.push({ id: t.tenant_id, error_code: 'INVALID_TRANSITION', message: `Tenant ${t.tenant_id} is CLOSED; CLOSED is terminal` });
      continue;
    }
    const err = inSavepoint(db, () => {
      apply(t.tenant_id, { status: want, correlationId: correlation, cascadeAudit: cmd.cascadeAudit });
    });
    if (err === undefined) out.succeeded.push({ id: t.tenant_id });
    else out.failed.push(failedRow(t.tenant_id, err));
  }
  const body = { action: cmd.action, total_matched: total, ...out, idempotency_key: cmd.idempotencyKey };
  return record(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash, 200, body, v.now + BULK_REPLAY_WINDOW_MS);
}

export function runBudgetBulk(db: CascadeAccess, v: LedgerView, cmd: BudgetBulkCommand): OpResult {
  const endpoint = 'bulkActionBudgets';
  const prior = findReplay(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash);
  if (prior) return replayed(prior);
  const tenant = v.tenant(cmd.filter.tenantId);
  if (!tenant) throw new CyclesError('TENANT_NOT_FOUND', `Tenant ${cmd.filter.tenantId} not found`, { tenant_id: cmd.filter.tenantId });
  const w = ledgerWhere(cmd.filter);
  const total = (db.stmt(`SELECT COUNT(*) AS n FROM budgets ${w.sql()}`).get(w.params) as Row).n as number;
  gate(total, cmd);
  const rows = (db.stmt(`SELECT * FROM budgets ${w.sql()} ORDER BY scope, unit`).all(w.params) as Row[]).map(budgetFromRow);
  const out: Outcome = { succeeded: [], failed: [], skipped: [] };
  const correlation = `budget_bulk_action:${cmd.action.toLowerCase()}:${cmd.ctx.requestId ?? 'internal'}`;
  for (const b of rows) {
    const id = b.ledger_id;
    if (tenant.status === 'CLOSED') {
      out.failed.push({ id, error_code: 'TENANT_CLOSED', message: `Tenant ${tenant.tenant_id} is closed` });
      continue;
    }
    if (b.unit !== cmd.amount.unit) {
      out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: `Budget unit ${b.unit} differs from amount.unit ${cmd.amount.unit}` });
      continue;
    }
    if (b.status !== 'ACTIVE') {
      out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: `Budget ${b.scope} (${b.unit}) is ${b.status}` });
      continue;
    }
    if (cmd.action === 'REPAY_DEBT' && b.debt === 0) {
      out.skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
      continue;
    }
    const err = inSavepoint(db, () => {
      fundWithEvents(v, {
        ctx: cmd.ctx,
        tenantId: b.tenant_id,
        scope: b.scope,
        unit: b.unit,
        operation: cmd.action,
        amount: cmd.amount.amount,
        spent: cmd.action === 'RESET_SPENT' ? cmd.spent : undefined,
        hash: '',
        reason: cmd.reason,
        correlationId: correlation,
      });
    });
    if (err === undefined) out.succeeded.push({ id });
    else if (err instanceof CyclesError && err.code === 'BUDGET_EXCEEDED') out.failed.push({ id, error_code: 'BUDGET_EXCEEDED', message: err.message });
    else if (err instanceof CyclesError && (err.code === 'BUDGET_FROZEN' || err.code === 'BUDGET_CLOSED')) {
      out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: err.message });
    } else out.failed.push(failedRow(id, err));
  }
  const body = { action: cmd.action, total_matched: total, ...out, idempotency_key: cmd.idempotencyKey };
  return record(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash, 200, body, v.now + BULK_REPLAY_WINDOW_MS);
}
