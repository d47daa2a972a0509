/**
 * The governance plane on the embedded store: tenants, API keys, budgets, policies, bulk
 * actions, the audit log and the overview. Every mutation runs in one transaction of the
 * store's commit group (SqliteStore.transact) and writes its events in it; the closed-tenant
 * guard (409 TENANT_CLOSED, spec CASCADE SEMANTICS Rule 2) is checked in that same transaction,
 * so no mutation can slip in beside a concurrent close.
 */
import type Database from 'better-sqlite3';
import type { EventDraft, OpContext } from '../../events/model.js';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError, invalid } from '../../ledger/errors.js';
import { checkPolicy, DEFAULT_MAX_EXTENSIONS, DEFAULT_MAX_TTL_MS, DEFAULT_TTL_MS, type OpResult, type PolicyRecord } from '../../ledger/ops/shared.js';
import { budgetTransitions } from '../../ledger/transitions.js';
import type { BudgetRecord, TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import type {
  ApiKeyChange,
  ApiKeyListQuery,
  ApiKeyRecord,
  AuditQuery,
  AuditRecord,
  BudgetBulkCommand,
  BudgetChange,
  GovernanceStore,
  KeyedPage,
  LedgerListQuery,
  OverviewSnapshot,
  PolicyChange,
  PolicyListQuery,
  TenantBulkCommand,
  TenantChange,
  TenantListQuery,
} from '../types.js';
import { runBudgetBulk, runTenantBulk } from './governance-bulk.js';
import { insertAudit, runCloseCascade } from './governance-cascade.js';
import { apiKeyEvent, budgetEvent, changedFields, policyEvent, tenantEvent } from './governance-events.js';
import { readOverview } from './governance-overview.js';
import {
  auditFromRow,
  insertSql,
  keyedPage,
  keyset,
  LEDGER_SORT_SQL,
  ledgerWhere,
  policyFromRow,
  policyToRow,
  scopeFilterClause,
  Where,
  type Row,
} from './governance-sql.js';
import { apiKeyFromRow, apiKeyToRow, budgetFromRow, budgetToRow, tenantFromRow, tenantToRow } from './rows.js';

/** What the governance module needs from the store: statements and a slot in the commit group. */
export interface SqliteAccess {
  stmt(sql: string): Database.Statement;
  transact<T>(fn: (view: LedgerView & { now: number }) => T): Promise<T>;
}

/** last_used_at is written at most this often per key. */
export const KEY_TOUCH_INTERVAL_MS = 60_000;

const TENANT_SETTINGS = [
  'name',
  'metadata',
  'default_commit_overage_policy',
  'default_reservation_ttl_ms',
  'max_reservation_ttl_ms',
  'max_reservation_extensions',
] as const;

const POLICY_FIELDS = [
  'name',
  'description',
  'priority',
  'caps',
  'commit_overage_policy',
  'reservation_ttl_override',
  'rate_limits',
  'effective_from',
  'effective_until',
  'status',
] as const;

const tenantNotFound = (id: string) => new CyclesError('TENANT_NOT_FOUND', `Tenant ${id} not found`, { tenant_id: id });
const tenantClosed = (id: string) => new CyclesError('TENANT_CLOSED', `Tenant ${id} is closed; its objects can no longer change`, { tenant_id: id });

const withDefaults = (t: TenantRecord): TenantRecord => ({
  ...t,
  default_commit_overage_policy: t.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE',
  default_reservation_ttl_ms: t.default_reservation_ttl_ms ?? DEFAULT_TTL_MS,
  max_reservation_ttl_ms: t.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS,
  max_reservation_extensions: t.max_reservation_extensions ?? DEFAULT_MAX_EXTENSIONS,
});

/** The effective status of a key: an ACTIVE key past its expiry is EXPIRED. */
const effectiveStatus = (k: ApiKeyRecord, now: number): ApiKeyRecord['status'] => (k.status === 'ACTIVE' && k.expires_at <= now ? 'EXPIRED' : k.status);

/** Tenant lookup for creating or changing an owned object: unknown is 400 (the spec declares no 404 there). */
function ownerFor(view: LedgerView, tenantId: string, opts: { mustBeActive: boolean; what: string }): TenantRecord {
  const t = view.tenant(tenantId);
  if (!t) throw invalid(`Tenant ${tenantId} not found`, { field: 'tenant_id', tenant_id: tenantId });
  if (t.status === 'CLOSED') throw tenantClosed(tenantId);
  if (opts.mustBeActive && t.status !== 'ACTIVE') throw invalid(`Tenant ${tenantId} is ${t.status}; ${opts.what} cannot be created`, { field: 'tenant_id' });
  return t;
}

/** Rule 2: a closed owner freezes every object it owns. */
function guardOwner(view: LedgerView, tenantId: string): void {
  if (view.tenant(tenantId)?.status === 'CLOSED') throw tenantClosed(tenantId);
}

export class SqliteGovernance implements GovernanceStore {
  constructor(private readonly db: SqliteAccess) {}

  private budgetAt(scope: string, unit: Unit): BudgetRecord | undefined {
    const row = this.db.stmt('SELECT * FROM budgets WHERE scope = ? AND unit = ?').get(scope, unit) as Row | undefined;
    return row ? budgetFromRow(row) : undefined;
  }

  private apiKeyRow(keyId: string): ApiKeyRecord | undefined {
    const row = this.db.stmt('SELECT * FROM api_keys WHERE key_id = ?').get(keyId) as Row | undefined;
    return row ? apiKeyFromRow(row) : undefined;
  }

  private writeTenant(t: TenantRecord): void {
    const row = tenantToRow(t);
    const cols = Object.keys(row).filter((c) => c !== 'tenant_id');
    this.db.stmt(`UPDATE tenants SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE tenant_id = @tenant_id`).run(row);
  }

  private writeApiKey(k: ApiKeyRecord): void {
    const row = apiKeyToRow(k);
    const cols = Object.keys(row).filter((c) => c !== 'key_id');
    this.db.stmt(`UPDATE api_keys SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE key_id = @key_id`).run(row);
  }

  private writePolicy(p: PolicyRecord): void {
    const row = policyToRow(p);
    const cols = Object.keys(row).filter((c) => c !== 'policy_id');
    this.db.stmt(`UPDATE policies SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE policy_id = @policy_id`).run(row);
  }

  // ------------------------------------------------------------------ tenants

  async queryTenants(q: TenantListQuery): Promise<KeyedPage<TenantRecord>> {
    const w = new Where().add('status = @p', q.status).add('parent_tenant_id = @p', q.parentTenantId).search(['tenant_id', 'name'], q.search);
    const order = keyset(w, q.sortBy, 'tenant_id', q.sortDir, q.after);
    w.params.limit = q.limit + 1;
    const rows = this.db.stmt(`SELECT *, ${q.sortBy} AS _k, tenant_id AS _i FROM tenants ${w.sql()} ${order} LIMIT @limit`).all(w.params) as Row[];
    return keyedPage(rows, q.limit, tenantFromRow);
  }

  openTenant(record: TenantRecord, ctx: OpContext): Promise<{ created: boolean; tenant: TenantRecord }> {
    return this.db.transact((v) => {
      const existing = v.tenant(record.tenant_id);
      if (existing) return { created: false, tenant: existing };
      if (record.parent_tenant_id !== undefined && !v.tenant(record.parent_tenant_id)) {
        throw invalid(`parent_tenant_id ${record.parent_tenant_id} does not name an existing tenant`, { field: 'parent_tenant_id' });
      }
      const t: TenantRecord = { ...record, status: 'ACTIVE', created_at: v.now, updated_at: v.now };
      const row = tenantToRow(t);
      this.db.stmt(insertSql('tenants', row)).run(row);
      v.emit(tenantEvent('tenant.created', t, undefined, []), ctx);
      return { created: true, tenant: t };
    });
  }

  changeTenant(tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord> {
    return this.db.transact((v) => this.applyTenantChange(v, tenantId, change, ctx));
  }

  /** updateTenant inside an open transaction (also each row of a bulk action). */
  private applyTenantChange(v: LedgerView, tenantId: string, change: TenantChange, ctx: OpContext): TenantRecord {
    const cur = v.tenant(tenantId);
    if (!cur) throw tenantNotFound(tenantId);
    const settings = TENANT_SETTINGS.filter((f) => change[f] !== undefined);
    if (cur.status === 'CLOSED') {
      if (change.status !== undefined && change.status !== 'CLOSED') {
        throw invalid(`Cannot transition tenant ${tenantId} from CLOSED to ${change.status}: CLOSED is terminal`, { field: 'status' });
      }
      if (settings.length > 0) throw invalid(`Tenant ${tenantId} is CLOSED; its settings can no longer change`, { field: settings[0] });
      // Re-close: drive any child that is not terminal yet (none, since the close is atomic); no duplicate rows.
      if (change.status === 'CLOSED') runCloseCascade(this.db, v, cur, ctx, change.cascadeAudit);
      return cur;
    }
    const next: TenantRecord = { ...cur };
    for (const f of settings) (next as unknown as Record<string, unknown>)[f] = change[f];
    const defaultTtl = next.default_reservation_ttl_ms ?? DEFAULT_TTL_MS;
    const maxTtl = next.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS;
    if (defaultTtl > maxTtl) {
      throw invalid(`default_reservation_ttl_ms (${defaultTtl}) must not exceed max_reservation_ttl_ms (${maxTtl})`, { field: 'default_reservation_ttl_ms' });
    }
    // Compared as effective values: setting a default explicitly (10 extensions) is no change.
    const changed = changedFields(withDefaults(cur), withDefaults(next), TENANT_SETTINGS);
    const target = change.status ?? cur.status;
    let type: string | undefined;
    let correlationId = change.correlationId ?? change.closeCorrelationId;
    if (target === 'CLOSED') {
      const cascade = runCloseCascade(this.db, v, cur, ctx, change.cascadeAudit);
      next.status = 'CLOSED';
      next.closed_at = v.now;
      type = 'tenant.closed';
      // The parent shares the cascade's correlation id, unless a bulk action gives it its own.
      correlationId ??= cascade.correlationId;
    } else if (target !== cur.status) {
      next.status = target;
      next.suspended_at = target === 'SUSPENDED' ? v.now : undefined;
      type = target === 'SUSPENDED' ? 'tenant.suspended' : 'tenant.reactivated';
    } else if (changed.length > 0) {
      type = 'tenant.updated';
    }
    if (type === undefined) return cur;
    next.updated_at = v.now;
    this.writeTenant(next);
    const fields = target !== cur.status ? [...changed, 'status'] : changed;
    v.emit(tenantEvent(type, next, target !== cur.status ? cur.status : undefined, fields, correlationId), ctx);
    return next;
  }

  // ------------------------------------------------------------------ API keys

  async queryApiKeys(q: ApiKeyListQuery): Promise<KeyedPage<ApiKeyRecord>> {
    const w = new Where();
    const now = w.param(q.now);
    const effective = `CASE WHEN status = 'ACTIVE' AND expires_at <= ${now} THEN 'EXPIRED' ELSE status END`;
    w.add('tenant_id = @p', q.tenantId).add(`(${effective}) = @p`, q.status).search(['key_id', 'name'], q.search);
    const sortExpr = q.sortBy === 'status' ? effective : q.sortBy;
    const order = keyset(w, sortExpr, 'key_id', q.sortDir, q.after);
    w.params.limit = q.limit + 1;
    const rows = this.db.stmt(`SELECT *, ${sortExpr} AS _k, key_id AS _i FROM api_keys ${w.sql()} ${order} LIMIT @limit`).all(w.params) as Row[];
    return keyedPage(rows, q.limit, apiKeyFromRow);
  }

  issueApiKey(record: ApiKeyRecord, ctx: OpContext): Promise<void> {
    return this.db.transact((v) => {
      ownerFor(v, record.tenant_id, { mustBeActive: true, what: 'API keys' });
      const k: ApiKeyRecord = { ...record, status: 'ACTIVE', created_at: v.now };
      const row = apiKeyToRow(k);
      this.db.stmt(insertSql('api_keys', row)).run(row);
      v.emit(apiKeyEvent('api_key.created', k, undefined), ctx);
    });
  }

  /** The closed-owner guard comes first, then the key's own state (revoked / expired are final). */
  private changeableKey(v: LedgerView, keyId: string): ApiKeyRecord {
    const k = this.apiKeyRow(keyId);
    if (!k) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    guardOwner(v, k.tenant_id);
    if (k.status === 'REVOKED') throw new CyclesError('KEY_REVOKED', `API key ${keyId} is revoked; revocation is permanent`, { key_id: keyId });
    return k;
  }

  changeApiKey(keyId: string, change: ApiKeyChange, ctx: OpContext): Promise<ApiKeyRecord> {
    return this.db.transact((v) => {
      const k = this.changeableKey(v, keyId);
      if (effectiveStatus(k, v.now) === 'EXPIRED') {
        throw new CyclesError('INVALID_REQUEST', `API key ${keyId} has expired and can no longer be changed; create a new key`, { key_id: keyId }, 409);
      }
      const next: ApiKeyRecord = { ...k };
      if (change.name !== undefined) next.name = change.name;
      if (change.description !== undefined) next.description = change.description;
      if (change.permissions !== undefined) next.permissions = change.permissions;
      if (change.scope_filter !== undefined) next.scope_filter = change.scope_filter;
      if (change.metadata !== undefined) next.metadata = change.metadata as Record<string, string>;
      this.writeApiKey(next);
      if (changedFields(k, next, ['permissions', 'scope_filter']).length > 0) v.emit(apiKeyEvent('api_key.permissions_changed', next, k.status), ctx);
      return next;
    });
  }

  revokeApiKey(keyId: string, reason: string | undefined, ctx: OpContext): Promise<ApiKeyRecord> {
    return this.db.transact((v) => {
      const k = this.changeableKey(v, keyId);
      const next: ApiKeyRecord = { ...k, status: 'REVOKED', revoked_at: v.now, revoked_reason: reason };
      this.writeApiKey(next);
      v.emit(apiKeyEvent('api_key.revoked', next, effectiveStatus(k, v.now)), ctx);
      return next;
    });
  }

  /** One conditional UPDATE: no read-modify-write, so it can never resurrect a key revoked meanwhile. */
  touchApiKey(keyId: string, now: number): Promise<void> {
    return this.db.transact(() => {
      this.db
        .stmt("UPDATE api_keys SET last_used_at = @now WHERE key_id = @id AND status = 'ACTIVE' AND (last_used_at IS NULL OR last_used_at <= @cutoff)")
        .run({ now, id: keyId, cutoff: now - KEY_TOUCH_INTERVAL_MS });
    });
  }

  // ------------------------------------------------------------------ budgets

  openBudget(record: BudgetRecord, ctx: OpContext): Promise<void> {
    return this.db.transact((v) => {
      ownerFor(v, record.tenant_id, { mustBeActive: true, what: 'budgets' });
      const b: BudgetRecord = { ...record, created_at: v.now, updated_at: v.now };
      const row = budgetToRow(b);
      const info = this.db.stmt(insertSql('budgets', row).replace('INSERT', 'INSERT OR IGNORE')).run(row);
      if (info.changes === 0) {
        throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${b.scope} in unit ${b.unit}`, { scope: b.scope, unit: b.unit });
      }
      v.emit(budgetEvent('budget.created', 'CREATE', undefined, b), ctx);
    });
  }

  async queryLedgers(q: LedgerListQuery): Promise<KeyedPage<BudgetRecord>> {
    const w = ledgerWhere(q);
    const sortExpr = LEDGER_SORT_SQL[q.sortBy]!;
    const order = keyset(w, sortExpr, 'ledger_id', q.sortDir, q.after);
    w.params.limit = q.limit + 1;
    const rows = this.db.stmt(`SELECT *, ${sortExpr} AS _k, ledger_id AS _i FROM budgets ${w.sql()} ${order} LIMIT @limit`).all(w.params) as Row[];
    return keyedPage(rows, q.limit, budgetFromRow);
  }

  changeBudget(scope: string, unit: Unit, change: BudgetChange, ctx: OpContext): Promise<BudgetRecord> {
    return this.db.transact((v) => {
      const b = this.budgetAt(scope, unit);
      if (!b) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${scope} (${unit})`, { scope, unit });
      guardOwner(v, b.tenant_id);
      if (b.status === 'CLOSED') throw new CyclesError('BUDGET_CLOSED', `Budget ${scope} (${unit}) is closed`, { scope, unit });
      const next: BudgetRecord = { ...b, updated_at: v.now };
      if (change.status !== undefined) {
        if (b.status === change.status) {
          const what = change.status === 'FROZEN' ? 'already frozen' : 'not frozen';
          throw new CyclesError('INVALID_REQUEST', `Budget ${scope} (${unit}) is ${what}`, { scope, unit, status: b.status }, 409);
        }
        next.status = change.status;
        v.updateBudgets([next]);
        v.emit(budgetEvent(change.status === 'FROZEN' ? 'budget.frozen' : 'budget.unfrozen', 'STATUS_CHANGE', b, next, { reason: change.reason }), ctx);
        return next;
      }
      if (change.overdraft_limit !== undefined) {
        next.overdraft_limit = change.overdraft_limit;
        // Lowering the limit below the debt puts the scope over limit; raising it clears that.
        next.is_over_limit = next.debt > next.overdraft_limit;
      }
      if (change.commit_overage_policy !== undefined) next.commit_overage_policy = change.commit_overage_policy;
      if (change.metadata !== undefined) next.metadata = change.metadata as Record<string, string>;
      if (changedFields(b, next, ['overdraft_limit', 'commit_overage_policy', 'metadata']).length === 0) return b;
      v.updateBudgets([next]);
      v.emit(budgetEvent('budget.updated', 'UPDATE', b, next, { reason: change.reason }), ctx);
      for (const e of budgetTransitions([b], [next])) v.emit(e, ctx);
      return next;
    });
  }

  // ------------------------------------------------------------------ policies

  createPolicy(record: PolicyRecord, ctx: OpContext): Promise<void> {
    return this.db.transact((v) => {
      ownerFor(v, record.tenant_id, { mustBeActive: false, what: 'policies' });
      this.uniqueName(record.tenant_id, record.name, undefined);
      const p: PolicyRecord = { ...record, created_at: v.now, updated_at: v.now };
      const row = policyToRow(p);
      this.db.stmt(insertSql('policies', row)).run(row);
      v.emit(policyEvent('policy.created', p, []), ctx);
    });
  }

  private uniqueName(tenantId: string, name: string, except: string | undefined): void {
    const clash = this.db.stmt('SELECT policy_id FROM policies WHERE tenant_id = ? AND name = ?').get(tenantId, name) as Row | undefined;
    if (clash && clash.policy_id !== except) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Tenant ${tenantId} already has a policy named "${name}"`, { name, policy_id: clash.policy_id });
    }
  }

  async getPolicy(policyId: string): Promise<PolicyRecord | undefined> {
    const row = this.db.stmt('SELECT * FROM policies WHERE policy_id = ?').get(policyId) as Row | undefined;
    return row ? policyFromRow(row) : undefined;
  }

  async queryPolicies(q: PolicyListQuery): Promise<KeyedPage<PolicyRecord>> {
    const w = new Where().add('tenant_id = @p', q.tenantId).add('scope_pattern = @p', q.scopePattern).add('status = @p', q.status);
    scopeFilterClause(w, 'scope_pattern', q.scopeFilter);
    const order = keyset(w, 'created_at', 'policy_id', 'desc', q.after);
    w.params.limit = q.limit + 1;
    const rows = this.db.stmt(`SELECT *, created_at AS _k, policy_id AS _i FROM policies ${w.sql()} ${order} LIMIT @limit`).all(w.params) as Row[];
    return keyedPage(rows, q.limit, policyFromRow);
  }

  changePolicy(policyId: string, change: PolicyChange, ctx: OpContext): Promise<PolicyRecord> {
    return this.db.transact((v) => {
      const row = this.db.stmt('SELECT * FROM policies WHERE policy_id = ?').get(policyId) as Row | undefined;
      if (!row) throw new CyclesError('NOT_FOUND', `Policy ${policyId} not found`, { policy_id: policyId });
      const p = policyFromRow(row);
      guardOwner(v, p.tenant_id);
      const next: PolicyRecord = { ...p };
      for (const f of POLICY_FIELDS) if (change[f] !== undefined) (next as unknown as Record<string, unknown>)[f] = change[f];
      if (change.name !== undefined) this.uniqueName(p.tenant_id, change.name, p.policy_id);
      checkPolicy(next);
      const changed = changedFields(p, next, POLICY_FIELDS);
      if (changed.length === 0) return p;
      next.updated_at = v.now;
      this.writePolicy(next);
      v.emit(policyEvent('policy.updated', next, changed), ctx);
      return next;
    });
  }

  // ------------------------------------------------------------------ bulk actions

  bulkTenants(cmd: TenantBulkCommand): Promise<OpResult> {
    return this.db.transact((v) => runTenantBulk(this.db, v, cmd, (id, change) => this.applyTenantChange(v, id, change, cmd.ctx)));
  }

  bulkBudgets(cmd: BudgetBulkCommand): Promise<OpResult> {
    return this.db.transact((v) => runBudgetBulk(this.db, v, cmd));
  }

  // ------------------------------------------------------------------ audit, events, overview

  appendAudit(entries: readonly AuditRecord[]): Promise<void> {
    return this.db.transact(() => {
      for (const e of entries) insertAudit(this.db, e);
    });
  }

  async queryAudit(q: AuditQuery): Promise<KeyedPage<AuditRecord>> {
    const w = new Where()
      .add('tenant_id = @p', q.tenantId)
      .add('key_id = @p', q.keyId)
      .add('resource_id = @p', q.resourceId)
      .add('trace_id = @p', q.traceId)
      .add('request_id = @p', q.requestId)
      .in('operation', q.operations)
      .in('resource_type', q.resourceTypes)
      .in('error_code', q.errorCodes)
      .add('status = @p', q.status)
      .add('status >= @p', q.statusMin)
      .add('status <= @p', q.statusMax)
      .add('timestamp >= @p', q.from)
      .add('timestamp <= @p', q.to)
      .search(['resource_id', 'log_id', 'error_code', 'operation'], q.search);
    if (q.errorCodesExclude && q.errorCodesExclude.length > 0) {
      // A row without error_code (a success) always passes an exclusion.
      w.raw(`(error_code IS NULL OR error_code NOT IN (${q.errorCodesExclude.map((c) => w.param(c)).join(', ')}))`);
    }
    const sortExpr = q.sortBy === 'resource_type' || q.sortBy === 'key_id' ? `COALESCE(${q.sortBy}, '')` : q.sortBy;
    const order = keyset(w, sortExpr, 'log_id', q.sortDir, q.after);
    w.params.limit = q.limit + 1;
    const rows = this.db.stmt(`SELECT *, ${sortExpr} AS _k, log_id AS _i FROM audit_logs ${w.sql()} ${order} LIMIT @limit`).all(w.params) as Row[];
    return keyedPage(rows, q.limit, auditFromRow);
  }

  /** Deletes audit rows past the retention stamped on them. */
  purgeAudit(now: number): void {
    this.db.stmt('DELETE FROM audit_logs WHERE expires_at < ?').run(now);
  }

  appendEvents(drafts: readonly EventDraft[], ctx: OpContext): Promise<void> {
    return this.db.transact((v) => {
      for (const d of drafts) v.emit(d, ctx);
    });
  }

  async overview(now: number, windowMs: number): Promise<OverviewSnapshot> {
    return readOverview(this.db, now, windowMs);
  }
}
