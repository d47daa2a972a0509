/** Budgets: create, list, lookup, update, freeze / unfreeze, fund and bulk funding. */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import type { Amount, Unit } from '../ledger/amounts.js';
import { UNITS } from '../ledger/amounts.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { requestHash } from '../ledger/ops/shared.js';
import { parseBudgetScope } from '../ledger/scopes.js';
import type { BudgetRecord, BudgetStatus } from '../ledger/types.js';
import { sendOp } from '../runtime/routes.js';
import { enumParam, single, type Query } from '../runtime/query.js';
import { LEDGER_SORT_KEYS, type BudgetBulkCommand, type FundingOperation, type LedgerFilter, type Store } from '../store/types.js';
import { noteAudit } from './audit.js';
import {
  adminAuth,
  adminLimit,
  boolParam,
  checkScopeFilter,
  cursorFor,
  keyScopeFilter,
  listBody,
  numberParam,
  parseTime,
  routingTenant,
  searchParam,
  sortParams,
} from './common.js';
import { budgetBulkBody, budgetCreateBody, budgetUpdateBody, fundingBody, statusTransitionBody } from './schemas.js';
import { ledgerShape } from './shapes.js';
import { BULK_MAX_ROWS, bulkSummary } from './tenants.js';

const BUDGET_STATUSES = ['ACTIVE', 'FROZEN', 'CLOSED'] as const;

/** Utilization bounds are fractions in [0, 1], and the lower one must not exceed the upper one. */
function utilizationBounds(min: number | undefined, max: number | undefined): void {
  if (min !== undefined && max !== undefined && min > max) throw invalid('utilization_min must not exceed utilization_max', { field: 'utilization_min' });
}

function unitMismatch(field: string, given: Unit, unit: Unit): CyclesError {
  return new CyclesError('UNIT_MISMATCH', `${field}.unit ${given} differs from the budget's unit ${unit}`, { field: `${field}.unit`, requested_unit: given, expected_units: [unit] });
}

/** Budgets are addressed by (scope, unit) query parameters; a tenant key only ever reaches its own. */
async function budgetAt(store: Store, req: FastifyRequest): Promise<BudgetRecord> {
  const q = req.query as Query;
  const scopeRaw = single(q, 'scope');
  if (!scopeRaw) throw invalid('scope query parameter is required', { field: 'scope' });
  const unit = enumParam(q, 'unit', UNITS);
  if (!unit) throw invalid('unit query parameter is required', { field: 'unit' });
  const scope = parseBudgetScope(scopeRaw).scope;
  const p = req.cycles.principal;
  if (p?.kind === 'tenant') checkScopeFilter(req, scope);
  const b = await store.getBudget(scope, unit);
  if (!b) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${scope} (${unit})`, { scope, unit });
  if (p?.kind === 'tenant' && b.tenant_id !== p.tenantId) throw new CyclesError('FORBIDDEN', `Budget ${scope} belongs to another tenant`, { scope });
  noteAudit(req, { tenantId: b.tenant_id, resourceId: b.ledger_id });
  return b;
}

export function registerBudgetRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.post('/v1/admin/budgets', { schema: { body: budgetCreateBody }, config: adminAuth('either', 'budgets:write') }, async (req, reply) => {
    const b = req.body as {
      tenant_id?: string;
      scope: string;
      unit: Unit;
      allocated: Amount;
      overdraft_limit?: Amount;
      commit_overage_policy?: BudgetRecord['commit_overage_policy'];
      rollover_policy?: string;
      period_start?: string;
      period_end?: string;
      metadata?: Record<string, string>;
    };
    const tenantId = routingTenant(req.cycles.principal, b.tenant_id, 'body');
    const parsed = parseBudgetScope(b.scope);
    if (parsed.tenant !== tenantId) {
      // Under a tenant key this reaches into another tenant's scopes (403); under the admin key, body and scope disagree (400).
      if (req.cycles.principal?.kind === 'tenant') throw new CyclesError('FORBIDDEN', `scope ${parsed.scope} belongs to another tenant`, { scope: parsed.scope });
      throw invalid(`scope must start with tenant:${tenantId}`, { field: 'scope' });
    }
    checkScopeFilter(req, parsed.scope);
    if (b.allocated.unit !== b.unit) throw unitMismatch('allocated', b.allocated.unit, b.unit);
    if (b.overdraft_limit && b.overdraft_limit.unit !== b.unit) throw unitMismatch('overdraft_limit', b.overdraft_limit.unit, b.unit);
    const periodStart = parseTime(b.period_start);
    const periodEnd = parseTime(b.period_end);
    if (periodStart !== undefined && periodEnd !== undefined && periodStart >= periodEnd) throw invalid('period_start must be before period_end', { field: 'period_start' });
    const record: BudgetRecord = {
      ledger_id: `ldg_${randomBytes(12).toString('hex')}`,
      tenant_id: tenantId,
      scope: parsed.scope,
      unit: b.unit,
      allocated: b.allocated.amount,
      reserved: 0,
      spent: 0,
      debt: 0,
      overdraft_limit: b.overdraft_limit?.amount ?? 0,
      is_over_limit: false,
      status: 'ACTIVE',
      commit_overage_policy: b.commit_overage_policy,
      rollover_policy: b.rollover_policy ?? 'NONE',
      period_start: periodStart,
      period_end: periodEnd,
      metadata: b.metadata,
      created_at: 0,
      updated_at: 0,
    };
    noteAudit(req, { tenantId, resourceId: record.ledger_id });
    await store.openBudget(record, opContext(req, req.cycles.principal?.kind === 'admin'));
    const created = await store.getBudget(record.scope, record.unit);
    return reply.code(201).send(ledgerShape(created ?? record));
  });

  /** The listBudgets filter from query parameters (the bulk filter has the same fields in its body). */
  function ledgerFilter(req: FastifyRequest): LedgerFilter {
    const q = req.query as Query;
    const p = req.cycles.principal;
    const prefixRaw = single(q, 'scope_prefix') || undefined;
    const scopePrefix = prefixRaw === undefined ? undefined : parseBudgetScope(prefixRaw, 'scope_prefix').scope;
    const utilizationMin = numberParam(q, 'utilization_min', 0, 1);
    const utilizationMax = numberParam(q, 'utilization_max', 0, 1);
    utilizationBounds(utilizationMin, utilizationMax);
    return {
      // A tenant key lists its own tenant only; tenant_id is ignored then (spec).
      tenantId: p?.kind === 'tenant' ? p.tenantId : single(q, 'tenant_id') || undefined,
      scopePrefix,
      unit: enumParam(q, 'unit', UNITS),
      status: enumParam(q, 'status', BUDGET_STATUSES),
      overLimit: boolParam(q, 'over_limit'),
      hasDebt: boolParam(q, 'has_debt'),
      utilizationMin,
      utilizationMax,
      search: searchParam(q),
      scopeFilter: keyScopeFilter(req),
    };
  }

  app.get('/v1/admin/budgets', { config: adminAuth('either', 'budgets:read') }, async (req) => {
    const q = req.query as Query;
    const filter = { ...ledgerFilter(req), ...sortParams(q, LEDGER_SORT_KEYS, 'utilization') };
    const { hash, after } = cursorFor(q, filter);
    const page = await store.queryLedgers({ ...filter, after, limit: adminLimit(q) });
    return listBody('ledgers', page.rows.map(ledgerShape), page.hasMore, hash, page.next);
  });

  app.get('/v1/admin/budgets/lookup', { config: adminAuth('either', 'budgets:read') }, async (req) => ledgerShape(await budgetAt(store, req)));

  app.patch('/v1/admin/budgets', { schema: { body: budgetUpdateBody }, config: adminAuth('admin') }, async (req) => {
    const b = await budgetAt(store, req);
    const body = req.body as { overdraft_limit?: Amount; commit_overage_policy?: BudgetRecord['commit_overage_policy']; metadata?: Record<string, unknown> };
    if (body.overdraft_limit && body.overdraft_limit.unit !== b.unit) throw unitMismatch('overdraft_limit', body.overdraft_limit.unit, b.unit);
    const next = await store.changeBudget(
      b.scope,
      b.unit,
      { overdraft_limit: body.overdraft_limit?.amount, commit_overage_policy: body.commit_overage_policy, metadata: body.metadata },
      opContext(req),
    );
    return ledgerShape(next);
  });

  const transition = (path: string, target: 'FROZEN' | 'ACTIVE') =>
    app.post(path, { schema: { body: { ...statusTransitionBody, type: ['object', 'null'] } }, config: adminAuth('admin') }, async (req) => {
      const b = await budgetAt(store, req);
      const body = (req.body ?? {}) as { reason?: string; metadata?: Record<string, unknown> };
      if (body.reason !== undefined) noteAudit(req, { metadata: { reason: body.reason } });
      return ledgerShape(await store.changeBudget(b.scope, b.unit, { status: target, reason: body.reason }, opContext(req)));
    });
  transition('/v1/admin/budgets/freeze', 'FROZEN');
  transition('/v1/admin/budgets/unfreeze', 'ACTIVE');

  app.post('/v1/admin/budgets/fund', { schema: { body: fundingBody }, config: adminAuth('either', 'budgets:write') }, async (req, reply) => {
    const q = req.query as Query;
    const body = req.body as { operation: FundingOperation; amount: Amount; spent?: Amount; reason?: string; idempotency_key?: string; metadata?: Record<string, unknown> };
    const p = req.cycles.principal;
    const tenantId = routingTenant(p, single(q, 'tenant_id'), 'query');
    const b = await budgetAt(store, req);
    if (b.tenant_id !== tenantId) throw new CyclesError('FORBIDDEN', `Budget ${b.scope} does not belong to tenant ${tenantId}`, { scope: b.scope });
    if (body.amount.unit !== b.unit) throw unitMismatch('amount', body.amount.unit, b.unit);
    if (body.spent !== undefined) {
      if (body.operation !== 'RESET_SPENT') throw invalid('spent is only accepted with operation RESET_SPENT', { field: 'spent' });
      if (body.spent.unit !== b.unit) throw unitMismatch('spent', body.spent.unit, b.unit);
    }
    const header = req.headers['x-idempotency-key'];
    if (header !== undefined && body.idempotency_key !== undefined && header !== body.idempotency_key) {
      throw invalid('X-Idempotency-Key header does not match body idempotency_key', { field: 'idempotency_key' });
    }
    noteAudit(req, { metadata: { operation: body.operation, ...(body.reason !== undefined ? { reason: body.reason } : {}) } });
    const result = await store.fundBudget({
      ctx: opContext(req, p?.kind === 'admin'),
      tenantId,
      scope: b.scope,
      unit: b.unit,
      operation: body.operation,
      amount: body.amount.amount,
      spent: body.spent?.amount,
      idempotencyKey: body.idempotency_key ?? (typeof header === 'string' ? header : undefined),
      hash: requestHash('fund', { scope: b.scope, unit: b.unit, ...body }),
      reason: body.reason,
    });
    return sendOp(reply, result);
  });

  app.post('/v1/admin/budgets/bulk-action', { schema: { body: budgetBulkBody }, config: adminAuth('admin') }, async (req, reply) => {
    const body = req.body as {
      filter: {
        tenant_id: string;
        scope_prefix?: string;
        unit?: Unit;
        status?: BudgetStatus;
        over_limit?: boolean;
        has_debt?: boolean;
        utilization_min?: number;
        utilization_max?: number;
        search?: string;
      };
      action: FundingOperation;
      amount: Amount;
      spent?: Amount;
      reason?: string;
      expected_count?: number;
      idempotency_key: string;
    };
    const f = body.filter;
    utilizationBounds(f.utilization_min, f.utilization_max);
    if (body.spent !== undefined && body.action !== 'RESET_SPENT') throw invalid('spent is only accepted with action RESET_SPENT', { field: 'spent' });
    if (body.spent !== undefined && body.spent.unit !== body.amount.unit) {
      throw new CyclesError('UNIT_MISMATCH', `spent.unit ${body.spent.unit} differs from amount.unit ${body.amount.unit}`, { field: 'spent.unit' });
    }
    noteAudit(req, { tenantId: f.tenant_id, onBehalfOf: true });
    const cmd: BudgetBulkCommand = {
      ctx: opContext(req, true),
      filter: {
        tenantId: f.tenant_id,
        scopePrefix: f.scope_prefix === undefined ? undefined : parseBudgetScope(f.scope_prefix, 'filter.scope_prefix').scope,
        unit: f.unit,
        status: f.status,
        overLimit: f.over_limit,
        hasDebt: f.has_debt,
        utilizationMin: f.utilization_min,
        utilizationMax: f.utilization_max,
        search: f.search?.trim() || undefined,
      },
      action: body.action,
      amount: body.amount,
      spent: body.spent?.amount,
      reason: body.reason,
      idempotencyKey: body.idempotency_key,
      expectedCount: body.expected_count,
      hash: requestHash('bulkActionBudgets', body),
      maxRows: BULK_MAX_ROWS,
    };
    const result = await store.bulkBudgets(cmd);
    const outcome = JSON.parse(result.body) as Record<string, Array<{ id: string }>>;
    noteAudit(req, { metadata: { ...bulkSummary(outcome, result.replayed, `budget_bulk_action:${body.action.toLowerCase()}:${cmd.ctx.requestId}`), reason: body.reason } });
    return reply.code(result.status).type('application/json; charset=utf-8').send(result.body);
  });
}
