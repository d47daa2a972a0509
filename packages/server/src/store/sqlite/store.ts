import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError } from '../../ledger/errors.js';
import { decide } from '../../ledger/ops/decide.js';
import { createEvent } from '../../ledger/ops/event.js';
import { reserve } from '../../ledger/ops/reserve.js';
import { commit, expire, extend, release } from '../../ledger/ops/settle.js';
import type { OpResult } from '../../ledger/ops/shared.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import { buildEvent, type EventDraft, type EventRecord, type OpContext } from '../../events/model.js';
import type {
  ApiKeyQuery,
  ApiKeyRecord,
  BudgetPatch,
  BudgetQuery,
  DeliveryQuery,
  EventQuery,
  WebhookQuery,
  FundingCommand,
  Page,
  ReservationQuery,
  Store,
  TenantQuery,
} from '../types.js';
import { reservationListSql } from './queries.js';
import { eventFromRow, eventListSql } from './events.js';
import { SqliteWebhooks } from './webhooks.js';
import type { DeliveryOutcome, WebhookRecord } from '../../events/types.js';
import {
  apiKeyFromRow,
  apiKeyToRow,
  budgetFromRow,
  budgetToRow,
  idempotencyFromRow,
  reservationFromRow,
  reservationToRow,
  tenantFromRow,
  tenantToRow,
} from './rows.js';
import { SCHEMA, SCHEMA_VERSION } from './schema.js';
import { SqliteGovernance } from './governance.js';
import { fundWithEvents } from './governance-fund.js';
import { policyFromRow } from './governance-sql.js';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { FundingNote, GovernanceStore } from '../types.js';

export interface SqliteOptions {
  dataDir: string;
  /** 'full' fsyncs every commit group (survives power loss); 'normal' survives process crashes. */
  sync: 'normal' | 'full';
  /** Injected clock for tests; defaults to Date.now. */
  clock?: () => number;
  /** Told, after each group commits, which events its mutations wrote (never for rolled-back work). */
  onEventsCommitted?: (events: readonly EventRecord[]) => void;
}

type Row = Record<string, unknown>;

/** Appends one SQL condition and its named parameter. */
function add(where: string[], params: Row, clause: string, name: string, value: unknown): void {
  where.push(clause);
  params[name] = value;
}

interface Pending {
  run: (view: SqliteView) => OpResult | number;
  resolve: (v: OpResult | number) => void;
  reject: (e: unknown) => void;
}

const insertSql = (table: string, row: Row): string => {
  const cols = Object.keys(row);
  return `INSERT INTO ${table} (${cols.join(',')}) VALUES (${cols.map((c) => '@' + c).join(',')})`;
};

/**
 * Embedded store on SQLite (WAL). Mutations that arrive in the same event-loop turn are
 * applied in one transaction (group commit), each inside its own savepoint so one failing
 * operation never disturbs the others; replies are released only after the group commits.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly clock: () => number;
  private readonly statements = new Map<string, Database.Statement>();
  private queue: Pending[] = [];
  private scheduled = false;
  private closed = false;
  private readonly view: SqliteView;
  private readonly runGroup: Database.Transaction<(batch: Pending[], results: Array<{ ok: boolean; value: unknown }>) => void>;
  private readonly onEventsCommitted: SqliteOptions['onEventsCommitted'];

  constructor(opts: SqliteOptions) {
    mkdirSync(opts.dataDir, { recursive: true });
    this.db = new Database(join(opts.dataDir, 'cycles.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${opts.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('schema_version', String(SCHEMA_VERSION));
    this.clock = opts.clock ?? Date.now;
    this.onEventsCommitted = opts.onEventsCommitted;
    this.view = new SqliteView(this);
    const one = this.db.transaction((p: Pending) => p.run(this.view));
    this.runGroup = this.db.transaction((batch: Pending[], results: Array<{ ok: boolean; value: unknown }>) => {
      for (const p of batch) {
        this.view.now = this.clock();
        const written = this.view.written.length;
        try {
          // Nested transaction = savepoint: a failing operation rolls back only its own writes.
          results.push({ ok: true, value: one(p) });
        } catch (e) {
          this.view.written.length = written;
          // Some failures (disk full, I/O) make SQLite roll back the whole group: stop here, or the
          // rest would run outside the group's transaction and be half-reported.
          if (!this.db.inTransaction) throw e;
          results.push({ ok: false, value: e });
        }
      }
    });
  }

  /** Whether anyone listens for committed events (the view keeps them only then). */
  get reportsEvents(): boolean {
    return this.onEventsCommitted !== undefined;
  }

  /** Prepared statements are cached by their SQL text. */
  stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /** Runs `fn` atomically inside the next commit group (other modules of this backend use it). */
  transact<T>(fn: (view: LedgerView & { now: number }) => T): Promise<T> {
    return this.enqueue(fn as unknown as (view: SqliteView) => number) as unknown as Promise<T>;
  }

  private enqueue<T extends OpResult | number>(run: (view: SqliteView) => T): Promise<T> {
    if (this.closed) return Promise.reject(new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (v: OpResult | number) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const results: Array<{ ok: boolean; value: unknown }> = [];
    try {
      // IMMEDIATE takes the write lock up front: another process on the same file (a dispatcher)
      // waits on busy_timeout instead of failing on a lock upgrade.
      this.runGroup.immediate(batch, results);
    } catch (e) {
      // The group was rolled back (I/O error, disk full): nothing in it was applied.
      this.view.written = [];
      const err = new CyclesError('SERVICE_UNAVAILABLE', `Store write failed: ${(e as Error).message}`);
      for (const p of batch) p.reject(err);
      return;
    }
    if (this.view.written.length > 0) {
      const written = this.view.written;
      this.view.written = [];
      try {
        this.onEventsCommitted?.(written);
      } catch {
        // An observer (metrics) must never fail a committed mutation.
      }
    }
    batch.forEach((p, i) => {
      const r = results[i]!;
      if (r.ok) p.resolve(r.value as OpResult | number);
      else p.reject(r.value);
    });
  }

  async ping(): Promise<void> {
    if (this.closed) throw new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed');
    this.stmt('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Let queued mutations finish before closing the file.
    while (this.queue.length > 0 || this.scheduled) await new Promise((r) => setImmediate(r));
    this.closed = true;
    this.db.close();
  }

  reserve = (cmd: Parameters<Store['reserve']>[0]) => this.enqueue((v) => reserve(v, cmd));
  decide = (cmd: Parameters<Store['decide']>[0]) => this.enqueue((v) => decide(v, cmd));
  commit = (cmd: Parameters<Store['commit']>[0]) => this.enqueue((v) => commit(v, cmd));
  release = (cmd: Parameters<Store['release']>[0]) => this.enqueue((v) => release(v, cmd));
  extend = (cmd: Parameters<Store['extend']>[0]) => this.enqueue((v) => extend(v, cmd));
  createEvent = (cmd: Parameters<Store['createEvent']>[0]) => this.enqueue((v) => createEvent(v, cmd));
  fundBudget = (cmd: FundingCommand & FundingNote) => this.enqueue((v) => fundWithEvents(v, cmd));

  async expireDue(limit: number): Promise<number> {
    const ids = this.stmt('SELECT reservation_id FROM reservations WHERE due_at_ms IS NOT NULL AND due_at_ms < ? ORDER BY due_at_ms LIMIT ?')
      .all(this.clock(), limit)
      .map((r) => (r as Row).reservation_id as string);
    if (ids.length === 0) return 0;
    const ctx = { actor: { type: 'system' as const }, traceId: randomBytes(16).toString('hex') };
    return this.enqueue((v) => ids.filter((id) => expire(v, id, ctx)).length);
  }

  async purge(reservationRetentionMs: number): Promise<void> {
    const now = this.clock();
    await this.enqueue(() => {
      this.stmt('DELETE FROM idempotency WHERE expires_at < ?').run(now);
      this.stmt("DELETE FROM reservations WHERE finalized_at_ms IS NOT NULL AND finalized_at_ms < ?").run(now - reservationRetentionMs);
      this.stmt("DELETE FROM reservations WHERE status = 'EXPIRED' AND expired_at_ms < ?").run(now - reservationRetentionMs);
      this.governance.purgeAudit(now);
      return 0;
    });
  }

  async getReservation(id: string): Promise<ReservationRecord | undefined> {
    const row = this.stmt('SELECT * FROM reservations WHERE reservation_id = ?').get(id) as Row | undefined;
    return row ? reservationFromRow(row) : undefined;
  }

  async listReservations(q: ReservationQuery): Promise<Page<ReservationRecord>> {
    const { sql, params } = reservationListSql(q);
    const rows = this.stmt(sql).all(params) as Row[];
    const hasMore = rows.length > q.limit;
    return { rows: rows.slice(0, q.limit).map(reservationFromRow), hasMore };
  }

  // ---- tenants ----
  async createTenant(t: TenantRecord): Promise<{ created: boolean; tenant: TenantRecord }> {
    const row = tenantToRow(t);
    const info = this.stmt(insertSql('tenants', row).replace('INSERT', 'INSERT OR IGNORE')).run(row);
    const stored = (await this.getTenant(t.tenant_id))!;
    return { created: info.changes === 1, tenant: stored };
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const row = this.stmt('SELECT * FROM tenants WHERE tenant_id = ?').get(id) as Row | undefined;
    return row ? tenantFromRow(row) : undefined;
  }

  async listTenants(q: TenantQuery): Promise<Page<TenantRecord>> {
    const where: string[] = [];
    const params: Row = { limit: q.limit + 1 };
    if (q.status) add(where, params, 'status = @status', 'status', q.status);
    if (q.parentTenantId) add(where, params, 'parent_tenant_id = @parent', 'parent', q.parentTenantId);
    if (q.afterId) add(where, params, 'tenant_id > @after', 'after', q.afterId);
    const sql = `SELECT * FROM tenants ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY tenant_id LIMIT @limit`;
    const rows = this.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(tenantFromRow), hasMore: rows.length > q.limit };
  }

  async updateTenant(id: string, patch: Partial<TenantRecord>): Promise<TenantRecord | undefined> {
    const current = await this.getTenant(id);
    if (!current) return undefined;
    const next = tenantToRow({ ...current, ...patch, tenant_id: id });
    const cols = Object.keys(next).filter((c) => c !== 'tenant_id');
    this.stmt(`UPDATE tenants SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE tenant_id = @tenant_id`).run(next);
    return this.getTenant(id);
  }

  /** The close cascade lives in governance-cascade.ts (closing is updateTenant with status CLOSED). */
  closeTenant = (id: string, _now: number, ctx?: OpContext): Promise<TenantRecord> =>
    this.governance.changeTenant(id, { status: 'CLOSED' }, ctx ?? { actor: { type: 'system' } });

  // ---- API keys ----
  async createApiKey(k: ApiKeyRecord): Promise<void> {
    const row = apiKeyToRow(k);
    this.stmt(insertSql('api_keys', row)).run(row);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    const row = this.stmt('SELECT * FROM api_keys WHERE key_id = ?').get(id) as Row | undefined;
    return row ? apiKeyFromRow(row) : undefined;
  }

  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = this.stmt('SELECT * FROM api_keys WHERE key_hash = ?').get(hash) as Row | undefined;
    return row ? apiKeyFromRow(row) : undefined;
  }

  async listApiKeys(q: ApiKeyQuery): Promise<Page<ApiKeyRecord>> {
    const where: string[] = [];
    const params: Row = { limit: q.limit + 1 };
    if (q.tenantId) add(where, params, 'tenant_id = @tenant', 'tenant', q.tenantId);
    if (q.status) add(where, params, 'status = @status', 'status', q.status);
    if (q.afterId) add(where, params, 'key_id > @after', 'after', q.afterId);
    const sql = `SELECT * FROM api_keys ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY key_id LIMIT @limit`;
    const rows = this.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(apiKeyFromRow), hasMore: rows.length > q.limit };
  }

  async updateApiKey(id: string, patch: Partial<ApiKeyRecord>): Promise<ApiKeyRecord | undefined> {
    const current = await this.getApiKey(id);
    if (!current) return undefined;
    const next = apiKeyToRow({ ...current, ...patch, key_id: id });
    const cols = Object.keys(next).filter((c) => c !== 'key_id');
    this.stmt(`UPDATE api_keys SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE key_id = @key_id`).run(next);
    return this.getApiKey(id);
  }

  // ---- budgets ----
  async createBudget(b: BudgetRecord): Promise<void> {
    const row = budgetToRow(b);
    const info = this.stmt(insertSql('budgets', row).replace('INSERT', 'INSERT OR IGNORE')).run(row);
    if (info.changes === 0) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${b.scope} in unit ${b.unit}`, { scope: b.scope, unit: b.unit });
    }
  }

  async getBudget(scope: string, unit: Unit): Promise<BudgetRecord | undefined> {
    const row = this.stmt('SELECT * FROM budgets WHERE scope = ? AND unit = ?').get(scope, unit) as Row | undefined;
    return row ? budgetFromRow(row) : undefined;
  }

  async listBudgets(q: BudgetQuery): Promise<Page<BudgetRecord>> {
    const where: string[] = [];
    const params: Row = { limit: q.limit + 1 };
    if (q.tenantId) add(where, params, 'tenant_id = @tenant', 'tenant', q.tenantId);
    if (q.scopePrefix) {
      where.push("(scope = @prefix OR substr(scope, 1, length(@prefix) + 1) = @prefix || '/')");
      params.prefix = q.scopePrefix;
    }
    if (q.scopes) {
      const names = q.scopes.map((_, i) => `@s${i}`);
      q.scopes.forEach((s, i) => (params[`s${i}`] = s));
      where.push(q.scopes.length ? `scope IN (${names.join(',')})` : '0');
    }
    for (const [level, value] of Object.entries(q.segments ?? {})) {
      where.push(`lvl_${level} = @lvl_${level}`);
      params[`lvl_${level}`] = value;
    }
    if (q.leafLevel) add(where, params, 'leaf_level = @leaf', 'leaf', q.leafLevel);
    if (q.unit) add(where, params, 'unit = @unit', 'unit', q.unit);
    if (q.status) add(where, params, 'status = @status', 'status', q.status);
    if (q.afterId) add(where, params, 'ledger_id > @after', 'after', q.afterId);
    const sql = `SELECT * FROM budgets ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY ledger_id LIMIT @limit`;
    const rows = this.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(budgetFromRow), hasMore: rows.length > q.limit };
  }

  async updateBudget(scope: string, unit: Unit, patch: BudgetPatch): Promise<BudgetRecord | undefined> {
    return this.enqueue(() => {
      const row = this.stmt('SELECT * FROM budgets WHERE scope = ? AND unit = ?').get(scope, unit) as Row | undefined;
      if (!row) return 0;
      const b = budgetFromRow(row);
      const next: BudgetRecord = { ...b, updated_at: this.clock() };
      if (patch.overdraft_limit !== undefined) next.overdraft_limit = patch.overdraft_limit;
      if (patch.commit_overage_policy !== undefined) next.commit_overage_policy = patch.commit_overage_policy;
      if (patch.metadata !== undefined) next.metadata = patch.metadata;
      if (patch.status !== undefined) next.status = patch.status;
      // Lowering the limit below current debt puts the scope over limit; raising it clears that.
      if (patch.overdraft_limit !== undefined) next.is_over_limit = next.debt > next.overdraft_limit;
      this.view.updateBudgets([next]);
      return 1;
    }).then(async (n) => (n ? this.getBudget(scope, unit) : undefined));
  }

  // ---- events ----
  async listEvents(q: EventQuery): Promise<Page<EventRecord>> {
    const { sql, params } = eventListSql(q);
    const rows = this.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(eventFromRow), hasMore: rows.length > q.limit };
  }

  async getEvent(eventId: string): Promise<EventRecord | undefined> {
    const row = this.stmt('SELECT * FROM events WHERE event_id = ?').get(eventId) as Row | undefined;
    return row ? eventFromRow(row) : undefined;
  }

  // ---- webhooks (store/sqlite/webhooks.ts) ----
  private readonly webhooks = new SqliteWebhooks(this);
  createWebhook = (w: WebhookRecord, e: EventDraft[], c: OpContext) => this.webhooks.createWebhook(w, e, c);
  getWebhook = (id: string) => this.webhooks.getWebhook(id);
  listWebhooks = (q: WebhookQuery) => this.webhooks.listWebhooks(q);
  updateWebhook = (w: WebhookRecord, e: EventDraft[], c: OpContext) => this.webhooks.updateWebhook(w, e, c);
  deleteWebhook = (id: string, e: EventDraft[], c: OpContext) => this.webhooks.deleteWebhook(id, e, c);
  listDeliveries = (q: DeliveryQuery) => this.webhooks.listDeliveries(q);
  fanOutEvents = (limit: number) => this.webhooks.fanOutEvents(limit);
  claimDeliveries = (owner: string, limit: number, leaseMs: number) => this.webhooks.claimDeliveries(owner, limit, leaseMs);
  completeDelivery = (o: DeliveryOutcome) => this.webhooks.completeDelivery(o);
  enqueueReplay = (id: string, eventIds: string[], replayId: string) => this.webhooks.enqueueReplay(id, eventIds, replayId);
  purgeEvents = (eventMs: number, deliveryMs: number) => this.webhooks.purgeEvents(eventMs, deliveryMs);

  // ---- meta ----
  async getMeta(key: string): Promise<string | undefined> {
    const row = this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as Row | undefined;
    return row?.value as string | undefined;
  }

  async putMeta(key: string, value: string): Promise<void> {
    this.stmt('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
  }

  async putMetaIfAbsent(key: string, value: string): Promise<string> {
    this.stmt('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run(key, value);
    return (await this.getMeta(key))!;
  }

  // ---- governance plane (store/sqlite/governance*.ts) ----
  private readonly governance = new SqliteGovernance({
    stmt: (sql) => this.stmt(sql),
    transact: <T>(fn: (view: LedgerView & { now: number }) => T) => this.enqueue(fn as unknown as (view: SqliteView) => number) as unknown as Promise<T>,
  });
  queryTenants: GovernanceStore['queryTenants'] = (q) => this.governance.queryTenants(q);
  openTenant: GovernanceStore['openTenant'] = (t, c) => this.governance.openTenant(t, c);
  changeTenant: GovernanceStore['changeTenant'] = (id, ch, c) => this.governance.changeTenant(id, ch, c);
  queryApiKeys: GovernanceStore['queryApiKeys'] = (q) => this.governance.queryApiKeys(q);
  issueApiKey: GovernanceStore['issueApiKey'] = (k, c) => this.governance.issueApiKey(k, c);
  changeApiKey: GovernanceStore['changeApiKey'] = (id, ch, c) => this.governance.changeApiKey(id, ch, c);
  revokeApiKey: GovernanceStore['revokeApiKey'] = (id, r, c) => this.governance.revokeApiKey(id, r, c);
  touchApiKey: GovernanceStore['touchApiKey'] = (id, now) => this.governance.touchApiKey(id, now);
  openBudget: GovernanceStore['openBudget'] = (b, c) => this.governance.openBudget(b, c);
  queryLedgers: GovernanceStore['queryLedgers'] = (q) => this.governance.queryLedgers(q);
  changeBudget: GovernanceStore['changeBudget'] = (sc, u, ch, c) => this.governance.changeBudget(sc, u, ch, c);
  createPolicy: GovernanceStore['createPolicy'] = (p, c) => this.governance.createPolicy(p, c);
  getPolicy: GovernanceStore['getPolicy'] = (id) => this.governance.getPolicy(id);
  queryPolicies: GovernanceStore['queryPolicies'] = (q) => this.governance.queryPolicies(q);
  changePolicy: GovernanceStore['changePolicy'] = (id, ch, c) => this.governance.changePolicy(id, ch, c);
  bulkTenants: GovernanceStore['bulkTenants'] = (cmd) => this.governance.bulkTenants(cmd);
  bulkBudgets: GovernanceStore['bulkBudgets'] = (cmd) => this.governance.bulkBudgets(cmd);
  appendAudit: GovernanceStore['appendAudit'] = (e) => this.governance.appendAudit(e);
  queryAudit: GovernanceStore['queryAudit'] = (q) => this.governance.queryAudit(q);
  appendEvents: GovernanceStore['appendEvents'] = (d, c) => this.governance.appendEvents(d, c);
  overview: GovernanceStore['overview'] = (now, w) => this.governance.overview(now, w);
}

/** The LedgerView of the transaction currently open on the store's connection. */
class SqliteView implements LedgerView {
  now = 0;
  /** Events written by the current group, reported once it commits. */
  written: EventRecord[] = [];
  constructor(private readonly store: SqliteStore) {}

  tenant(id: string): TenantRecord | undefined {
    const row = this.store.stmt('SELECT * FROM tenants WHERE tenant_id = ?').get(id) as Row | undefined;
    return row ? tenantFromRow(row) : undefined;
  }

  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined {
    const row = this.store.stmt('SELECT * FROM idempotency WHERE tenant_id = ? AND endpoint = ? AND key = ?').get(tenantId, endpoint, key) as
      | Row
      | undefined;
    return row ? idempotencyFromRow(row) : undefined;
  }

  putIdempotency(r: IdempotencyRecord): void {
    this.store
      .stmt(
        `INSERT OR REPLACE INTO idempotency (tenant_id, endpoint, key, request_hash, status, body, reservation_id, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(r.tenant_id, r.endpoint, r.key, r.request_hash, r.status, r.body, r.reservation_id ?? null, r.created_at, r.expires_at);
  }

  reservation(id: string): ReservationRecord | undefined {
    const row = this.store.stmt('SELECT * FROM reservations WHERE reservation_id = ?').get(id) as Row | undefined;
    return row ? reservationFromRow(row) : undefined;
  }

  insertReservation(r: ReservationRecord): void {
    const row = reservationToRow(r);
    this.store.stmt(insertSql('reservations', row)).run(row);
  }

  updateReservation(r: ReservationRecord): void {
    const row = reservationToRow(r);
    const cols = Object.keys(row).filter((c) => c !== 'reservation_id');
    this.store.stmt(`UPDATE reservations SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE reservation_id = @reservation_id`).run(row);
  }

  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[] {
    if (scopes.length === 0) return [];
    const sql = `SELECT * FROM budgets WHERE tenant_id = ? AND scope IN (${scopes.map(() => '?').join(',')})`;
    return (this.store.stmt(sql).all(tenantId, ...scopes) as Row[]).map(budgetFromRow);
  }

  emit(draft: EventDraft, ctx: OpContext): void {
    const e = buildEvent(draft, ctx, this.now);
    if (this.store.reportsEvents) this.written.push(e);
    this.store
      .stmt(
        `INSERT INTO events (event_id, event_type, category, timestamp, tenant_id, scope, correlation_id, request_id, trace_id, trace_flags, body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(e.event_id, e.event_type, e.category, e.timestamp, e.tenant_id, e.scope ?? null, e.correlation_id ?? null, e.request_id ?? null, e.trace_id ?? null, e.trace_flags ?? null, e.body);
  }

  policies(tenantId: string): PolicyRecord[] {
    const rows = this.store.stmt("SELECT * FROM policies WHERE tenant_id = ? AND status = 'ACTIVE'").all(tenantId) as Row[];
    return rows.map(policyFromRow);
  }

  updateBudgets(records: readonly BudgetRecord[]): void {
    const s = this.store.stmt(
      `UPDATE budgets SET allocated = @allocated, reserved = @reserved, spent = @spent, debt = @debt,
         overdraft_limit = @overdraft_limit, is_over_limit = @is_over_limit, status = @status,
         commit_overage_policy = @commit_overage_policy, metadata = @metadata, updated_at = @updated_at
       WHERE scope = @scope AND unit = @unit`,
    );
    for (const b of records) s.run(budgetToRow(b));
  }
}
