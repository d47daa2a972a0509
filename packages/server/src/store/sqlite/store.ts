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
import type { BudgetRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import type { EventDraft, EventRecord, OpContext } from '../../events/model.js';
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
import { apiKeyFromRow, apiKeyToRow, budgetFromRow, budgetToRow, reservationFromRow, tenantFromRow, tenantToRow } from './rows.js';
import { sqliteUnavailable } from './ops.js';
import { DirectView, GroupView } from './view.js';
import { startCheckpointer, type Checkpointer } from './checkpointer.js';
import { SCHEMA, SCHEMA_VERSION, UPGRADES } from './schema.js';
import { SqliteGovernance } from './governance.js';
import { fundWithEvents } from './governance-fund.js';
import type { FundingNote, GovernanceStore } from '../types.js';

export interface SqliteOptions {
  dataDir: string;
  /** 'full' fsyncs every commit group (survives power loss); 'normal' survives process crashes. */
  sync: 'normal' | 'full';
  /** Page cache in MiB (CYCLES_SQLITE_CACHE_MB); default 8. */
  cacheMb?: number;
  /**
   * WAL pages at which a commit group checkpoints itself (CYCLES_SQLITE_CHECKPOINT_PAGES); by
   * default SQLite's 1,000, or 10,000 as the backstop when the checkpointer thread is on.
   */
  checkpointPages?: number;
  /** Milliseconds between the checkpointer thread's passes (CYCLES_SQLITE_CHECKPOINT_MS); 0 or unset: no thread. */
  checkpointMs?: number;
  /** Injected clock for tests; defaults to Date.now. */
  clock?: () => number;
  /** Told, after each group commits, which events its mutations wrote (never for rolled-back work). */
  onEventsCommitted?: (events: readonly EventRecord[]) => void;
  /** Told of a degradation the store recovers from by itself (logged as a warning). */
  onWarning?: (message: string) => void;
}

/** SQLite's own checkpoint window, in WAL pages. */
const SQLITE_WINDOW = 1_000;
/** The committing connection's window when the checkpointer thread checkpoints for it. */
const BACKSTOP_WINDOW = 10_000;

type Row = Record<string, unknown>;

/** Appends one SQL condition and its named parameter. */
function add(where: string[], params: Row, clause: string, name: string, value: unknown): void {
  where.push(clause);
  params[name] = value;
}

interface Pending {
  run: (view: LedgerView & { now: number }) => OpResult | number;
  /** Reads and writes only through the view (the ledger operations): runs buffered, without a savepoint. */
  buffered: boolean;
  resolve: (v: OpResult | number) => void;
  reject: (e: unknown) => void;
}

type Results = Array<{ ok: boolean; value: unknown }>;

/** Writing a group's buffered changes failed: the group is rolled back as a whole. */
class ApplyFailed extends Error {
  constructor(readonly error: unknown) {
    super((error as Error)?.message ?? String(error));
  }
}

const insertSql = (table: string, row: Row): string => {
  const cols = Object.keys(row);
  return `INSERT INTO ${table} (${cols.join(',')}) VALUES (${cols.map((c) => '@' + c).join(',')})`;
};

/** Records the schema version of a new file, or brings an older file's schema up to date. */
function upgradeSchema(db: Database.Database): void {
  const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
  if (!row) {
    db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', String(SCHEMA_VERSION));
    return;
  }
  for (let v = Number(row.value); v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(UPGRADES[v] ?? '');
      db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(v + 1));
    }).immediate();
  }
}

/**
 * Embedded store on SQLite (WAL). Mutations that arrive in the same event-loop turn are
 * applied in one transaction (group commit); replies are released only after the group commits.
 * One failing operation never disturbs the others: the ledger operations run against a buffered
 * view (view.ts) whose writes of a refused operation are undone in memory, and the group's writes
 * reach SQLite in one pass before COMMIT; operations that run their own SQL (governance,
 * webhooks) run inside a savepoint. If writing a group's buffered changes fails for a reason of
 * one member (a constraint), the group is rolled back and each operation runs again alone; a
 * failure of the database itself (disk full, I/O) fails the whole group.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly clock: () => number;
  private readonly statements = new Map<string, Database.Statement>();
  private queue: Pending[] = [];
  private afterGroup: Array<() => void> = [];
  private scheduled = false;
  private closed = false;
  private readonly view: GroupView;
  private readonly direct: DirectView;
  /** Events written by the current group, reported once it commits (ViewHost). */
  written: EventRecord[] = [];
  private readonly runGroup: Database.Transaction<(batch: Pending[], results: Results) => void>;
  private readonly onEventsCommitted: SqliteOptions['onEventsCommitted'];
  /** The checkpointer thread (CYCLES_SQLITE_CHECKPOINT_MS), if on. */
  readonly checkpointer: Checkpointer | undefined;

  constructor(opts: SqliteOptions) {
    mkdirSync(opts.dataDir, { recursive: true });
    this.db = new Database(join(opts.dataDir, 'cycles.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${opts.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    // Negative = KiB. The working set of a busy ledger (the budget rows, the right edges of the
    // reservation indexes, the idempotency index) outgrows SQLite's 2 MiB default quickly.
    this.db.pragma(`cache_size = ${-Math.round((opts.cacheMb ?? 8) * 1024)}`);
    // A checkpoint copies the pages the WAL holds back into the file and fsyncs both; the
    // commit group that crosses the threshold pays for it, and every request waiting on that
    // group waits with it. SQLite's 1,000 pages keeps that pause short (tail latency); a larger
    // window copies a page that many groups rewrote once and fsyncs less often (throughput when
    // groups touch many pages, as over many tenants), at the price of longer, rarer pauses.
    // With the checkpointer thread (checkpointer.ts) doing that work, the window is a backstop.
    const checkpointMs = opts.checkpointMs ?? 0;
    // The window commit groups use without the thread (and fall back to if it stops).
    const ownWindow = opts.checkpointPages ?? SQLITE_WINDOW;
    this.db.pragma(`wal_autocheckpoint = ${checkpointMs > 0 ? (opts.checkpointPages ?? BACKSTOP_WINDOW) : ownWindow}`);
    this.db.exec(SCHEMA);
    upgradeSchema(this.db);
    if (checkpointMs > 0) {
      this.checkpointer = startCheckpointer({ file: this.db.name, sync: opts.sync, intervalMs: checkpointMs }, (reason) => {
        if (this.closed) return;
        // Commit groups checkpoint for themselves again, as without the thread.
        this.db.pragma(`wal_autocheckpoint = ${ownWindow}`);
        opts.onWarning?.(`The SQLite checkpoint thread stopped (${reason}); commit groups now checkpoint the WAL themselves, every ${ownWindow} pages`);
      });
    }
    this.clock = opts.clock ?? Date.now;
    this.onEventsCommitted = opts.onEventsCommitted;
    this.view = new GroupView(this);
    this.direct = new DirectView(this);
    const one = this.db.transaction((p: Pending) => p.run(this.direct));
    this.runGroup = this.db.transaction((batch: Pending[], results: Results) => {
      const view = this.view;
      view.clear();
      let pending = false;
      for (const p of batch) {
        const now = this.clock();
        if (p.buffered) {
          view.now = now;
          try {
            results.push({ ok: true, value: p.run(view) });
            view.keep();
            pending = true;
          } catch (e) {
            // A refused operation wrote nothing to SQLite: undoing its buffered writes is enough.
            view.undo();
            // A failed read that made SQLite roll back the group (I/O) fails the group.
            if (!this.db.inTransaction) throw e;
            results.push({ ok: false, value: e });
          }
          continue;
        }
        // An operation that runs its own SQL sees the group's earlier writes in SQLite.
        if (pending) this.applyBuffered();
        pending = false;
        this.direct.now = now;
        const written = this.written.length;
        try {
          // Nested transaction = savepoint: a failing operation rolls back only its own writes.
          results.push({ ok: true, value: one(p) });
        } catch (e) {
          this.written.length = written;
          // Some failures (disk full, I/O) make SQLite roll back the whole group: stop here, or the
          // rest would run outside the group's transaction and be half-reported.
          if (!this.db.inTransaction) throw e;
          results.push({ ok: false, value: e });
        }
        // It may have changed anything the buffered view read.
        view.clear();
      }
      if (pending) this.applyBuffered();
    });
  }

  private applyBuffered(): void {
    try {
      this.view.apply();
    } catch (e) {
      throw new ApplyFailed(e);
    }
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
    return this.enqueue(fn as unknown as (view: LedgerView) => number, false) as unknown as Promise<T>;
  }

  private enqueue<T extends OpResult | number>(run: (view: LedgerView & { now: number }) => T, buffered: boolean): Promise<T> {
    if (this.closed) return Promise.reject(new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, buffered, resolve: resolve as (v: OpResult | number) => void, reject });
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
    if (batch.length > 0) this.runBatch(batch);
    const waiters = this.afterGroup;
    this.afterGroup = [];
    for (const w of waiters) w();
  }

  /**
   * Undefined when no group is queued; otherwise resolves once the queued group has committed
   * (after its members' results). The store thread uses it so that a call never overtakes a
   * write sent before it that is still waiting for its group.
   */
  afterQueued(): Promise<void> | undefined {
    if (!this.scheduled) return undefined;
    return new Promise((resolve) => this.afterGroup.push(resolve));
  }

  private runBatch(batch: Pending[]): void {
    const results: Results = [];
    try {
      // IMMEDIATE takes the write lock up front: another process on the same file (a dispatcher)
      // waits on busy_timeout instead of failing on a lock upgrade.
      this.runGroup.immediate(batch, results);
    } catch (e) {
      // The group was rolled back: nothing in it was applied.
      this.written = [];
      this.view.clear();
      const cause = e instanceof ApplyFailed ? e.error : e;
      if (e instanceof ApplyFailed && !sqliteUnavailable(cause)) {
        // A write one member caused (a constraint): each runs again in a group of its own, so
        // only that one fails.
        if (batch.length > 1) for (const p of batch) this.runBatch([p]);
        else batch[0]!.reject(cause);
        return;
      }
      // The database failed (I/O error, disk full): every member fails alike.
      const err = new CyclesError('SERVICE_UNAVAILABLE', `Store write failed: ${(cause as Error).message}`);
      for (const p of batch) p.reject(err);
      return;
    }
    if (this.written.length > 0) {
      const written = this.written;
      this.written = [];
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

  /**
   * Runs a PRAGMA on the store's connection and returns its value (diagnostics, and the fault
   * injection of the store-failure tests: `max_page_count` fills the disk). Between groups.
   */
  async pragma(source: string): Promise<unknown> {
    return this.db.pragma(source, { simple: true });
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
    await this.checkpointer?.stop();
    this.db.close();
  }

  reserve = (cmd: Parameters<Store['reserve']>[0]) => this.enqueue((v) => reserve(v, cmd), true);
  decide = (cmd: Parameters<Store['decide']>[0]) => this.enqueue((v) => decide(v, cmd), true);
  commit = (cmd: Parameters<Store['commit']>[0]) => this.enqueue((v) => commit(v, cmd), true);
  release = (cmd: Parameters<Store['release']>[0]) => this.enqueue((v) => release(v, cmd), true);
  extend = (cmd: Parameters<Store['extend']>[0]) => this.enqueue((v) => extend(v, cmd), true);
  createEvent = (cmd: Parameters<Store['createEvent']>[0]) => this.enqueue((v) => createEvent(v, cmd), true);
  fundBudget = (cmd: FundingCommand & FundingNote) => this.enqueue((v) => fundWithEvents(v, cmd), true);

  async expireDue(limit: number): Promise<number> {
    const ids = this.stmt('SELECT reservation_id FROM reservations WHERE due_at_ms IS NOT NULL AND due_at_ms < ? ORDER BY due_at_ms LIMIT ?')
      .all(this.clock(), limit)
      .map((r) => (r as Row).reservation_id as string);
    if (ids.length === 0) return 0;
    const ctx = { actor: { type: 'system' as const }, traceId: randomBytes(16).toString('hex') };
    return this.enqueue((v) => ids.filter((id) => expire(v, id, ctx)).length, true);
  }

  async purge(reservationRetentionMs: number): Promise<void> {
    const now = this.clock();
    await this.enqueue(() => {
      this.stmt('DELETE FROM idempotency WHERE expires_at < ?').run(now);
      this.stmt("DELETE FROM reservations WHERE finalized_at_ms IS NOT NULL AND finalized_at_ms < ?").run(now - reservationRetentionMs);
      this.stmt("DELETE FROM reservations WHERE status = 'EXPIRED' AND expired_at_ms < ?").run(now - reservationRetentionMs);
      this.governance.purgeAudit(now);
      return 0;
    }, false);
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
      this.direct.updateBudgets([next]);
      return 1;
    }, false).then(async (n) => (n ? this.getBudget(scope, unit) : undefined));
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
    transact: <T>(fn: (view: LedgerView & { now: number }) => T) => this.transact(fn),
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
