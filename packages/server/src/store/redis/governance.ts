/**
 * The governance plane on Redis: tenants, API keys, budgets, policies, bulk actions, the audit
 * log and the overview. Every mutation is one optimistic transaction (tx.ts) over the keys of the
 * tenant it changes, with its events written in the same step; the TypeScript rules (fund, the
 * event builders) are the very functions the SQLite backend runs, through a LedgerView adapter.
 * Lists read the tenant's (or, across tenants, the global) index and filter, sort and page in
 * TypeScript: admin lists cost O(rows of the tenant), never a keyspace SCAN.
 */
import type { EventDraft, OpContext } from '../../events/model.js';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError, invalid } from '../../ledger/errors.js';
import { applyReleaseHold } from '../../ledger/math.js';
import {
  checkPolicy,
  DEFAULT_MAX_EXTENSIONS,
  DEFAULT_MAX_TTL_MS,
  DEFAULT_TTL_MS,
  effectiveCaps,
  type OpResult,
  type PolicyRecord,
} from '../../ledger/ops/shared.js';
import { budgetTransitions } from '../../ledger/transitions.js';
import type { BudgetRecord, TenantRecord } from '../../ledger/types.js';
import { BULK_REPLAY_WINDOW_MS } from '../sqlite/governance-bulk.js';
import { DEFAULT_AUDIT_RETENTION_MS, newLogId } from '../sqlite/governance-cascade.js';
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
  FundingCommand,
  FundingNote,
  KeyedPage,
  LedgerFilter,
  LedgerListQuery,
  OverviewSnapshot,
  PolicyChange,
  PolicyListQuery,
  TenantBulkCommand,
  TenantChange,
  TenantListQuery,
} from '../types.js';
import type { RedisConn } from './conn.js';
import { tenantOfScope, type Keyspace } from './keys.js';
import { walkIds } from './list.js';
import { keyedPage, matchesSearch, scopeFilterMatches, type SortValue } from './paging.js';
import { apiKeyFields, apiKeyFromHash, budgetFields, budgetFromHash, pairs, tenantFields, tenantFromHash, toHash, type Hash } from './records.js';
import { runTx, type OutboxEntry, type SlotTx } from './tx.js';
import { TxLedgerView } from './view.js';

export const KEY_TOUCH_INTERVAL_MS = 60_000;

const TENANT_SETTINGS = ['name', 'metadata', 'default_commit_overage_policy', 'default_reservation_ttl_ms', 'max_reservation_ttl_ms', 'max_reservation_extensions'] as const;
const POLICY_FIELDS = ['name', 'description', 'priority', 'caps', 'commit_overage_policy', 'reservation_ttl_override', 'rate_limits', 'effective_from', 'effective_until', 'status'] as const;

const tenantNotFound = (id: string) => new CyclesError('TENANT_NOT_FOUND', `Tenant ${id} not found`, { tenant_id: id });
const tenantClosedError = (id: string) => new CyclesError('TENANT_CLOSED', `Tenant ${id} is closed; its objects can no longer change`, { tenant_id: id });

const withDefaults = (t: TenantRecord): TenantRecord => ({
  ...t,
  default_commit_overage_policy: t.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE',
  default_reservation_ttl_ms: t.default_reservation_ttl_ms ?? DEFAULT_TTL_MS,
  max_reservation_ttl_ms: t.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS,
  max_reservation_extensions: t.max_reservation_extensions ?? DEFAULT_MAX_EXTENSIONS,
});

const effectiveStatus = (k: ApiKeyRecord, now: number): ApiKeyRecord['status'] => (k.status === 'ACTIVE' && k.expires_at <= now ? 'EXPIRED' : k.status);

/** utilization = spent / allocated, 0 when nothing is allocated (the SQL backends' UTILIZATION_SQL). */
const utilizationOf = (b: BudgetRecord): number => (b.allocated === 0 ? 0 : b.spent / b.allocated);

export function ledgerMatches(b: BudgetRecord, f: LedgerFilter): boolean {
  if (f.tenantId !== undefined && b.tenant_id !== f.tenantId) return false;
  if (f.scopePrefix !== undefined && b.scope !== f.scopePrefix && !b.scope.startsWith(f.scopePrefix + '/')) return false;
  if (f.unit !== undefined && b.unit !== f.unit) return false;
  if (f.status !== undefined && b.status !== f.status) return false;
  if (f.overLimit !== undefined && b.is_over_limit !== f.overLimit) return false;
  if (f.hasDebt !== undefined && b.debt > 0 !== f.hasDebt) return false;
  if (f.utilizationMin !== undefined && !(utilizationOf(b) >= f.utilizationMin)) return false;
  if (f.utilizationMax !== undefined && !(utilizationOf(b) <= f.utilizationMax)) return false;
  if (!matchesSearch(f.search, b.tenant_id, b.scope)) return false;
  return scopeFilterMatches(b.scope, f.scopeFilter);
}

const LEDGER_SORT: Record<string, (b: BudgetRecord) => SortValue> = {
  tenant_id: (b) => b.tenant_id,
  scope: (b) => b.scope,
  unit: (b) => b.unit,
  status: (b) => b.status,
  commit_overage_policy: (b) => b.commit_overage_policy ?? '',
  utilization: utilizationOf,
  debt: (b) => b.debt,
};

/** The fields of a policy the reserve script reads, joined by \x1f (lua/evaluate.ts parses them). */
export function policyRule(p: PolicyRecord): string {
  const o = p.reservation_ttl_override;
  const caps = effectiveCaps(p);
  const opt = (v: number | string | undefined) => (v === undefined ? '' : String(v));
  return [
    p.status,
    p.scope_pattern,
    String(p.priority),
    String(p.created_at),
    opt(p.effective_from),
    opt(p.effective_until),
    opt(p.commit_overage_policy),
    opt(o?.default_ttl_ms),
    opt(o?.max_ttl_ms),
    opt(o?.max_extensions),
    caps ? JSON.stringify(caps) : '',
    p.policy_id,
  ].join('\u001f');
}

export function policyFromHash(h: Hash): PolicyRecord {
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const json = <T>(v: string | undefined) => (v === undefined || v === '' ? undefined : (JSON.parse(v) as T));
  return {
    policy_id: h.policy_id!,
    tenant_id: h.tenant_id!,
    name: h.name!,
    description: h.description,
    scope_pattern: h.scope_pattern!,
    priority: Number(h.priority),
    caps: json(h.caps),
    commit_overage_policy: h.commit_overage_policy as PolicyRecord['commit_overage_policy'],
    reservation_ttl_override: json(h.reservation_ttl_override),
    rate_limits: json(h.rate_limits),
    status: h.status as PolicyRecord['status'],
    effective_from: num(h.effective_from),
    effective_until: num(h.effective_until),
    created_at: Number(h.created_at),
    updated_at: num(h.updated_at),
  };
}

const policyFields = (p: PolicyRecord): Hash => Object.fromEntries(chunk(pairs({ ...p })));

function chunk(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

const toFields = (flat: string[]): Hash => Object.fromEntries(chunk(flat));

/** A record's fields as a full replacement (absent = deleted). */
function asPut(next: Hash, prev: Hash | undefined): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = { ...next };
  for (const k of Object.keys(prev ?? {})) if (!(k in next)) out[k] = undefined;
  return out;
}

/** What the close cascade needs from the webhook module (whose state lives in another slot). */
export interface TenantSubscriptions {
  /** The tenant's ACTIVE and PAUSED subscriptions. */
  open(tenantId: string): Promise<Array<{ subscription_id: string; name?: string | undefined; status: string }>>;
  /** Disables these subscriptions (those still ACTIVE or PAUSED). */
  disable(ids: readonly string[]): Promise<void>;
}

export class RedisGovernance {
  private readonly touched = new Map<string, number>();
  private readonly pendingAudit = new Set<Promise<void>>();
  /** Subscriptions a close cascade disables once its transaction has committed. */
  private readonly toDisable = new WeakMap<SlotTx, string[]>();

  constructor(
    private readonly conn: () => Promise<RedisConn>,
    private readonly keys: Keyspace,
    /** Told about outbox entries written (webhook fan-out marks, committed-event metrics). */
    private readonly committed: (entries: OutboxEntry[]) => Promise<void>,
    private readonly subscriptions?: TenantSubscriptions,
  ) {}

  private async tx<T>(tenant: string, body: (tx: SlotTx) => Promise<T>): Promise<T> {
    const conn = await this.conn();
    let disable: string[] = [];
    const out = await runTx(
      conn,
      this.keys.tenant(tenant),
      async (tx) => {
        const r = await body(tx);
        disable = this.toDisable.get(tx) ?? [];
        return r;
      },
      this.committed,
    );
    // Subscriptions live in the webhook slot: the cascade recorded their events and audit rows with
    // the close; their status follows right after (a re-close finishes it after a crash).
    if (disable.length > 0) await this.subscriptions?.disable(disable);
    return out;
  }

  private async index(key: string, member: string): Promise<void> {
    await (await this.conn()).call(key, ['ZADD', key, '0', member]);
  }

  private async ids(key: string): Promise<string[]> {
    const conn = await this.conn();
    const out: string[] = [];
    for await (const batch of walkIds(conn, key, undefined)) out.push(...batch);
    return out;
  }

  private async readHashes(keys: readonly string[]): Promise<Array<Hash | undefined>> {
    const conn = await this.conn();
    return Promise.all(keys.map(async (k) => toHash(await conn.call(k, ['HGETALL', k], true))));
  }

  // ------------------------------------------------------------------ tenants

  async allTenantRecords(): Promise<TenantRecord[]> {
    const ids = await this.ids(this.keys.tenants());
    return (await this.readHashes(ids.map((id) => this.keys.tenant(id)))).filter((h): h is Hash => h !== undefined).map(tenantFromHash);
  }

  async queryTenants(q: TenantListQuery): Promise<KeyedPage<TenantRecord>> {
    const rows = (await this.allTenantRecords()).filter(
      (t) => (q.status === undefined || t.status === q.status) && (q.parentTenantId === undefined || t.parent_tenant_id === q.parentTenantId) && matchesSearch(q.search, t.tenant_id, t.name),
    );
    return keyedPage(rows, (t) => t[q.sortBy] as SortValue, (t) => t.tenant_id, q.sortDir, q.after, q.limit);
  }

  async openTenant(record: TenantRecord, ctx: OpContext): Promise<{ created: boolean; tenant: TenantRecord }> {
    const k = this.keys;
    if (record.parent_tenant_id !== undefined) {
      const parent = await this.readHashes([k.tenant(record.parent_tenant_id)]);
      if (!parent[0]) throw invalid(`parent_tenant_id ${record.parent_tenant_id} does not name an existing tenant`, { field: 'parent_tenant_id' });
    }
    // Global indexes first: a listed id without a record is skipped; a record is never unlisted.
    await Promise.all([this.index(k.tenants(), record.tenant_id), this.index(k.streams(), record.tenant_id)]);
    return this.tx(record.tenant_id, async (tx) => {
      const existing = await tx.hash(k.tenant(record.tenant_id));
      if (existing) return { created: false, tenant: tenantFromHash(existing) };
      const t: TenantRecord = { ...record, status: 'ACTIVE', created_at: tx.now, updated_at: tx.now };
      tx.replace(k.tenant(t.tenant_id), toFields(tenantFields(t)));
      tx.emit(k.outbox(t.tenant_id), t.tenant_id, tenantEvent('tenant.created', t, undefined, []), ctx);
      return { created: true, tenant: t };
    });
  }

  changeTenant(tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord> {
    return this.tx(tenantId, (tx) => this.applyTenantChange(tx, tenantId, change, ctx));
  }

  private async applyTenantChange(tx: SlotTx, tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord> {
    const k = this.keys;
    const h = await tx.hash(k.tenant(tenantId));
    if (!h) throw tenantNotFound(tenantId);
    const cur = tenantFromHash(h);
    const settings = TENANT_SETTINGS.filter((f) => change[f] !== undefined);
    if (cur.status === 'CLOSED') {
      if (change.status !== undefined && change.status !== 'CLOSED') {
        throw invalid(`Cannot transition tenant ${tenantId} from CLOSED to ${change.status}: CLOSED is terminal`, { field: 'status' });
      }
      if (settings.length > 0) throw invalid(`Tenant ${tenantId} is CLOSED; its settings can no longer change`, { field: settings[0] });
      if (change.status === 'CLOSED') await this.closeCascade(tx, cur, ctx, change.cascadeAudit);
      return cur;
    }
    const next: TenantRecord = { ...cur };
    for (const f of settings) (next as unknown as Record<string, unknown>)[f] = change[f];
    const defaultTtl = next.default_reservation_ttl_ms ?? DEFAULT_TTL_MS;
    const maxTtl = next.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS;
    if (defaultTtl > maxTtl) {
      throw invalid(`default_reservation_ttl_ms (${defaultTtl}) must not exceed max_reservation_ttl_ms (${maxTtl})`, { field: 'default_reservation_ttl_ms' });
    }
    const changed = changedFields(withDefaults(cur), withDefaults(next), TENANT_SETTINGS);
    const target = change.status ?? cur.status;
    let type: string | undefined;
    let correlationId = change.correlationId ?? change.closeCorrelationId;
    if (target === 'CLOSED') {
      const cascade = await this.closeCascade(tx, cur, ctx, change.cascadeAudit);
      next.status = 'CLOSED';
      next.closed_at = tx.now;
      type = 'tenant.closed';
      correlationId ??= cascade;
    } else if (target !== cur.status) {
      next.status = target;
      next.suspended_at = target === 'SUSPENDED' ? tx.now : undefined;
      type = target === 'SUSPENDED' ? 'tenant.suspended' : 'tenant.reactivated';
    } else if (changed.length > 0) {
      type = 'tenant.updated';
    }
    if (type === undefined) return cur;
    next.updated_at = tx.now;
    tx.put(k.tenant(tenantId), asPut(toFields(tenantFields(next)), h));
    const fields = target !== cur.status ? [...changed, 'status'] : changed;
    tx.emit(k.outbox(tenantId), tenantId, tenantEvent(type, next, target !== cur.status ? cur.status : undefined, fields, correlationId), ctx);
    return next;
  }

  /**
   * The close cascade (as store/sqlite/governance-cascade.ts): open reservations released,
   * budgets closed with their holds drained, keys revoked, each with its event and audit row.
   */
  private async closeCascade(tx: SlotTx, tenant: TenantRecord, ctx: OpContext, template: AuditTemplate | undefined): Promise<string> {
    const k = this.keys;
    const tenantId = tenant.tenant_id;
    const now = tx.now;
    const correlationId = cascadeCorrelation(tenantId, ctx.requestId);
    const base: AuditTemplate = template ?? {
      request_id: ctx.requestId,
      trace_id: ctx.traceId,
      source_ip: ctx.actor.source_ip,
      metadata: { actor_type: ctx.actor.type },
      expires_at: now + DEFAULT_AUDIT_RETENTION_MS,
    };
    await this.index(k.auditOwners(), tenantId);
    const audit = (resourceType: string, resourceId: string, kind: string, extra: Record<string, unknown>) =>
      this.auditInTx(tx, {
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

    const [open, ledgerIds, keyIds] = await Promise.all([tx.members(k.due(tenantId)), tx.members(k.tenantBudgets(tenantId)), tx.members(k.tenantApiKeys(tenantId))]);
    const names = ledgerIds.length ? await tx.hash(k.tenantLedgers(tenantId)) : {};
    const scopes = [...new Set(ledgerIds.map((id) => (names?.[id] ?? '').slice((names?.[id] ?? '').indexOf('|') + 1)).filter(Boolean))];
    await TxLedgerView.preload(tx, k, tenantId, { scopes, reservations: [...open].sort() });
    const view = new TxLedgerView(tx, k, tenantId);

    // 1. Open reservations are released (no overage, no debt).
    const released = new Map<string, { amount: number; count: number }>();
    for (const id of [...open].sort()) {
      const r = view.reservation(id);
      if (!r || r.status !== 'ACTIVE') continue;
      const held = view.budgets(tenantId, r.budgeted_scopes).filter((b) => b.unit === r.unit);
      view.updateBudgets(applyReleaseHold(held, r.reserved, now));
      view.updateReservation({ ...r, status: 'RELEASED', finalized_at_ms: now });
      for (const b of held) {
        const key = `${b.scope}|${b.unit}`;
        const acc = released.get(key) ?? { amount: 0, count: 0 };
        acc.amount += r.reserved;
        acc.count += 1;
        released.set(key, acc);
      }
    }

    // 2. Budgets (ACTIVE or FROZEN) close; any hold left is drained back to remaining.
    const budgets = view
      .budgets(tenantId, scopes)
      .filter((b) => b.status !== 'CLOSED')
      .sort((a, b) => (a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
    for (const b of budgets) {
      const rel = released.get(`${b.scope}|${b.unit}`);
      const drained = (rel?.amount ?? 0) + b.reserved;
      const ids = { ledger_id: b.ledger_id, scope: b.scope, unit: b.unit };
      if (drained > 0) {
        view.emit(cascadeEvent('reservation.released_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, released_amount: drained }, correlationId, b.scope), ctx);
        audit('budget', b.ledger_id, 'reservation.released_via_tenant_cascade', { released_amount: drained, reservations_released: rel?.count ?? 0 });
      }
      view.updateBudgets([{ ...b, reserved: 0, status: 'CLOSED', updated_at: now }]);
      view.emit(cascadeEvent('budget.closed_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, new_status: 'CLOSED' }, correlationId, b.scope), ctx);
      audit('budget', b.ledger_id, 'budget.closed_via_tenant_cascade', { prior_status: b.status });
    }

    // 3. API keys are revoked.
    const keyHashes = await tx.hashes([...keyIds].sort().map((id) => k.apiKey(tenantId, id)));
    for (const h of keyHashes) {
      if (!h || h.status !== 'ACTIVE') continue;
      const key = apiKeyFromHash(h);
      tx.put(k.apiKey(tenantId, key.key_id), { status: 'REVOKED', revoked_at: String(now), revoked_reason: 'tenant_closed' });
      view.emit(
        cascadeEvent('api_key.revoked_via_tenant_cascade', tenantId, { key_id: key.key_id, name: key.name, prior_status: 'ACTIVE', new_status: 'REVOKED' }, correlationId),
        ctx,
      );
      audit('api_key', key.key_id, 'api_key.revoked_via_tenant_cascade', { prior_status: 'ACTIVE' });
    }

    // 4. Webhook subscriptions are disabled: nothing more is delivered to the closed tenant's endpoints.
    const subs = [...((await this.subscriptions?.open(tenantId)) ?? [])].sort((a, b) => (a.subscription_id < b.subscription_id ? -1 : 1));
    for (const w of subs) {
      const data: Record<string, unknown> = { subscription_id: w.subscription_id, prior_status: w.status, new_status: 'DISABLED' };
      if (w.name !== undefined) data.name = w.name;
      view.emit(cascadeEvent('webhook.disabled_via_tenant_cascade', tenantId, data, correlationId), ctx);
      audit('webhook', w.subscription_id, 'webhook.disabled_via_tenant_cascade', { prior_status: w.status });
    }
    this.toDisable.set(tx, subs.map((w) => w.subscription_id));
    return correlationId;
  }

  // ------------------------------------------------------------------ API keys

  async queryApiKeys(q: ApiKeyListQuery): Promise<KeyedPage<ApiKeyRecord>> {
    const k = this.keys;
    let records: ApiKeyRecord[];
    if (q.tenantId) {
      const ids = await this.ids(k.tenantApiKeys(q.tenantId));
      records = (await this.readHashes(ids.map((id) => k.apiKey(q.tenantId!, id)))).filter((h): h is Hash => !!h).map(apiKeyFromHash);
    } else {
      const ids = await this.ids(k.allApiKeys());
      const conn = await this.conn();
      const owners = await Promise.all(ids.map((id) => conn.call(k.apiKeyOwner(id), ['GET', k.apiKeyOwner(id)], true)));
      const keys = ids.flatMap((id, i) => (typeof owners[i] === 'string' ? [k.apiKey(owners[i] as string, id)] : []));
      records = (await this.readHashes(keys)).filter((h): h is Hash => !!h).map(apiKeyFromHash);
    }
    const rows = records.filter((r) => (q.status === undefined || effectiveStatus(r, q.now) === q.status) && matchesSearch(q.search, r.key_id, r.name));
    const value = (r: ApiKeyRecord): SortValue => (q.sortBy === 'status' ? effectiveStatus(r, q.now) : (r[q.sortBy] as SortValue));
    return keyedPage(rows, value, (r) => r.key_id, q.sortDir, q.after, q.limit);
  }

  private async ownerFor(tx: SlotTx, tenantId: string, opts: { mustBeActive: boolean; what: string }): Promise<TenantRecord> {
    const h = await tx.hash(this.keys.tenant(tenantId));
    if (!h) throw invalid(`Tenant ${tenantId} not found`, { field: 'tenant_id', tenant_id: tenantId });
    const t = tenantFromHash(h);
    if (t.status === 'CLOSED') throw tenantClosedError(tenantId);
    if (opts.mustBeActive && t.status !== 'ACTIVE') throw invalid(`Tenant ${tenantId} is ${t.status}; ${opts.what} cannot be created`, { field: 'tenant_id' });
    return t;
  }

  private async guardOwner(tx: SlotTx, tenantId: string): Promise<void> {
    const h = await tx.hash(this.keys.tenant(tenantId));
    if (h?.status === 'CLOSED') throw tenantClosedError(tenantId);
  }

  async issueApiKey(record: ApiKeyRecord, ctx: OpContext): Promise<void> {
    const k = this.keys;
    const t = record.tenant_id;
    const conn = await this.conn();
    await Promise.all([
      conn.call(k.apiKeyOwner(record.key_id), ['SET', k.apiKeyOwner(record.key_id), t]),
      conn.call(k.apiKeyByHash(record.key_hash), ['SET', k.apiKeyByHash(record.key_hash), `${t} ${record.key_id}`]),
      this.index(k.allApiKeys(), record.key_id),
    ]);
    await this.tx(t, async (tx) => {
      await this.ownerFor(tx, t, { mustBeActive: true, what: 'API keys' });
      const key: ApiKeyRecord = { ...record, status: 'ACTIVE', created_at: tx.now };
      tx.replace(k.apiKey(t, key.key_id), toFields(apiKeyFields(key)));
      tx.command('ZADD', k.tenantApiKeys(t), 0, key.key_id);
      tx.emit(k.outbox(t), t, apiKeyEvent('api_key.created', key, undefined), ctx);
    });
  }

  private async ownerOfKey(keyId: string): Promise<string | undefined> {
    const key = this.keys.apiKeyOwner(keyId);
    const v = await (await this.conn()).call(key, ['GET', key], true);
    return typeof v === 'string' ? v : undefined;
  }

  private async changeableKey(tx: SlotTx, tenant: string, keyId: string): Promise<{ key: ApiKeyRecord; hash: Hash }> {
    const h = await tx.hash(this.keys.apiKey(tenant, keyId));
    if (!h) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    const key = apiKeyFromHash(h);
    await this.guardOwner(tx, key.tenant_id);
    if (key.status === 'REVOKED') throw new CyclesError('KEY_REVOKED', `API key ${keyId} is revoked; revocation is permanent`, { key_id: keyId });
    return { key, hash: h };
  }

  async changeApiKey(keyId: string, change: ApiKeyChange, ctx: OpContext): Promise<ApiKeyRecord> {
    const owner = await this.ownerOfKey(keyId);
    if (!owner) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    return this.tx(owner, async (tx) => {
      const { key, hash } = await this.changeableKey(tx, owner, keyId);
      if (effectiveStatus(key, tx.now) === 'EXPIRED') {
        throw new CyclesError('INVALID_REQUEST', `API key ${keyId} has expired and can no longer be changed; create a new key`, { key_id: keyId }, 409);
      }
      const next: ApiKeyRecord = { ...key };
      if (change.name !== undefined) next.name = change.name;
      if (change.description !== undefined) next.description = change.description;
      if (change.permissions !== undefined) next.permissions = change.permissions;
      if (change.scope_filter !== undefined) next.scope_filter = change.scope_filter;
      if (change.metadata !== undefined) next.metadata = change.metadata as Record<string, string>;
      tx.put(this.keys.apiKey(owner, keyId), asPut(toFields(apiKeyFields(next)), hash));
      if (changedFields(key, next, ['permissions', 'scope_filter']).length > 0) {
        tx.emit(this.keys.outbox(owner), owner, apiKeyEvent('api_key.permissions_changed', next, key.status), ctx);
      }
      return next;
    });
  }

  async revokeApiKey(keyId: string, reason: string | undefined, ctx: OpContext): Promise<ApiKeyRecord> {
    const owner = await this.ownerOfKey(keyId);
    if (!owner) throw new CyclesError('NOT_FOUND', `API key ${keyId} not found`, { key_id: keyId });
    return this.tx(owner, async (tx) => {
      const { key, hash } = await this.changeableKey(tx, owner, keyId);
      const next: ApiKeyRecord = { ...key, status: 'REVOKED', revoked_at: tx.now, revoked_reason: reason };
      tx.put(this.keys.apiKey(owner, keyId), asPut(toFields(apiKeyFields(next)), hash));
      tx.emit(this.keys.outbox(owner), owner, apiKeyEvent('api_key.revoked', next, effectiveStatus(key, tx.now)), ctx);
      return next;
    });
  }

  /** Stamps last_used_at at most once a minute, and never on a key that is not ACTIVE (one script: no lost revocation). */
  async touchApiKey(keyId: string, now: number): Promise<void> {
    const last = this.touched.get(keyId);
    if (last !== undefined && now - last < KEY_TOUCH_INTERVAL_MS) return;
    if (this.touched.size > 10_000) this.touched.clear();
    this.touched.set(keyId, now);
    const owner = await this.ownerOfKey(keyId);
    if (!owner) return;
    await runTx(await this.conn(), this.keys.tenant(owner), async (tx) => {
      const h = await tx.hash(this.keys.apiKey(owner, keyId));
      if (!h || h.status !== 'ACTIVE') return;
      if (h.last_used_at !== undefined && Number(h.last_used_at) > now - KEY_TOUCH_INTERVAL_MS) return;
      tx.put(this.keys.apiKey(owner, keyId), { last_used_at: String(now) });
    });
  }

  // ------------------------------------------------------------------ budgets

  async openBudget(record: BudgetRecord, ctx: OpContext): Promise<void> {
    const k = this.keys;
    const t = record.tenant_id;
    const name = `${record.unit}|${record.scope}`;
    const conn = await this.conn();
    await Promise.all([conn.call(k.allLedgers(), ['HSET', k.allLedgers(), record.ledger_id, name]), this.index(k.allBudgets(), record.ledger_id)]);
    try {
      await this.tx(t, async (tx) => {
        await this.ownerFor(tx, t, { mustBeActive: true, what: 'budgets' });
        const key = k.budget(t, record.scope, record.unit);
        if (await tx.hash(key)) {
          throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${record.scope} in unit ${record.unit}`, { scope: record.scope, unit: record.unit });
        }
        const b: BudgetRecord = { ...record, created_at: tx.now, updated_at: tx.now };
        tx.replace(key, toFields(budgetFields(b)));
        tx.command('ZADD', k.tenantBudgets(t), 0, b.ledger_id);
        tx.command('HSET', k.tenantLedgers(t), b.ledger_id, name);
        tx.emit(k.outbox(t), t, budgetEvent('budget.created', 'CREATE', undefined, b), ctx);
      });
    } catch (e) {
      await Promise.all([conn.call(k.allLedgers(), ['HDEL', k.allLedgers(), record.ledger_id]), conn.call(k.allBudgets(), ['ZREM', k.allBudgets(), record.ledger_id])]);
      throw e;
    }
  }

  /** Every budget of a tenant, or of all tenants. */
  async budgetRecords(tenantId: string | undefined): Promise<BudgetRecord[]> {
    const k = this.keys;
    const conn = await this.conn();
    const index = tenantId ? k.tenantBudgets(tenantId) : k.allBudgets();
    const map = tenantId ? k.tenantLedgers(tenantId) : k.allLedgers();
    const out: BudgetRecord[] = [];
    for await (const batch of walkIds(conn, index, undefined)) {
      const names = await conn.call<Array<string | null>>(map, ['HMGET', map, ...batch], true);
      const keys = names.flatMap((n) => {
        if (!n) return [];
        const bar = n.indexOf('|');
        const scope = n.slice(bar + 1);
        return [k.budget(tenantOfScope(scope), scope, n.slice(0, bar))];
      });
      for (const h of await this.readHashes(keys)) if (h) out.push(budgetFromHash(h));
    }
    return out;
  }

  async queryLedgers(q: LedgerListQuery): Promise<KeyedPage<BudgetRecord>> {
    const rows = (await this.budgetRecords(q.tenantId)).filter((b) => ledgerMatches(b, q));
    return keyedPage(rows, LEDGER_SORT[q.sortBy]!, (b) => b.ledger_id, q.sortDir, q.after, q.limit);
  }

  async changeBudget(scope: string, unit: Unit, change: BudgetChange, ctx: OpContext): Promise<BudgetRecord> {
    const t = tenantOfScope(scope);
    return this.tx(t, async (tx) => {
      const key = this.keys.budget(t, scope, unit);
      const h = await tx.hash(key);
      if (!h) throw new CyclesError('BUDGET_NOT_FOUND', `Budget not found: ${scope} (${unit})`, { scope, unit });
      const b = budgetFromHash(h);
      await this.guardOwner(tx, b.tenant_id);
      if (b.status === 'CLOSED') throw new CyclesError('BUDGET_CLOSED', `Budget ${scope} (${unit}) is closed`, { scope, unit });
      await TxLedgerView.preload(tx, this.keys, t, { scopes: [scope] });
      const view = new TxLedgerView(tx, this.keys, t);
      const next: BudgetRecord = { ...b, updated_at: tx.now };
      if (change.status !== undefined) {
        if (b.status === change.status) {
          const what = change.status === 'FROZEN' ? 'already frozen' : 'not frozen';
          throw new CyclesError('INVALID_REQUEST', `Budget ${scope} (${unit}) is ${what}`, { scope, unit, status: b.status }, 409);
        }
        next.status = change.status;
        view.updateBudgets([next]);
        view.emit(budgetEvent(change.status === 'FROZEN' ? 'budget.frozen' : 'budget.unfrozen', 'STATUS_CHANGE', b, next, { reason: change.reason }), ctx);
        return next;
      }
      if (change.overdraft_limit !== undefined) {
        next.overdraft_limit = change.overdraft_limit;
        next.is_over_limit = next.debt > next.overdraft_limit;
      }
      if (change.commit_overage_policy !== undefined) next.commit_overage_policy = change.commit_overage_policy;
      if (change.metadata !== undefined) next.metadata = change.metadata as Record<string, string>;
      if (changedFields(b, next, ['overdraft_limit', 'commit_overage_policy', 'metadata']).length === 0) return b;
      view.updateBudgets([next]);
      view.emit(budgetEvent('budget.updated', 'UPDATE', b, next, { reason: change.reason }), ctx);
      for (const e of budgetTransitions([b], [next])) view.emit(e, ctx);
      return next;
    });
  }

  /** fundBudget: the ledger's fund() with its events (store/sqlite/governance-fund.ts), in one transaction. */
  fund(cmd: FundingCommand & FundingNote): Promise<OpResult> {
    return this.tx(cmd.tenantId, async (tx) => {
      await TxLedgerView.preload(tx, this.keys, cmd.tenantId, { scopes: [cmd.scope], idempotency: cmd.idempotencyKey ? [['fund', cmd.idempotencyKey]] : [] });
      return fundWithEvents(new TxLedgerView(tx, this.keys, cmd.tenantId), cmd);
    });
  }

  // ------------------------------------------------------------------ policies

  async createPolicy(record: PolicyRecord, ctx: OpContext): Promise<void> {
    const k = this.keys;
    const t = record.tenant_id;
    const conn = await this.conn();
    await conn.call(k.policyOwner(record.policy_id), ['SET', k.policyOwner(record.policy_id), t]);
    await this.tx(t, async (tx) => {
      await this.ownerFor(tx, t, { mustBeActive: false, what: 'policies' });
      await this.uniqueName(tx, t, record.name, undefined);
      const p: PolicyRecord = { ...record, created_at: tx.now, updated_at: tx.now };
      this.writePolicy(tx, p, undefined);
      tx.command('ZADD', k.tenantPolicies(t), 0, p.policy_id);
      tx.emit(k.outbox(t), t, policyEvent('policy.created', p, []), ctx);
    });
  }

  private async uniqueName(tx: SlotTx, tenantId: string, name: string, except: string | undefined): Promise<void> {
    const names = await tx.hash(this.keys.policyNames(tenantId));
    const clash = names?.[name];
    if (clash !== undefined && clash !== except) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Tenant ${tenantId} already has a policy named "${name}"`, { name, policy_id: clash });
    }
  }

  private writePolicy(tx: SlotTx, p: PolicyRecord, prev: PolicyRecord | undefined): void {
    const k = this.keys;
    const t = p.tenant_id;
    tx.replace(k.policy(t, p.policy_id), policyFields(p));
    if (prev && prev.name !== p.name) tx.command('HDEL', k.policyNames(t), prev.name);
    tx.command('HSET', k.policyNames(t), p.name, p.policy_id);
    tx.command('HSET', k.policyRules(t), p.policy_id, policyRule(p));
  }

  async getPolicy(policyId: string): Promise<PolicyRecord | undefined> {
    const conn = await this.conn();
    const owner = await conn.call(this.keys.policyOwner(policyId), ['GET', this.keys.policyOwner(policyId)], true);
    if (typeof owner !== 'string') return undefined;
    const [h] = await this.readHashes([this.keys.policy(owner, policyId)]);
    return h ? policyFromHash(h) : undefined;
  }

  async queryPolicies(q: PolicyListQuery): Promise<KeyedPage<PolicyRecord>> {
    const ids = await this.ids(this.keys.tenantPolicies(q.tenantId));
    const all = (await this.readHashes(ids.map((id) => this.keys.policy(q.tenantId, id)))).filter((h): h is Hash => !!h).map(policyFromHash);
    const rows = all.filter(
      (p) => (q.scopePattern === undefined || p.scope_pattern === q.scopePattern) && (q.status === undefined || p.status === q.status) && scopeFilterMatches(p.scope_pattern, q.scopeFilter),
    );
    return keyedPage(rows, (p) => p.created_at, (p) => p.policy_id, 'desc', q.after, q.limit);
  }

  async changePolicy(policyId: string, change: PolicyChange, ctx: OpContext): Promise<PolicyRecord> {
    const conn = await this.conn();
    const owner = await conn.call(this.keys.policyOwner(policyId), ['GET', this.keys.policyOwner(policyId)], true);
    if (typeof owner !== 'string') throw new CyclesError('NOT_FOUND', `Policy ${policyId} not found`, { policy_id: policyId });
    return this.tx(owner, async (tx) => {
      const h = await tx.hash(this.keys.policy(owner, policyId));
      if (!h) throw new CyclesError('NOT_FOUND', `Policy ${policyId} not found`, { policy_id: policyId });
      const p = policyFromHash(h);
      await this.guardOwner(tx, p.tenant_id);
      const next: PolicyRecord = { ...p };
      for (const f of POLICY_FIELDS) if (change[f] !== undefined) (next as unknown as Record<string, unknown>)[f] = change[f];
      if (change.name !== undefined) await this.uniqueName(tx, p.tenant_id, change.name, p.policy_id);
      checkPolicy(next);
      const changed = changedFields(p, next, POLICY_FIELDS);
      if (changed.length === 0) return p;
      next.updated_at = tx.now;
      this.writePolicy(tx, next, p);
      tx.emit(this.keys.outbox(owner), owner, policyEvent('policy.updated', next, changed), ctx);
      return next;
    });
  }

  // ------------------------------------------------------------------ bulk actions

  private async bulkReplay(endpoint: string, key: string, hash: string): Promise<OpResult | undefined> {
    const [h] = await this.readHashes([this.keys.adminIdempotency(endpoint, key)]);
    if (!h || Number(h.e) <= Date.now()) return undefined;
    if (h.h !== hash) {
      throw new CyclesError('IDEMPOTENCY_MISMATCH', `Idempotency key "${key}" was already used with a different request payload`, { idempotency_key: key });
    }
    return { status: Number(h.s), body: h.b!, replayed: true };
  }

  private async bulkRecord(endpoint: string, key: string, hash: string, body: object): Promise<OpResult> {
    const text = JSON.stringify(body);
    const k = this.keys.adminIdempotency(endpoint, key);
    await runTx(await this.conn(), k, async (tx) => {
      const existing = await tx.hash(k);
      if (existing && Number(existing.e) > tx.now) return;
      const expires = tx.now + BULK_REPLAY_WINDOW_MS;
      tx.replace(k, { h: hash, s: '200', b: text, r: '', c: String(tx.now), e: String(expires) });
      tx.command('PEXPIREAT', k, expires);
    });
    const stored = await this.bulkReplay(endpoint, key, hash);
    return stored ? { ...stored, replayed: false } : { status: 200, body: text, replayed: false };
  }

  /**
   * bulkActionTenants: each tenant is changed in its own transaction (tenants live in different
   * slots), so a crash can leave a batch half applied; a retry with the same key then skips the
   * rows already in the target state and finishes the rest.
   */
  async bulkTenants(cmd: TenantBulkCommand): Promise<OpResult> {
    const endpoint = 'bulkActionTenants';
    const prior = await this.bulkReplay(endpoint, cmd.idempotencyKey, cmd.hash);
    if (prior) return prior;
    const f = cmd.filter;
    const rows = (await this.allTenantRecords())
      .filter((t) => (f.status === undefined || t.status === f.status) && (f.parentTenantId === undefined || t.parent_tenant_id === f.parentTenantId) && matchesSearch(f.search, t.tenant_id, t.name))
      .sort((a, b) => (a.tenant_id < b.tenant_id ? -1 : 1));
    gate(rows.length, cmd);
    const out = { succeeded: [] as BulkRow[], failed: [] as BulkRow[], skipped: [] as BulkRow[] };
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
      try {
        await this.changeTenant(t.tenant_id, { status: want, correlationId: correlation, cascadeAudit: cmd.cascadeAudit }, cmd.ctx);
        out.succeeded.push({ id: t.tenant_id });
      } catch (e) {
        out.failed.push(failedRow(t.tenant_id, e));
      }
    }
    return this.bulkRecord(endpoint, cmd.idempotencyKey, cmd.hash, { action: cmd.action, total_matched: rows.length, ...out, idempotency_key: cmd.idempotencyKey });
  }

  /**
   * bulkActionBudgets: one tenant, so one transaction applies every row; the reply is stored in
   * it too (under the tenant), then published under the admin scope for replays.
   */
  async bulkBudgets(cmd: BudgetBulkCommand): Promise<OpResult> {
    const endpoint = 'bulkActionBudgets';
    const prior = await this.bulkReplay(endpoint, cmd.idempotencyKey, cmd.hash);
    if (prior) return prior;
    const tenantId = cmd.filter.tenantId;
    const k = this.keys;
    const ledgerIds = await this.ids(k.tenantBudgets(tenantId));
    const [names] = await this.readHashes([k.tenantLedgers(tenantId)]);
    const scopes = [...new Set(ledgerIds.map((id) => names?.[id] ?? '').filter(Boolean).map((n) => n.slice(n.indexOf('|') + 1)))];
    const result = await this.tx(tenantId, async (tx) => {
      await TxLedgerView.preload(tx, k, tenantId, { scopes, idempotency: [[endpoint, cmd.idempotencyKey]] });
      const view = new TxLedgerView(tx, k, tenantId);
      const own = view.idempotency(tenantId, endpoint, cmd.idempotencyKey);
      if (own && own.expires_at > tx.now) {
        if (own.request_hash !== cmd.hash) {
          throw new CyclesError('IDEMPOTENCY_MISMATCH', `Idempotency key "${cmd.idempotencyKey}" was already used with a different request payload`, { idempotency_key: cmd.idempotencyKey });
        }
        return { status: own.status, body: own.body, replayed: true } as OpResult;
      }
      const tenant = view.tenant(tenantId);
      if (!tenant) throw new CyclesError('TENANT_NOT_FOUND', `Tenant ${tenantId} not found`, { tenant_id: tenantId });
      const rows = view
        .budgets(tenantId, scopes)
        .filter((b) => ledgerMatches(b, cmd.filter))
        .sort((a, b) => (a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
      gate(rows.length, cmd);
      const out = { succeeded: [] as BulkRow[], failed: [] as BulkRow[], skipped: [] as BulkRow[] };
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
        try {
          // fund() checks everything before it writes, so a refused row leaves nothing behind.
          fundWithEvents(view, {
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
          out.succeeded.push({ id });
        } catch (e) {
          if (e instanceof CyclesError && e.code === 'BUDGET_EXCEEDED') out.failed.push({ id, error_code: 'BUDGET_EXCEEDED', message: e.message });
          else if (e instanceof CyclesError && (e.code === 'BUDGET_FROZEN' || e.code === 'BUDGET_CLOSED')) out.failed.push({ id, error_code: 'INVALID_TRANSITION', message: e.message });
          else out.failed.push(failedRow(id, e));
        }
      }
      const body = JSON.stringify({ action: cmd.action, total_matched: rows.length, ...out, idempotency_key: cmd.idempotencyKey });
      view.putIdempotency({
        tenant_id: tenantId,
        endpoint,
        key: cmd.idempotencyKey,
        request_hash: cmd.hash,
        status: 200,
        body,
        created_at: tx.now,
        expires_at: tx.now + BULK_REPLAY_WINDOW_MS,
      });
      return { status: 200, body, replayed: false } as OpResult;
    });
    if (!result.replayed) await this.bulkRecord(endpoint, cmd.idempotencyKey, cmd.hash, JSON.parse(result.body) as object);
    return result;
  }

  // ------------------------------------------------------------------ audit, events, overview

  private auditInTx(tx: SlotTx, e: AuditRecord): void {
    const k = this.keys;
    tx.command('ZADD', k.auditIndex(e.tenant_id), e.timestamp, e.log_id);
    tx.command('SET', k.auditRow(e.tenant_id, e.log_id), JSON.stringify(e), 'PXAT', e.expires_at);
  }

  /**
   * Audit rows are appended after the reply of their request is queued (not awaited by it), so
   * a client's next request could overtake them; reads of the audit log wait for this process's
   * pending appends first (the embedded store gets the same order from its commit groups).
   */
  appendAudit(entries: readonly AuditRecord[]): Promise<void> {
    const p = this.writeAudit(entries);
    this.pendingAudit.add(p);
    const done = () => this.pendingAudit.delete(p);
    p.then(done, done);
    return p;
  }

  private async writeAudit(entries: readonly AuditRecord[]): Promise<void> {
    const k = this.keys;
    const conn = await this.conn();
    const owners = [...new Set(entries.map((e) => e.tenant_id))];
    await Promise.all(owners.map((o) => this.index(k.auditOwners(), o)));
    await Promise.all(
      entries.map(async (e) => {
        await conn.call(k.auditRow(e.tenant_id, e.log_id), ['SET', k.auditRow(e.tenant_id, e.log_id), JSON.stringify(e), 'PXAT', String(e.expires_at)]);
        await conn.call(k.auditIndex(e.tenant_id), ['ZADD', k.auditIndex(e.tenant_id), String(e.timestamp), e.log_id]);
      }),
    );
  }

  async queryAudit(q: AuditQuery): Promise<KeyedPage<AuditRecord>> {
    if (this.pendingAudit.size > 0) await Promise.allSettled([...this.pendingAudit]);
    const k = this.keys;
    const conn = await this.conn();
    const owners = q.tenantId ? [q.tenantId] : await this.ids(k.auditOwners());
    const rows: AuditRecord[] = [];
    for (const owner of owners) {
      const lo = q.from === undefined ? '-inf' : String(q.from);
      const hi = q.to === undefined ? '+inf' : String(q.to);
      const ids = await conn.call<string[]>(k.auditIndex(owner), ['ZRANGE', k.auditIndex(owner), lo, hi, 'BYSCORE'], true);
      const texts = await Promise.all(ids.map((id) => conn.call(k.auditRow(owner, id), ['GET', k.auditRow(owner, id)], true)));
      for (const t of texts) if (typeof t === 'string') rows.push(JSON.parse(t) as AuditRecord);
    }
    const inList = (v: string | undefined, list: string[] | undefined) => !list || list.length === 0 || (v !== undefined && list.includes(v));
    const filtered = rows.filter(
      (r) =>
        (q.tenantId === undefined || r.tenant_id === q.tenantId) &&
        (q.keyId === undefined || r.key_id === q.keyId) &&
        (q.resourceId === undefined || r.resource_id === q.resourceId) &&
        (q.traceId === undefined || r.trace_id === q.traceId) &&
        (q.requestId === undefined || r.request_id === q.requestId) &&
        inList(r.operation, q.operations) &&
        inList(r.resource_type, q.resourceTypes) &&
        inList(r.error_code, q.errorCodes) &&
        (!q.errorCodesExclude || q.errorCodesExclude.length === 0 || r.error_code === undefined || !q.errorCodesExclude.includes(r.error_code)) &&
        (q.status === undefined || r.status === q.status) &&
        (q.statusMin === undefined || r.status >= q.statusMin) &&
        (q.statusMax === undefined || r.status <= q.statusMax) &&
        (q.from === undefined || r.timestamp >= q.from) &&
        (q.to === undefined || r.timestamp <= q.to) &&
        matchesSearch(q.search, r.resource_id, r.log_id, r.error_code, r.operation),
    );
    const value = (r: AuditRecord): SortValue => {
      const v = r[q.sortBy];
      return v === undefined ? '' : (v as SortValue);
    };
    return keyedPage(filtered, value, (r) => r.log_id, q.sortDir, q.after, q.limit);
  }

  /** Drops index entries of audit rows whose retention has passed (the rows expire on their own). */
  async purgeAudit(now: number): Promise<void> {
    const k = this.keys;
    const conn = await this.conn();
    for (const owner of await this.ids(k.auditOwners())) {
      const ids = await conn.call<string[]>(k.auditIndex(owner), ['ZRANGE', k.auditIndex(owner), '-inf', String(now - 86_400_000), 'BYSCORE', 'LIMIT', '0', '1000'], true);
      const alive = await Promise.all(ids.map((id) => conn.call<number>(k.auditRow(owner, id), ['EXISTS', k.auditRow(owner, id)], true)));
      const gone = ids.filter((_, i) => Number(alive[i]) === 0);
      if (gone.length) await conn.call(k.auditIndex(owner), ['ZREM', k.auditIndex(owner), ...gone]);
    }
  }

  /** Events written outside a state change, each to its tenant's outbox. */
  async appendEvents(drafts: readonly EventDraft[], ctx: OpContext): Promise<void> {
    const k = this.keys;
    const conn = await this.conn();
    const byOwner = new Map<string, EventDraft[]>();
    for (const d of drafts) byOwner.set(d.tenant_id, [...(byOwner.get(d.tenant_id) ?? []), d]);
    for (const [owner, list] of byOwner) {
      await this.index(k.streams(), owner);
      const now = await conn.call<string[]>(k.outbox(owner), ['TIME'], true);
      const ms = Number(now[0]) * 1000 + Math.floor(Number(now[1]) / 1000);
      const id = await conn.call(k.outbox(owner), ['XADD', k.outbox(owner), '*', 'f', JSON.stringify({ op: 'drafts', now: ms, ctx, d: list })]);
      await this.committed([{ owner, id: String(id) }]);
    }
  }

  overviewParts(): { tenants: () => Promise<TenantRecord[]>; budgets: () => Promise<BudgetRecord[]> } {
    return { tenants: () => this.allTenantRecords(), budgets: () => this.budgetRecords(undefined) };
  }
}

function gate(total: number, cmd: { maxRows: number; expectedCount?: number | undefined }): void {
  if (total > cmd.maxRows) {
    throw new CyclesError('LIMIT_EXCEEDED', `The filter matches ${total} rows; a bulk action applies to at most ${cmd.maxRows}. Narrow the filter.`, { total_matched: total, max_rows: cmd.maxRows }, 400);
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

/** The overview (getAdminOverview) from whole-table reads; see store/sqlite/governance-overview.ts. */
export async function buildOverview(
  parts: { tenants: TenantRecord[]; budgets: BudgetRecord[]; webhooks: Array<{ subscription_id: string; url: string; status: string; consecutive_failures: number; last_failure_at?: number | undefined }> },
  events: Array<{ event_type: string; category: string; timestamp: number; body: string }>,
  top: number,
): Promise<OverviewSnapshot> {
  const { tenants, budgets, webhooks } = parts;
  const count = <T>(list: T[], p: (x: T) => boolean) => list.filter(p).length;
  const byDebt = (a: BudgetRecord, b: BudgetRecord) => b.debt - a.debt || (a.ledger_id < b.ledger_id ? -1 : 1);
  const byUnit: Record<string, number> = {};
  for (const b of [...budgets].sort((a, b) => (a.unit < b.unit ? -1 : 1))) byUnit[b.unit] = (byUnit[b.unit] ?? 0) + 1;
  const eventsByCategory: Record<string, number> = {};
  for (const e of [...events].sort((a, b) => (a.category < b.category ? -1 : 1))) eventsByCategory[e.category] = (eventsByCategory[e.category] ?? 0) + 1;
  const recent = (type: string) =>
    events
      .filter((e) => e.event_type === type)
      .sort((a, b) => b.timestamp - a.timestamp)
      .slice(0, top)
      .map((e) => e.body);
  const denialsByReason: Record<string, number> = {};
  const reasons = events
    .filter((e) => e.event_type === 'reservation.denied')
    .map((e) => (JSON.parse(e.body) as { data?: { reason_code?: unknown } }).data?.reason_code)
    .filter((r): r is string => typeof r === 'string')
    .sort();
  for (const r of reasons) denialsByReason[r] = (denialsByReason[r] ?? 0) + 1;
  return {
    tenants: { total: tenants.length, active: count(tenants, (t) => t.status === 'ACTIVE'), suspended: count(tenants, (t) => t.status === 'SUSPENDED'), closed: count(tenants, (t) => t.status === 'CLOSED') },
    budgets: {
      total: budgets.length,
      active: count(budgets, (b) => b.status === 'ACTIVE'),
      frozen: count(budgets, (b) => b.status === 'FROZEN'),
      closed: count(budgets, (b) => b.status === 'CLOSED'),
      over_limit: count(budgets, (b) => b.is_over_limit),
      with_debt: count(budgets, (b) => b.debt > 0),
      by_unit: byUnit,
    },
    overLimit: budgets.filter((b) => b.is_over_limit).sort(byDebt).slice(0, top),
    inDebt: budgets.filter((b) => b.debt > 0).sort(byDebt).slice(0, top),
    webhooks: {
      total: webhooks.length,
      active: count(webhooks, (w) => w.status === 'ACTIVE'),
      disabled: count(webhooks, (w) => w.status === 'DISABLED'),
      with_failures: count(webhooks, (w) => w.consecutive_failures > 0),
    },
    failingWebhooks: webhooks
      .filter((w) => w.consecutive_failures > 0)
      .sort((a, b) => b.consecutive_failures - a.consecutive_failures || (a.subscription_id < b.subscription_id ? -1 : 1))
      .slice(0, top)
      .map((w) => ({ subscription_id: w.subscription_id, url: w.url, consecutive_failures: w.consecutive_failures, last_failure_at: w.last_failure_at })),
    eventsByCategory,
    recentDenials: recent('reservation.denied'),
    recentExpiries: recent('reservation.expired'),
    denialsByReason,
  };
}

