/**
 * The governance plane on PostgreSQL: tenants, API keys, budgets, policies, bulk actions, the
 * audit log and the overview. The rules and events are the embedded store's (same event
 * builders, same checks, same order); what differs is how they are made safe across processes.
 *
 * Every mutation is one transaction. A mutation of an object a tenant owns first takes the
 * tenant row FOR SHARE, and a tenant change takes it FOR UPDATE, so the closed-tenant guard
 * (409 TENANT_CLOSED) and the close cascade can never interleave: whichever comes second sees
 * the other's result. Lock order: tenant, then reservations, then budgets (scope, unit), then
 * API keys, policies and webhook subscriptions: the order the runtime operations use for the rows
 * they share.
 */
import { randomHex } from '../../ids.js';
import type { EventDraft, OpContext } from '../../events/model.js';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError, invalid } from '../../ledger/errors.js';
import { applyReleaseHold } from '../../ledger/math.js';
import { checkPolicy, DEFAULT_MAX_EXTENSIONS, DEFAULT_MAX_TTL_MS, DEFAULT_TTL_MS, findReplay, record, replayed, type OpResult, type PolicyRecord } from '../../ledger/ops/shared.js';
import { budgetTransitions } from '../../ledger/transitions.js';
import type { BudgetRecord, TenantRecord } from '../../ledger/types.js';
// Backend-neutral pieces of the governance plane (pure functions over records and a LedgerView).
import { apiKeyEvent, budgetEvent, cascadeCorrelation, cascadeEvent, changedFields, policyEvent, tenantEvent } from '../sqlite/governance-events.js';
import { fundWithEvents } from '../sqlite/governance-fund.js';
import type {
  ApiKeyChange,
  ApiKeyListQuery,
  ApiKeyRecord,
  AuditQuery,
  AuditRecord,
  AuditTemplate,
  BudgetBulkCommand,
  BudgetChange,
  BulkRow,
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
import { auditFromRow, INSERT_AUDIT, auditToRow, keyedPage, keyset, LEDGER_SORT_SQL, ledgerWhere, scopeFilterClause, Where } from './governance-sql.js';
import { readOverview } from './overview.js';
import {
  apiKeyFromRow,
  apiKeyToRow,
  budgetFromRow,
  budgetToRow,
  idempotencyFromRow,
  int,
  policyFromRow,
  policyToRow,
  reservationFromRow,
  tenantFromRow,
  tenantToRow,
  type Row,
} from './rows.js';
import { isRetryable, type PostgresStore, type Tx } from './store.js';
import type { SnapshotView } from './view.js';

/** last_used_at is written at most this often per key. */
export const KEY_TOUCH_INTERVAL_MS = 60_000;
/** Bulk replies are remembered this long (spec: 15 minutes). */
export const BULK_REPLAY_WINDOW_MS = 15 * 60_000;
export const DEFAULT_AUDIT_RETENTION_MS = 400 * 86_400_000;
/** Idempotency records of admin-plane bulk actions belong to no tenant. */
const ADMIN_SCOPE = '__admin__';

const TENANT_SETTINGS = ['name', 'metadata', 'default_commit_overage_policy', 'default_reservation_ttl_ms', 'max_reservation_ttl_ms', 'max_reservation_extensions'] as const;
const POLICY_FIELDS = ['name', 'description', 'priority', 'caps', 'commit_overage_policy', 'reservation_ttl_override', 'rate_limits', 'effective_from', 'effective_until', 'status'] as const;

const tenantNotFound = (id: string) => new CyclesError('TENANT_NOT_FOUND', `Tenant ${id} not found`, { tenant_id: id });
const tenantClosed = (id: string) => new CyclesError('TENANT_CLOSED', `Tenant ${id} is closed; its objects can no longer change`, { tenant_id: id });

/** A tenant's settings as they take effect: an unset one is its default. */
const withDefaults = (t: TenantRecord): TenantRecord => ({
  ...t,
  default_commit_overage_policy: t.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE',
  default_reservation_ttl_ms: t.default_reservation_ttl_ms ?? DEFAULT_TTL_MS,
  max_reservation_ttl_ms: t.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS,
  max_reservation_extensions: t.max_reservation_extensions ?? DEFAULT_MAX_EXTENSIONS,
});

/** The effective status of a key: an ACTIVE key past its expiry is EXPIRED. */
const effectiveStatus = (k: ApiKeyRecord, now: number): ApiKeyRecord['status'] => (k.status === 'ACTIVE' && k.expires_at <= now ? 'EXPIRED' : k.status);

const newLogId = (): string => `log_${randomHex(12)}`;

/** UPDATE of every column of `row` except the key column. */
function updateRow(table: string, row: Row, key: string): [string, unknown[]] {
  const cols = Object.keys(row).filter((c) => c !== key);
  return [`UPDATE ${table} SET ${cols.map((c, i) => `${c} = $${i + 2}`).join(', ')} WHERE ${key} = $1`, [row[key], ...cols.map((c) => row[c])]];
}

function insertRow(table: string, row: Row): [string, unknown[]] {
  const cols = Object.keys(row);
  return [`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`, Object.values(row)];
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

export class PostgresGovernance implements GovernanceStore {
  private auditQueue: AuditRecord[] = [];
  private auditBatch: Promise<void> | undefined;

  constructor(private readonly s: PostgresStore) {}

  /** Reads the tenant with a row lock (SHARE for owned-object changes, UPDATE for tenant changes) into the view. */
  private async lockTenant(tx: Tx, v: SnapshotView, tenantId: string, mode: 'SHARE' | 'UPDATE'): Promise<TenantRecord | undefined> {
    const [row] = await tx.rows(`SELECT * FROM tenants WHERE tenant_id = $1 FOR ${mode}`, [tenantId]);
    const t = row ? tenantFromRow(row) : undefined;
    v.loadTenant(tenantId, t);
    return t;
  }

  /** Tenant lookup for creating an owned object: unknown is 400 (the spec declares no 404 there). */
  private async ownerFor(tx: Tx, v: SnapshotView, tenantId: string, opts: { mustBeActive: boolean; what: string }): Promise<TenantRecord> {
    const t = await this.lockTenant(tx, v, tenantId, 'SHARE');
    if (!t) throw invalid(`Tenant ${tenantId} not found`, { field: 'tenant_id', tenant_id: tenantId });
    if (t.status === 'CLOSED') throw tenantClosed(tenantId);
    if (opts.mustBeActive && t.status !== 'ACTIVE') throw invalid(`Tenant ${tenantId} is ${t.status}; ${opts.what} cannot be created`, { field: 'tenant_id' });
    return t;
  }

  /** Rule 2: a closed owner freezes every object it owns. */
  private async guardOwner(tx: Tx, v: SnapshotView, tenantId: string): Promise<void> {
    if ((await this.lockTenant(tx, v, tenantId, 'SHARE'))?.status === 'CLOSED') throw tenantClosed(tenantId);
  }

  private async insertAudit(tx: Tx, entries: readonly AuditRecord[]): Promise<void> {
    if (entries.length > 0) await tx.rows(INSERT_AUDIT, [JSON.stringify(entries.map(auditToRow))]);
  }

  // ------------------------------------------------------------------ tenants

  async queryTenants(q: TenantListQuery): Promise<KeyedPage<TenantRecord>> {
    const w = new Where().add('status = @p', q.status).add('parent_tenant_id = @p', q.parentTenantId).search(['tenant_id', 'name'], q.search);
    const kind = q.sortBy === 'created_at' ? 'int' : 'text';
    const order = keyset(w, q.sortBy, 'tenant_id', q.sortDir, q.after, kind);
    const text = `SELECT *, ${q.sortBy} AS _k, tenant_id AS _i FROM tenants ${w.sql()} ${order} LIMIT ${w.param(q.limit + 1)}`;
    return keyedPage(await this.s.query(text, w.values), q.limit, tenantFromRow, kind);
  }

  openTenant(record: TenantRecord, ctx: OpContext): Promise<{ created: boolean; tenant: TenantRecord }> {
    return this.s.viewTransaction(async (tx, v) => {
      const existing = async () => {
        const [row] = await tx.rows('SELECT * FROM tenants WHERE tenant_id = $1', [record.tenant_id]);
        return row ? tenantFromRow(row) : undefined;
      };
      const found = await existing();
      if (found) return { created: false, tenant: found };
      if (record.parent_tenant_id !== undefined) {
        const [parent] = await tx.rows('SELECT 1 FROM tenants WHERE tenant_id = $1', [record.parent_tenant_id]);
        if (!parent) throw invalid(`parent_tenant_id ${record.parent_tenant_id} does not name an existing tenant`, { field: 'parent_tenant_id' });
      }
      const t: TenantRecord = { ...record, status: 'ACTIVE', created_at: v.now, updated_at: v.now };
      const [sql, values] = insertRow('tenants', tenantToRow(t));
      const inserted = await tx.rows(`${sql} ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id`, values);
      // Created concurrently by another request: that one emitted tenant.created.
      if (inserted.length === 0) return { created: false, tenant: (await existing())! };
      v.emit(tenantEvent('tenant.created', t, undefined, []), ctx);
      return { created: true, tenant: t };
    });
  }

  changeTenant(tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord> {
    return this.s.viewTransaction((tx, v) => this.applyTenantChange(tx, v, tenantId, change, ctx));
  }

  /** updateTenant inside an open transaction (also each row of a bulk action). */
  private async applyTenantChange(tx: Tx, v: SnapshotView, tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord> {
    const cur = await this.lockTenant(tx, v, tenantId, 'UPDATE');
    if (!cur) throw tenantNotFound(tenantId);
    const settings = TENANT_SETTINGS.filter((f) => change[f] !== undefined);
    if (cur.status === 'CLOSED') {
      if (change.status !== undefined && change.status !== 'CLOSED') {
        throw invalid(`Cannot transition tenant ${tenantId} from CLOSED to ${change.status}: CLOSED is terminal`, { field: 'status' });
      }
      if (settings.length > 0) throw invalid(`Tenant ${tenantId} is CLOSED; its settings can no longer change`, { field: settings[0] });
      // Re-close: drive any child that is not terminal yet (none, since the close is atomic); no duplicate rows.
      if (change.status === 'CLOSED') await this.closeCascade(tx, v, cur, ctx, change.cascadeAudit);
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
      const cascade = await this.closeCascade(tx, v, cur, ctx, change.cascadeAudit);
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
    await tx.rows(...updateRow('tenants', tenantToRow(next), 'tenant_id'));
    v.loadTenant(tenantId, next);
    const fields = target !== cur.status ? [...changed, 'status'] : changed;
    v.emit(tenantEvent(type, next, target !== cur.status ? cur.status : undefined, fields, correlationId), ctx);
    return next;
  }

  /**
   * The close cascade (spec CASCADE SEMANTICS, Mode A), as on the embedded store: open
   * reservations released, budgets closed (holds drained), API keys revoked, each with its
   * *_via_tenant_cascade event and audit row. The caller holds the tenant FOR UPDATE. Locks:
   * open reservations, then every budget of the tenant (scope, unit), then a second look for
   * reservations created before the budget locks were granted, then the keys.
   */
  private async closeCascade(tx: Tx, v: SnapshotView, tenant: TenantRecord, ctx: OpContext, template: AuditTemplate | undefined) {
    const now = v.now;
    const tenantId = tenant.tenant_id;
    const correlationId = cascadeCorrelation(tenantId, ctx.requestId);
    const base: AuditTemplate = template ?? {
      request_id: ctx.requestId,
      trace_id: ctx.traceId,
      source_ip: ctx.actor.source_ip,
      metadata: { actor_type: ctx.actor.type },
      expires_at: now + DEFAULT_AUDIT_RETENTION_MS,
    };
    const audits: AuditRecord[] = [];
    const audit = (resourceType: string, resourceId: string, kind: string, extra: Record<string, unknown>) =>
      audits.push({
        ...base,
        log_id: newLogId(),
        timestamp: now,
        tenant_id: tenantId,
        operation: 'tenant_close_cascade',
        resource_type: resourceType,
        resource_id: resourceId,
        status: 200,
        metadata: { ...(base.metadata ?? {}), event_kind: kind, correlation_id: correlationId, cascade_reason: 'tenant_closed', ...extra },
      });

    const activeSql = "SELECT * FROM reservations WHERE tenant_id = $1 AND status = 'ACTIVE' ORDER BY reservation_id FOR UPDATE";
    const first = (await tx.rows(activeSql, [tenantId])).map(reservationFromRow);
    const all = (await tx.rows('SELECT * FROM budgets WHERE tenant_id = $1 ORDER BY scope, unit FOR UPDATE', [tenantId])).map(budgetFromRow);
    const scopes = [...new Set(all.map((b) => b.scope))];
    v.loadBudgets(tenantId, scopes, all);
    const again = (await tx.rows(activeSql, [tenantId])).map(reservationFromRow);
    const open = [...new Map([...first, ...again].map((r) => [r.reservation_id, r])).values()].sort((a, b) =>
      a.reservation_id < b.reservation_id ? -1 : a.reservation_id > b.reservation_id ? 1 : 0,
    );
    for (const r of open) v.loadReservation(r.reservation_id, r);

    // 1. Open reservations are released (no overage, no debt); remember what each budget gave back.
    const released = new Map<string, { amount: number; count: number }>();
    for (const r0 of open) {
      const r = v.reservation(r0.reservation_id)!;
      const held = v.budgets(tenantId, r.budgeted_scopes).filter((b) => b.unit === r.unit);
      v.updateBudgets(applyReleaseHold(held, r.reserved, now));
      v.updateReservation({ ...r, status: 'RELEASED', finalized_at_ms: now });
      for (const b of held) {
        const k = `${b.scope}|${b.unit}`;
        const acc = released.get(k) ?? { amount: 0, count: 0 };
        acc.amount += r.reserved;
        acc.count += 1;
        released.set(k, acc);
      }
    }

    // 2. Budgets (ACTIVE or FROZEN) close; any hold left is drained back to remaining.
    const closing = v.budgets(tenantId, scopes).filter((b) => b.status !== 'CLOSED');
    for (const b of closing) {
      const rel = released.get(`${b.scope}|${b.unit}`);
      const drained = (rel?.amount ?? 0) + b.reserved;
      const ids = { ledger_id: b.ledger_id, scope: b.scope, unit: b.unit };
      if (drained > 0) {
        v.emit(cascadeEvent('reservation.released_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, released_amount: drained }, correlationId, b.scope), ctx);
        audit('budget', b.ledger_id, 'reservation.released_via_tenant_cascade', { released_amount: drained, reservations_released: rel?.count ?? 0 });
      }
      v.updateBudgets([{ ...b, reserved: 0, status: 'CLOSED', updated_at: now }]);
      v.emit(cascadeEvent('budget.closed_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, new_status: 'CLOSED' }, correlationId, b.scope), ctx);
      audit('budget', b.ledger_id, 'budget.closed_via_tenant_cascade', { prior_status: b.status });
    }

    // 3. API keys are revoked.
    const keys = (await tx.rows("SELECT * FROM api_keys WHERE tenant_id = $1 AND status = 'ACTIVE' ORDER BY key_id FOR UPDATE", [tenantId])).map(apiKeyFromRow);
    if (keys.length > 0) {
      await tx.rows("UPDATE api_keys SET status = 'REVOKED', revoked_at = $1, revoked_reason = 'tenant_closed' WHERE key_id = ANY($2::text[])", [
        now,
        keys.map((k) => k.key_id),
      ]);
    }
    for (const k of keys) {
      v.emit(
        cascadeEvent('api_key.revoked_via_tenant_cascade', tenantId, { key_id: k.key_id, name: k.name, prior_status: 'ACTIVE', new_status: 'REVOKED' }, correlationId),
        ctx,
      );
      audit('api_key', k.key_id, 'api_key.revoked_via_tenant_cascade', { prior_status: 'ACTIVE' });
    }
    // 4. Webhook subscriptions are disabled: nothing more is delivered to the closed tenant's endpoints.
    const subs = await tx.rows(
      "SELECT subscription_id, name, status FROM webhook_subscriptions WHERE tenant_id = $1 AND status IN ('ACTIVE', 'PAUSED') ORDER BY subscription_id FOR UPDATE",
      [tenantId],
    );
    if (subs.length > 0) {
      await tx.rows("UPDATE webhook_subscriptions SET status = 'DISABLED', updated_at = $1 WHERE subscription_id = ANY($2::text[])", [
        now,
        subs.map((w) => w.subscription_id),
      ]);
    }
    for (const w of subs) {
      const data: Record<string, unknown> = { subscription_id: w.subscription_id, prior_status: w.status, new_status: 'DISABLED' };
      if (w.name !== null && w.name !== undefined) data.name = w.name;
      v.emit(cascadeEvent('webhook.disabled_via_tenant_cascade', tenantId, data, correlationId), ctx);
      audit('webhook', w.subscription_id as string, 'webhook.disabled_via_tenant_cascade', { prior_status: w.status });
    }
    await this.insertAudit(tx, audits);
    return { correlationId, reservationsReleased: open.length, budgetsClosed: closing.length, keysRevoked: keys.length };
  }

  // ------------------------------------------------------------------ API keys

  async queryApiKeys(q: ApiKeyListQuery): Promise<KeyedPage<ApiKeyRecord>> {
    await this.s.settled();
    const w = new Where();
    // `now` is a number, spliced in as a literal: a parameter would be unreferenced when neither filter nor sort uses it.
    const effective = `CASE WHEN status = 'ACTIVE' AND expires_at <= ${Math.trunc(Number(q.now))} THEN 'EXPIRED' ELSE status END`;
    w.add('tenant_id = @p', q.tenantId).add(`(${effective}) = @p`, q.status).search(['key_id', 'name'], q.search);
    const sortExpr = q.sortBy === 'status' ? effective : q.sortBy;
    const kind = q.sortBy === 'created_at' || q.sortBy === 'expires_at' ? 'int' : 'text';
    const order = keyset(w, sortExpr, 'key_id', q.sortDir, q.after, kind);
    const text = `SELECT *, ${sortExpr} AS _k, key_id AS _i FROM api_keys ${w.sql()} ${order} LIMIT ${w.param(q.limit + 1)}`;
    return keyedPage(await this.s.query(text, w.values), q.limit, apiKeyFromRow, kind);
  }

  issueApiKey(record: ApiKeyRecord, ctx: OpContext): Promise<void> {
    return this.s.viewTransaction(async (tx, v) => {
      await this.ownerFor(tx, v, record.tenant_id, { mustBeActive: true, what: 'API keys' });
      const k: ApiKeyRecord = { ...record, status: 'ACTIVE', created_at: v.now };
      await tx.rows(...insertRow('api_keys', apiKeyToRow(k)));
      v.emit(apiKeyEvent('api_key.created', k, undefined), ctx);
    });
  }

  /** The closed-owner guard comes first, then the key's own state (revoked / expired are final). */
  private async changeableKey(tx: Tx, v: SnapshotView, keyId: string): Promise<ApiKeyRecord> {
    const [peek] = await tx.rows('SELECT tenant_id FROM api_keys WHERE key_id = $1', [keyId]);
    if (!peek) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    await this.guardOwner(tx, v, peek.tenant_id as string);
    const [row] = await tx.rows('SELECT * FROM api_keys WHERE key_id = $1 FOR UPDATE', [keyId]);
    if (!row) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    const k = apiKeyFromRow(row);
    if (k.status === 'REVOKED') throw new CyclesError('KEY_REVOKED', `API key ${keyId} is revoked; revocation is permanent`, { key_id: keyId });
    return k;
  }

  changeApiKey(keyId: string, change: ApiKeyChange, ctx: OpContext): Promise<ApiKeyRecord> {
    return this.s.viewTransaction(async (tx, v) => {
      const k = await this.changeableKey(tx, v, keyId);
      if (effectiveStatus(k, v.now) === 'EXPIRED') {
        throw new CyclesError('INVALID_REQUEST', `API key ${keyId} has expired and can no longer be changed; create a new key`, { key_id: keyId }, 409);
      }
      const next: ApiKeyRecord = { ...k };
      if (change.name !== undefined) next.name = change.name;
      if (change.description !== undefined) next.description = change.description;
      if (change.permissions !== undefined) next.permissions = change.permissions;
      if (change.scope_filter !== undefined) next.scope_filter = change.scope_filter;
      if (change.metadata !== undefined) next.metadata = change.metadata as Record<string, string>;
      await tx.rows(...updateRow('api_keys', apiKeyToRow(next), 'key_id'));
      if (changedFields(k, next, ['permissions', 'scope_filter']).length > 0) v.emit(apiKeyEvent('api_key.permissions_changed', next, k.status), ctx);
      return next;
    });
  }

  revokeApiKey(keyId: string, reason: string | undefined, ctx: OpContext): Promise<ApiKeyRecord> {
    return this.s.viewTransaction(async (tx, v) => {
      const k = await this.changeableKey(tx, v, keyId);
      const next: ApiKeyRecord = { ...k, status: 'REVOKED', revoked_at: v.now, revoked_reason: reason };
      await tx.rows(...updateRow('api_keys', apiKeyToRow(next), 'key_id'));
      v.emit(apiKeyEvent('api_key.revoked', next, effectiveStatus(k, v.now)), ctx);
      return next;
    });
  }

  /** One conditional UPDATE: no read-modify-write, so it can never resurrect a key revoked meanwhile. */
  async touchApiKey(keyId: string, now: number): Promise<void> {
    await this.s.track(this.s.query(
      "UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2 AND status = 'ACTIVE' AND (last_used_at IS NULL OR last_used_at <= $3)",
      [now, keyId, now - KEY_TOUCH_INTERVAL_MS],
    ));
  }

  // ------------------------------------------------------------------ budgets

  openBudget(record: BudgetRecord, ctx: OpContext): Promise<void> {
    return this.s.viewTransaction(async (tx, v) => {
      await this.ownerFor(tx, v, record.tenant_id, { mustBeActive: true, what: 'budgets' });
      const b: BudgetRecord = { ...record, created_at: v.now, updated_at: v.now };
      const [sql, values] = insertRow('budgets', budgetToRow(b));
      const inserted = await tx.rows(`${sql} ON CONFLICT (scope, unit) DO NOTHING RETURNING scope`, values);
      if (inserted.length === 0) {
        throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${b.scope} in unit ${b.unit}`, { scope: b.scope, unit: b.unit });
      }
      v.emit(budgetEvent('budget.created', 'CREATE', undefined, b), ctx);
    });
  }

  async queryLedgers(q: LedgerListQuery): Promise<KeyedPage<BudgetRecord>> {
    const w = ledgerWhere(q);
    const sort = LEDGER_SORT_SQL[q.sortBy]!;
    const order = keyset(w, sort.expr, 'ledger_id', q.sortDir, q.after, sort.kind);
    const text = `SELECT *, ${sort.expr} AS _k, ledger_id AS _i FROM budgets ${w.sql()} ${order} LIMIT ${w.param(q.limit + 1)}`;
    return keyedPage(await this.s.query(text, w.values), q.limit, budgetFromRow, sort.kind);
  }

  changeBudget(scope: string, unit: Unit, change: BudgetChange, ctx: OpContext): Promise<BudgetRecord> {
    return this.s.viewTransaction(async (tx, v) => {
      const [peek] = await tx.rows('SELECT tenant_id FROM budgets WHERE scope = $1 AND unit = $2', [scope, unit]);
      if (!peek) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${scope} (${unit})`, { scope, unit });
      const tenantId = peek.tenant_id as string;
      await this.guardOwner(tx, v, tenantId);
      await this.s.loadBudgets(tx, v, tenantId, [scope], true);
      const b = v.budgets(tenantId, [scope]).find((x) => x.unit === unit)!;
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
    return this.s.viewTransaction(async (tx, v) => {
      await this.ownerFor(tx, v, record.tenant_id, { mustBeActive: false, what: 'policies' });
      await this.uniqueName(tx, record.tenant_id, record.name, undefined);
      const p: PolicyRecord = { ...record, created_at: v.now, updated_at: v.now };
      // UNIQUE (tenant_id, name) settles a race: the loser is retried and then fails uniqueName.
      await tx.rows(...insertRow('policies', policyToRow(p)));
      v.emit(policyEvent('policy.created', p, []), ctx);
    });
  }

  private async uniqueName(tx: Tx, tenantId: string, name: string, except: string | undefined): Promise<void> {
    const [clash] = await tx.rows('SELECT policy_id FROM policies WHERE tenant_id = $1 AND name = $2', [tenantId, name]);
    if (clash && clash.policy_id !== except) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Tenant ${tenantId} already has a policy named "${name}"`, { name, policy_id: clash.policy_id });
    }
  }

  async getPolicy(policyId: string): Promise<PolicyRecord | undefined> {
    const [row] = await this.s.query('SELECT * FROM policies WHERE policy_id = $1', [policyId]);
    return row ? policyFromRow(row) : undefined;
  }

  async queryPolicies(q: PolicyListQuery): Promise<KeyedPage<PolicyRecord>> {
    const w = new Where().add('tenant_id = @p', q.tenantId).add('scope_pattern = @p', q.scopePattern).add('status = @p', q.status);
    scopeFilterClause(w, 'scope_pattern', q.scopeFilter);
    const order = keyset(w, 'created_at', 'policy_id', 'desc', q.after, 'int');
    const text = `SELECT *, created_at AS _k, policy_id AS _i FROM policies ${w.sql()} ${order} LIMIT ${w.param(q.limit + 1)}`;
    return keyedPage(await this.s.query(text, w.values), q.limit, policyFromRow, 'int');
  }

  changePolicy(policyId: string, change: PolicyChange, ctx: OpContext): Promise<PolicyRecord> {
    return this.s.viewTransaction(async (tx, v) => {
      const [peek] = await tx.rows('SELECT tenant_id FROM policies WHERE policy_id = $1', [policyId]);
      if (!peek) throw new CyclesError('NOT_FOUND', `Policy ${policyId} not found`, { policy_id: policyId });
      await this.guardOwner(tx, v, peek.tenant_id as string);
      const [row] = await tx.rows('SELECT * FROM policies WHERE policy_id = $1 FOR UPDATE', [policyId]);
      if (!row) throw new CyclesError('NOT_FOUND', `Policy ${policyId} not found`, { policy_id: policyId });
      const p = policyFromRow(row);
      const next: PolicyRecord = { ...p };
      for (const f of POLICY_FIELDS) if (change[f] !== undefined) (next as unknown as Record<string, unknown>)[f] = change[f];
      if (change.name !== undefined) await this.uniqueName(tx, p.tenant_id, change.name, p.policy_id);
      checkPolicy(next);
      const changed = changedFields(p, next, POLICY_FIELDS);
      if (changed.length === 0) return p;
      next.updated_at = v.now;
      await tx.rows(...updateRow('policies', policyToRow(next), 'policy_id'));
      v.emit(policyEvent('policy.updated', next, changed), ctx);
      return next;
    });
  }

  // ------------------------------------------------------------------ bulk actions

  /** Loads the bulk action's idempotency record into the view (bulk replies are keyed under __admin__). */
  private async loadBulkReplay(tx: Tx, v: SnapshotView, endpoint: string, key: string): Promise<void> {
    const [row] = await tx.rows('SELECT * FROM idempotency WHERE tenant_id = $1 AND endpoint = $2 AND key = $3', [ADMIN_SCOPE, endpoint, key]);
    v.loadIdempotency(ADMIN_SCOPE, endpoint, key, row ? idempotencyFromRow(row) : undefined);
  }

  /**
   * Counts what `select` matches without reading more than the cap allows: up to maxRows + 1
   * rows are fetched (and locked, when the statement says so); only beyond that is the exact
   * total counted, for the 400 LIMIT_EXCEEDED message.
   */
  private async capped(tx: Tx, select: string, count: string, values: unknown[], maxRows: number): Promise<{ rows: Row[]; total: number }> {
    const rows = await tx.rows(`${select} LIMIT ${maxRows + 1}`, values);
    if (rows.length <= maxRows) return { rows, total: rows.length };
    const [c] = await tx.rows(count, values);
    return { rows, total: int(c?.n) };
  }

  /** Runs one row of a bulk action in a savepoint: a failure rolls back that row only (and its buffered writes). */
  private async inSavepoint(tx: Tx, v: SnapshotView, fn: () => Promise<void> | void): Promise<unknown> {
    const saved = v.checkpoint();
    await tx.rows('SAVEPOINT bulk_row');
    try {
      await fn();
      await tx.rows('RELEASE SAVEPOINT bulk_row');
      return undefined;
    } catch (e) {
      // A deadlock or serialization failure fails the whole action, which is then retried.
      if (isRetryable(e)) throw e;
      await tx.rows('ROLLBACK TO SAVEPOINT bulk_row');
      await tx.rows('RELEASE SAVEPOINT bulk_row');
      v.restore(saved);
      return e;
    }
  }

  bulkTenants(cmd: TenantBulkCommand): Promise<OpResult> {
    const endpoint = 'bulkActionTenants';
    return this.s.viewTransaction(async (tx, v) => {
      await this.loadBulkReplay(tx, v, endpoint, cmd.idempotencyKey);
      const prior = findReplay(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash);
      if (prior) return replayed(prior);
      const w = new Where().add('status = @p', cmd.filter.status).add('parent_tenant_id = @p', cmd.filter.parentTenantId).search(['tenant_id', 'name'], cmd.filter.search);
      const { rows, total } = await this.capped(
        tx,
        `SELECT * FROM tenants ${w.sql()} ORDER BY tenant_id`,
        `SELECT count(*) AS n FROM tenants ${w.sql()}`,
        w.values,
        cmd.maxRows,
      );
      gate(total, cmd);
      const out: { succeeded: BulkRow[]; failed: BulkRow[]; skipped: BulkRow[] } = { succeeded: [], failed: [], skipped: [] };
      const target = { SUSPEND: 'SUSPENDED', REACTIVATE: 'ACTIVE', CLOSE: 'CLOSED' } as const;
      const correlation = `tenant_bulk_action:${cmd.action.toLowerCase()}:${cmd.ctx.requestId ?? 'internal'}`;
      for (const t of rows.map(tenantFromRow)) {
        const want = target[cmd.action];
        if (t.status === want) {
          out.skipped.push({ id: t.tenant_id, reason: 'ALREADY_IN_TARGET_STATE' });
          continue;
        }
        if (t.status === 'CLOSED') {
          out.failed.push({ id: t.tenant_id, error_code: 'INVALID_TRANSITION', message: `Tenant ${t.tenant_id} is CLOSED; CLOSED is terminal` });
          continue;
        }
        const err = await this.inSavepoint(tx, v, async () => {
          await this.applyTenantChange(tx, v, t.tenant_id, { status: want, correlationId: correlation, cascadeAudit: cmd.cascadeAudit }, cmd.ctx);
        });
        if (err === undefined) out.succeeded.push({ id: t.tenant_id });
        else out.failed.push(failedRow(t.tenant_id, err));
      }
      const body = { action: cmd.action, total_matched: total, ...out, idempotency_key: cmd.idempotencyKey };
      return record(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash, 200, body, v.now + BULK_REPLAY_WINDOW_MS);
    });
  }

  bulkBudgets(cmd: BudgetBulkCommand): Promise<OpResult> {
    const endpoint = 'bulkActionBudgets';
    return this.s.viewTransaction(async (tx, v) => {
      await this.loadBulkReplay(tx, v, endpoint, cmd.idempotencyKey);
      const prior = findReplay(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash);
      if (prior) return replayed(prior);
      const tenantId = cmd.filter.tenantId;
      // SHARE: a concurrent close either finishes first (rows then fail TENANT_CLOSED) or waits.
      const tenant = await this.lockTenant(tx, v, tenantId, 'SHARE');
      if (!tenant) throw new CyclesError('TENANT_NOT_FOUND', `Tenant ${tenantId} not found`, { tenant_id: tenantId });
      const w = ledgerWhere(cmd.filter);
      const { rows, total } = await this.capped(
        tx,
        `SELECT * FROM budgets ${w.sql()} ORDER BY scope, unit FOR UPDATE`,
        `SELECT count(*) AS n FROM budgets ${w.sql()}`,
        w.values,
        cmd.maxRows,
      );
      gate(total, cmd);
      const budgets = rows.map(budgetFromRow);
      v.loadBudgets(tenantId, [...new Set(budgets.map((b) => b.scope))], budgets);
      const out: { succeeded: BulkRow[]; failed: BulkRow[]; skipped: BulkRow[] } = { succeeded: [], failed: [], skipped: [] };
      const correlation = `budget_bulk_action:${cmd.action.toLowerCase()}:${cmd.ctx.requestId ?? 'internal'}`;
      for (const b of budgets) {
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
        // Pure ledger work on the view: a failing row leaves no buffered write behind.
        const saved = v.checkpoint();
        let err: unknown;
        try {
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
        } catch (e) {
          v.restore(saved);
          err = e;
        }
        if (err === undefined) out.succeeded.push({ id });
        else if (err instanceof CyclesError && err.code === 'BUDGET_EXCEEDED') out.failed.push({ id, error_code: 'BUDGET_EXCEEDED', message: err.message });
        else if (err instanceof CyclesError && (err.code === 'BUDGET_FROZEN' || err.code === 'BUDGET_CLOSED')) {
          out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: err.message });
        } else out.failed.push(failedRow(id, err));
      }
      const body = { action: cmd.action, total_matched: total, ...out, idempotency_key: cmd.idempotencyKey };
      return record(v, ADMIN_SCOPE, endpoint, cmd.idempotencyKey, cmd.hash, 200, body, v.now + BULK_REPLAY_WINDOW_MS);
    });
  }

  // ------------------------------------------------------------------ audit, events, overview

  /**
   * Audit rows arrive one per request; those of one event-loop turn are written together in one
   * transaction (one commit instead of one per request). If that write fails, each row is tried
   * on its own so that one bad row does not lose the others.
   */
  appendAudit(entries: readonly AuditRecord[]): Promise<void> {
    this.auditQueue.push(...entries);
    this.auditBatch ??= new Promise<void>((r) => setImmediate(r)).then(async () => {
      const batch = this.auditQueue;
      this.auditQueue = [];
      this.auditBatch = undefined;
      try {
        await this.s.transact((tx) => this.insertAudit(tx, batch));
      } catch (e) {
        if (batch.length === 1) throw e;
        const results = await Promise.allSettled(batch.map((entry) => this.s.transact((tx) => this.insertAudit(tx, [entry]))));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
    });
    return this.s.track(this.auditBatch);
  }

  async queryAudit(q: AuditQuery): Promise<KeyedPage<AuditRecord>> {
    await this.s.settled();
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
      w.raw(`(error_code IS NULL OR NOT (error_code = ANY(${w.param([...q.errorCodesExclude])}::text[])))`);
    }
    const sortExpr = q.sortBy === 'resource_type' || q.sortBy === 'key_id' ? `coalesce(${q.sortBy}, '')` : q.sortBy;
    const kind = q.sortBy === 'timestamp' || q.sortBy === 'status' ? 'int' : 'text';
    const order = keyset(w, sortExpr, 'log_id', q.sortDir, q.after, kind);
    const text = `SELECT *, ${sortExpr} AS _k, log_id AS _i FROM audit_logs ${w.sql()} ${order} LIMIT ${w.param(q.limit + 1)}`;
    return keyedPage(await this.s.query(text, w.values), q.limit, auditFromRow, kind);
  }

  appendEvents(drafts: readonly EventDraft[], ctx: OpContext): Promise<void> {
    return this.s.transact((tx) => this.s.writeEvents(tx, drafts, ctx));
  }

  overview(now: number, windowMs: number): Promise<OverviewSnapshot> {
    return readOverview(this.s, now, windowMs);
  }
}
