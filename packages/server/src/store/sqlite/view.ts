/**
 * The two LedgerViews of the embedded store's commit group.
 *
 * GroupView serves the runtime operations (reserve, decide, commit, release, extend, events,
 * funding, expiry). It reads through SQLite once per group and keeps what it read; an operation's
 * writes go to memory, journaled, so an operation the ledger rules refuse is undone in memory and
 * needs no savepoint. The group's writes reach SQLite in one pass before COMMIT (or before an
 * operation that writes SQL itself), each row once with its final state and, for updates, only
 * the columns that changed: SQLite rewrites an index only when a column it holds is SET.
 *
 * DirectView reads and writes SQLite at once; operations that also run their own statements
 * (governance, webhooks) use it inside a savepoint.
 */
import type Database from 'better-sqlite3';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import { buildEvent, type EventDraft, type EventRecord, type OpContext } from '../../events/model.js';
import { policyFromRow } from './governance-sql.js';
import { budgetFromRow, budgetToRow, idempotencyFromRow, reservationFromRow, reservationToRow, tenantFromRow } from './rows.js';

type Row = Record<string, unknown>;

/** What the views need from the store. */
export interface ViewHost {
  stmt(sql: string): Database.Statement;
  /** Whether committed events are reported (the views keep them only then). */
  readonly reportsEvents: boolean;
  /** Events written by the current group, reported once it commits. */
  written: EventRecord[];
}

/**
 * reservationToRow's columns in its order. The insert binds a row's values by position
 * (Object.values keeps that order): better-sqlite3 binds 33 named parameters a few µs slower.
 */
const RESERVATION_ROW_COLUMNS = Object.keys(
  reservationToRow({ subject: {}, action: {}, affected_scopes: [], budgeted_scopes: [] } as unknown as ReservationRecord),
);
const RESERVATION_INSERT = `INSERT INTO reservations (${RESERVATION_ROW_COLUMNS.join(',')}) VALUES (${RESERVATION_ROW_COLUMNS.map(() => '?').join(',')})`;
const insertReservationRow = (host: ViewHost, r: ReservationRecord): void => {
  host.stmt(RESERVATION_INSERT).run(Object.values(reservationToRow(r)));
};

const IDEMPOTENCY_PUT = `INSERT OR REPLACE INTO idempotency (tenant_id, endpoint, key, request_hash, status, body, reservation_id, created_at, expires_at)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`;

const EVENT_INSERT = `INSERT INTO events (event_id, event_type, category, timestamp, tenant_id, scope, correlation_id, request_id, trace_id, trace_flags, body)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

const BUDGET_UPDATE_ALL = `UPDATE budgets SET allocated = @allocated, reserved = @reserved, spent = @spent, debt = @debt,
  overdraft_limit = @overdraft_limit, is_over_limit = @is_over_limit, status = @status,
  commit_overage_policy = @commit_overage_policy, metadata = @metadata, updated_at = @updated_at
  WHERE scope = @scope AND unit = @unit`;

const TENANT_GET = 'SELECT * FROM tenants WHERE tenant_id = ?';
const IDEMPOTENCY_GET = 'SELECT * FROM idempotency WHERE tenant_id = ? AND endpoint = ? AND key = ?';
const RESERVATION_GET = 'SELECT * FROM reservations WHERE reservation_id = ?';
const POLICIES_GET = "SELECT * FROM policies WHERE tenant_id = ? AND status = 'ACTIVE'";

/** The budgets read, one SQL text (so one prepared statement) per number of scopes. */
const BUDGETS_SQL: string[] = [];
const budgetsSql = (n: number): string =>
  (BUDGETS_SQL[n] ??= `SELECT * FROM budgets WHERE tenant_id = ? AND scope IN (${Array.from({ length: n }, () => '?').join(',')})`);

function insertEvent(host: ViewHost, e: EventRecord): void {
  host
    .stmt(EVENT_INSERT)
    .run(e.event_id, e.event_type, e.category, e.timestamp, e.tenant_id, e.scope ?? null, e.correlation_id ?? null, e.request_id ?? null, e.trace_id ?? null, e.trace_flags ?? null, e.body);
}

function putIdempotencyRow(host: ViewHost, r: IdempotencyRecord): void {
  host.stmt(IDEMPOTENCY_PUT).run(r.tenant_id, r.endpoint, r.key, r.request_hash, r.status, r.body, r.reservation_id ?? null, r.created_at, r.expires_at);
}

/**
 * A column of an UPDATE built from the changed fields only. `key` is compared by identity
 * between the stored and the new record (JSON columns by object reference: the ledger copies a
 * record and replaces what it changes, so an untouched map keeps its reference).
 */
interface Column<T> {
  name: string;
  key: (r: T) => unknown;
  val: (r: T) => unknown;
}

const nul = (v: unknown): unknown => (v === undefined ? null : v);
const json = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));
const lower = (v: string | undefined): string | null => v?.toLowerCase() ?? null;
const dueAt = (r: ReservationRecord): number | null => (r.status === 'ACTIVE' ? r.expires_at_ms + r.grace_period_ms : null);

type R = ReservationRecord;
/** Every column of reservations (as reservationToRow writes it) but the key. */
const RESERVATION_COLUMNS: Array<Column<R>> = [
  { name: 'tenant_id', key: (r) => r.tenant_id, val: (r) => r.tenant_id },
  { name: 'status', key: (r) => r.status, val: (r) => r.status },
  { name: 'subject', key: (r) => r.subject, val: (r) => JSON.stringify(r.subject) },
  { name: 'action', key: (r) => r.action, val: (r) => JSON.stringify(r.action) },
  { name: 'unit', key: (r) => r.unit, val: (r) => r.unit },
  { name: 'reserved', key: (r) => r.reserved, val: (r) => r.reserved },
  { name: 'scope_path', key: (r) => r.scope_path, val: (r) => r.scope_path },
  { name: 'affected_scopes', key: (r) => r.affected_scopes, val: (r) => JSON.stringify(r.affected_scopes) },
  { name: 'budgeted_scopes', key: (r) => r.budgeted_scopes, val: (r) => JSON.stringify(r.budgeted_scopes) },
  { name: 'overage_policy', key: (r) => r.overage_policy, val: (r) => r.overage_policy },
  { name: 'idempotency_key', key: (r) => r.idempotency_key, val: (r) => r.idempotency_key },
  { name: 'created_at_ms', key: (r) => r.created_at_ms, val: (r) => r.created_at_ms },
  { name: 'expires_at_ms', key: (r) => r.expires_at_ms, val: (r) => r.expires_at_ms },
  { name: 'ttl_ms', key: (r) => r.ttl_ms, val: (r) => r.ttl_ms },
  { name: 'grace_period_ms', key: (r) => r.grace_period_ms, val: (r) => r.grace_period_ms },
  { name: 'max_extensions', key: (r) => r.max_extensions, val: (r) => r.max_extensions },
  { name: 'extension_count', key: (r) => r.extension_count, val: (r) => r.extension_count },
  { name: 'metadata', key: (r) => r.metadata, val: (r) => json(r.metadata) },
  { name: 'committed', key: (r) => r.committed, val: (r) => nul(r.committed) },
  { name: 'committed_metadata', key: (r) => r.committed_metadata, val: (r) => json(r.committed_metadata) },
  { name: 'metrics', key: (r) => r.metrics, val: (r) => json(r.metrics) },
  { name: 'debt_incurred', key: (r) => r.debt_incurred, val: (r) => nul(r.debt_incurred) },
  { name: 'finalized_at_ms', key: (r) => r.finalized_at_ms, val: (r) => nul(r.finalized_at_ms) },
  { name: 'expired_at_ms', key: (r) => r.expired_at_ms, val: (r) => nul(r.expired_at_ms) },
  { name: 'workspace', key: (r) => r.subject, val: (r) => lower(r.subject.workspace) },
  { name: 'app', key: (r) => r.subject, val: (r) => lower(r.subject.app) },
  { name: 'workflow', key: (r) => r.subject, val: (r) => lower(r.subject.workflow) },
  { name: 'agent', key: (r) => r.subject, val: (r) => lower(r.subject.agent) },
  { name: 'toolset', key: (r) => r.subject, val: (r) => lower(r.subject.toolset) },
  { name: 'due_at_ms', key: dueAt, val: dueAt },
];

type B = BudgetRecord;
/** The columns a ledger operation may change on a budget (what the full UPDATE writes). */
const BUDGET_COLUMNS: Array<Column<B>> = [
  { name: 'allocated', key: (b) => b.allocated, val: (b) => b.allocated },
  { name: 'reserved', key: (b) => b.reserved, val: (b) => b.reserved },
  { name: 'spent', key: (b) => b.spent, val: (b) => b.spent },
  { name: 'debt', key: (b) => b.debt, val: (b) => b.debt },
  { name: 'overdraft_limit', key: (b) => b.overdraft_limit, val: (b) => b.overdraft_limit },
  { name: 'is_over_limit', key: (b) => b.is_over_limit, val: (b) => (b.is_over_limit ? 1 : 0) },
  { name: 'status', key: (b) => b.status, val: (b) => b.status },
  { name: 'commit_overage_policy', key: (b) => b.commit_overage_policy, val: (b) => nul(b.commit_overage_policy) },
  { name: 'metadata', key: (b) => b.metadata, val: (b) => json(b.metadata) },
  { name: 'updated_at', key: (b) => b.updated_at, val: (b) => b.updated_at },
];

/** UPDATE statements naming only the changed columns, prepared once per set of columns. */
class PartialUpdate<T> {
  private readonly byMask = new Map<number, { sql: string }>();
  constructor(
    private readonly table: string,
    private readonly columns: Array<Column<T>>,
    private readonly where: string,
    private readonly keyOf: (r: T) => unknown[],
  ) {}

  run(host: ViewHost, before: T, after: T): void {
    let mask = 0;
    const values: unknown[] = [];
    for (let i = 0; i < this.columns.length; i++) {
      const c = this.columns[i]!;
      if (c.key(before) === c.key(after)) continue;
      mask += 2 ** i;
      values.push(c.val(after));
    }
    if (mask === 0) return;
    let entry = this.byMask.get(mask);
    if (!entry) {
      const set = this.columns.filter((_, i) => Math.floor(mask / 2 ** i) % 2 === 1).map((c) => `${c.name} = ?`);
      entry = { sql: `UPDATE ${this.table} SET ${set.join(', ')} WHERE ${this.where}` };
      this.byMask.set(mask, entry);
    }
    host.stmt(entry.sql).run(...values, ...this.keyOf(after));
  }
}

const reservationUpdate = new PartialUpdate<R>('reservations', RESERVATION_COLUMNS, 'reservation_id = ?', (r) => [r.reservation_id]);
const budgetUpdate = new PartialUpdate<B>('budgets', BUDGET_COLUMNS, 'scope = ? AND unit = ?', (b) => [b.scope, b.unit]);

/** A row as stored when the group first read it (undefined: inserted by the group) and as it is now. */
interface Versioned<T> {
  readonly stored: T | undefined;
  readonly current: T;
}

const idemKey = (tenantId: string, endpoint: string, key: string): string => `${tenantId}\u0000${endpoint}\u0000${key}`;
const scopeKey = (tenantId: string, scope: string): string => `${tenantId}\u0000${scope}`;

/** Buffered view of one commit group (see the file comment). */
export class GroupView implements LedgerView {
  now = 0;
  private readonly tenants = new Map<string, TenantRecord | null>();
  private readonly policyLists = new Map<string, PolicyRecord[]>();
  private readonly idem = new Map<string, Versioned<IdempotencyRecord> | null>();
  private readonly reservations = new Map<string, Versioned<ReservationRecord> | null>();
  /** Budgets by (tenant, scope): every unit's row, loaded once per group. */
  private readonly budgetsAt = new Map<string, Array<Versioned<BudgetRecord>>>();
  private events: EventRecord[] = [];
  /** Undo steps of the running operation, newest last. */
  private journal: Array<() => void> = [];

  constructor(private readonly host: ViewHost) {}

  /** Forgets everything read: the next group (or an operation that wrote SQL itself) reads afresh. */
  clear(): void {
    this.tenants.clear();
    this.policyLists.clear();
    this.idem.clear();
    this.reservations.clear();
    this.budgetsAt.clear();
    this.events = [];
    this.journal = [];
  }

  /** The running operation succeeded: its writes join the group's. */
  keep(): void {
    this.journal = [];
  }

  /** The running operation failed: undo its writes, newest first. */
  undo(): void {
    const j = this.journal;
    for (let i = j.length - 1; i >= 0; i--) j[i]!();
    this.journal = [];
  }

  /** Writes the group's changes to SQLite (inside the group's transaction), then forgets them. */
  apply(): void {
    const host = this.host;
    for (const v of this.reservations.values()) {
      if (!v || v.stored === v.current) continue;
      if (v.stored === undefined) insertReservationRow(host, v.current);
      else reservationUpdate.run(host, v.stored, v.current);
    }
    for (const list of this.budgetsAt.values()) {
      for (const v of list) if (v.stored !== v.current) budgetUpdate.run(host, v.stored!, v.current);
    }
    for (const v of this.idem.values()) if (v && v.stored !== v.current) putIdempotencyRow(host, v.current);
    for (const e of this.events) insertEvent(host, e);
    if (host.reportsEvents) for (const e of this.events) host.written.push(e);
    this.clear();
  }

  private set<K, V>(map: Map<K, V>, key: K, value: V): void {
    const had = map.has(key);
    const prior = map.get(key);
    this.journal.push(() => {
      if (had) map.set(key, prior as V);
      else map.delete(key);
    });
    map.set(key, value);
  }

  tenant(id: string): TenantRecord | undefined {
    let t = this.tenants.get(id);
    if (t === undefined) {
      const row = this.host.stmt(TENANT_GET).get(id) as Row | undefined;
      t = row ? tenantFromRow(row) : null;
      this.tenants.set(id, t);
    }
    return t ?? undefined;
  }

  policies(tenantId: string): PolicyRecord[] {
    let p = this.policyLists.get(tenantId);
    if (!p) {
      p = (this.host.stmt(POLICIES_GET).all(tenantId) as Row[]).map(policyFromRow);
      this.policyLists.set(tenantId, p);
    }
    return p;
  }

  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined {
    const k = idemKey(tenantId, endpoint, key);
    let v = this.idem.get(k);
    if (v === undefined) {
      const row = this.host.stmt(IDEMPOTENCY_GET).get(tenantId, endpoint, key) as Row | undefined;
      if (row) {
        const r = idempotencyFromRow(row);
        v = { stored: r, current: r };
      } else v = null;
      this.idem.set(k, v);
    }
    return v?.current;
  }

  putIdempotency(r: IdempotencyRecord): void {
    const k = idemKey(r.tenant_id, r.endpoint, r.key);
    if (!this.idem.has(k)) this.idempotency(r.tenant_id, r.endpoint, r.key);
    const prior = this.idem.get(k);
    // A record is always written (INSERT OR REPLACE), even over a stored one.
    this.set(this.idem, k, { stored: prior?.stored, current: r });
  }

  reservation(id: string): ReservationRecord | undefined {
    let v = this.reservations.get(id);
    if (v === undefined) {
      const row = this.host.stmt(RESERVATION_GET).get(id) as Row | undefined;
      if (row) {
        const r = reservationFromRow(row);
        v = { stored: r, current: r };
      } else v = null;
      this.reservations.set(id, v);
    }
    return v?.current;
  }

  insertReservation(r: ReservationRecord): void {
    this.set(this.reservations, r.reservation_id, { stored: undefined, current: r });
  }

  updateReservation(r: ReservationRecord): void {
    const prior = this.reservations.get(r.reservation_id) ?? (this.reservation(r.reservation_id), this.reservations.get(r.reservation_id));
    if (!prior) throw new Error(`Reservation ${r.reservation_id} is not stored`);
    this.set(this.reservations, r.reservation_id, { stored: prior.stored, current: r });
  }

  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[] {
    let missing: string[] | undefined;
    for (const s of scopes) {
      if (!this.budgetsAt.has(scopeKey(tenantId, s)) && !missing?.includes(s)) (missing ??= []).push(s);
    }
    if (missing) {
      const rows = this.host.stmt(budgetsSql(missing.length)).all(tenantId, ...missing) as Row[];
      for (const s of missing) this.budgetsAt.set(scopeKey(tenantId, s), []);
      for (const row of rows) {
        const b = budgetFromRow(row);
        this.budgetsAt.get(scopeKey(tenantId, b.scope))!.push({ stored: b, current: b });
      }
    }
    const out: BudgetRecord[] = [];
    for (let i = 0; i < scopes.length; i++) {
      const s = scopes[i]!;
      // A scope named twice is one set of rows, as in SQL's IN.
      if (scopes.indexOf(s) !== i) continue;
      for (const v of this.budgetsAt.get(scopeKey(tenantId, s))!) out.push(v.current);
    }
    return out;
  }

  updateBudgets(records: readonly BudgetRecord[]): void {
    for (const b of records) {
      const k = scopeKey(b.tenant_id, b.scope);
      if (!this.budgetsAt.has(k)) this.budgets(b.tenant_id, [b.scope]);
      const list = this.budgetsAt.get(k)!;
      const i = list.findIndex((v) => v.current.unit === b.unit);
      if (i < 0) throw new Error(`Budget ${b.scope} (${b.unit}) is not stored`);
      const prior = list[i]!;
      list[i] = { stored: prior.stored, current: b };
      this.journal.push(() => {
        list[i] = prior;
      });
    }
  }

  emit(draft: EventDraft, ctx: OpContext): void {
    const events = this.events;
    const n = events.length;
    events.push(buildEvent(draft, ctx, this.now));
    this.journal.push(() => {
      events.length = n;
    });
  }
}

/** The LedgerView of the transaction open on the store's connection: reads and writes SQLite at once. */
export class DirectView implements LedgerView {
  now = 0;
  constructor(private readonly host: ViewHost) {}

  tenant(id: string): TenantRecord | undefined {
    const row = this.host.stmt(TENANT_GET).get(id) as Row | undefined;
    return row ? tenantFromRow(row) : undefined;
  }

  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined {
    const row = this.host.stmt(IDEMPOTENCY_GET).get(tenantId, endpoint, key) as Row | undefined;
    return row ? idempotencyFromRow(row) : undefined;
  }

  putIdempotency(r: IdempotencyRecord): void {
    putIdempotencyRow(this.host, r);
  }

  reservation(id: string): ReservationRecord | undefined {
    const row = this.host.stmt(RESERVATION_GET).get(id) as Row | undefined;
    return row ? reservationFromRow(row) : undefined;
  }

  insertReservation(r: ReservationRecord): void {
    insertReservationRow(this.host, r);
  }

  updateReservation(r: ReservationRecord): void {
    const row = reservationToRow(r);
    const cols = Object.keys(row).filter((c) => c !== 'reservation_id');
    this.host.stmt(`UPDATE reservations SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE reservation_id = @reservation_id`).run(row);
  }

  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[] {
    if (scopes.length === 0) return [];
    return (this.host.stmt(budgetsSql(scopes.length)).all(tenantId, ...scopes) as Row[]).map(budgetFromRow);
  }

  emit(draft: EventDraft, ctx: OpContext): void {
    const e = buildEvent(draft, ctx, this.now);
    if (this.host.reportsEvents) this.host.written.push(e);
    insertEvent(this.host, e);
  }

  policies(tenantId: string): PolicyRecord[] {
    return (this.host.stmt(POLICIES_GET).all(tenantId) as Row[]).map(policyFromRow);
  }

  updateBudgets(records: readonly BudgetRecord[]): void {
    const s = this.host.stmt(BUDGET_UPDATE_ALL);
    for (const b of records) s.run(budgetToRow(b));
  }
}
