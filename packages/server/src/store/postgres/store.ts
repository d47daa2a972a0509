/**
 * PostgreSQL backend: several server processes may share one database; all correctness comes
 * from the database. The runtime operations are grouped (batch.ts: group commit); a group is one
 * transaction like the single-operation one described here, with its rows locked in the same order.
 *
 * Every ledger operation is one READ COMMITTED transaction that runs the shared ledger rules
 * (ledger/ops) against a SnapshotView. The rows an operation may change are locked with
 * SELECT ... FOR UPDATE before the rules look at them, always in the same order:
 *
 *   tenant (only closeTenant) -> reservation(s) -> budgets ORDER BY scope, unit
 *
 * Budgets along one scope path sort root to leaf, so two reservations on overlapping paths
 * queue on the root instead of deadlocking. Locked rows come back in their latest committed
 * version; the unlocked ones read in the same statement (tenant, idempotency record) are read
 * again whenever the rules refuse the operation (see loadEvaluation). Whatever still races (two
 * first attempts with one idempotency key, a rare deadlock while a tenant is being closed) fails
 * the whole transaction with a unique violation, 40P01 or 40001, and the transaction is retried
 * from the start a bounded number of times; nothing is ever partially applied. The reply is
 * released only after COMMIT.
 */
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError } from '../../ledger/errors.js';
import { decide } from '../../ledger/ops/decide.js';
import { createEvent } from '../../ledger/ops/event.js';
import { reserve } from '../../ledger/ops/reserve.js';
import { commit, expire, extend, release } from '../../ledger/ops/settle.js';
import type { OpResult } from '../../ledger/ops/shared.js';
import type { BudgetRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import { buildEvent, type EventDraft, type EventRecord, type OpContext } from '../../events/model.js';
import type { DeliveryOutcome, WebhookRecord } from '../../events/types.js';
import type {
  ApiKeyQuery,
  ApiKeyRecord,
  BudgetPatch,
  BudgetQuery,
  DeliveryQuery,
  EventQuery,
  FundingCommand,
  FundingNote,
  GovernanceStore,
  Page,
  ReservationQuery,
  Store,
  TenantQuery,
  WebhookQuery,
} from '../types.js';
import { migrate, migrationStatus, SCHEMA_NAME, type MigrationResult, type MigrationStatus } from './migrate.js';
import { apiKeyListSql, budgetListSql, eventListSql, reservationListSql, tenantListSql, type Sql } from './queries.js';
import {
  apiKeyFromRow,
  apiKeyToRow,
  budgetFromRow,
  budgetToRow,
  eventFromRow,
  idempotencyFromRow,
  int,
  policyFromRow,
  reservationFromRow,
  tenantFromRow,
  tenantToRow,
  type Row,
} from './rows.js';
import { idemKey, Need, SnapshotView, type Want } from './view.js';
import { fundWithEvents } from '../sqlite/governance-fund.js';
import { PostgresGovernance } from './governance.js';
import { PostgresWebhooks } from './webhooks.js';
import { Batcher, type BatchItem, type Queued } from './batch.js';
import { writeStatement, type WriteStatement } from './writes.js';

export interface PostgresOptions {
  /** postgres://user:pass@host:port/db (DATABASE_URL). */
  url: string;
  /** Connections in this process's pool (PG_POOL_SIZE). */
  poolSize: number;
  /** Schema holding the tables (created if missing); default: the connection's search_path. */
  schema?: string | undefined;
  /** Apply pending migrations on open (default); when false, refuse to run on an outdated schema. */
  migrate?: boolean | undefined;
  /** application_name of the connections (pg_stat_activity); default "cycles". */
  applicationName?: string | undefined;
  /** Called after a COMMIT with the events it wrote (metrics); never fails the mutation. */
  onEventsCommitted?: ((events: readonly EventRecord[]) => void) | undefined;
}

/** How often one operation is retried after a serialization failure, deadlock or lost race. */
const MAX_ATTEMPTS = 12;
/** Load-and-rerun rounds within one attempt; operations need 1-3. */
const MAX_PASSES = 16;
/** A server that hangs mid-transaction must not hold row locks for long. */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;
/** A request never waits longer than this for a row lock (below the HTTP request timeout): 503, retry. */
const LOCK_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * Lanes of the batcher (batch.ts): groups in flight at a time, each on a share of the tenants.
 * Fewer lanes make bigger groups (less CPU per operation); more than one keeps a group that waits
 * on a row lock from holding up every tenant of the process.
 */
const LANES = 2;

/** SQLSTATEs after which the whole transaction is retried: nothing of it was applied. */
const RETRYABLE = new Set(['40001', '40P01', '23505']);
/** SQLSTATE classes and codes meaning the database cannot be reached right now. */
const UNAVAILABLE_CODES = new Set(['57P01', '57P02', '57P03', '53300', '53400']);
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE', 'EHOSTUNREACH', 'EAI_AGAIN']);

const sqlState = (e: unknown): string | undefined => (e as { code?: unknown })?.code as string | undefined;

/**
 * A prepared statement whose tables changed shape since it was planned (a migration applied by
 * another server while this one runs): its connection is dropped and the work retried on a fresh
 * one, which prepares it again.
 */
const isStalePlan = (e: unknown): boolean => sqlState(e) === '0A000' && /cached plan must not change result type/.test((e as Error).message ?? '');

/** True when the whole transaction failed in a way a retry from the start can fix. */
export const isRetryable = (e: unknown): boolean => !(e instanceof CyclesError) && RETRYABLE.has(sqlState(e) ?? '');

/** True when `e` means the database cannot be reached (as opposed to a failed request). */
export function isUnavailable(e: unknown): boolean {
  const code = sqlState(e);
  if (code && (UNAVAILABLE_CODES.has(code) || code.startsWith('08') || UNAVAILABLE_ERRNOS.has(code))) return true;
  const msg = (e as Error)?.message ?? '';
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Cannot use a pool after calling end/i.test(msg);
}

/** Database failures become protocol errors: unreachable is 503, anything else stays a 500. */
function storeError(e: unknown): unknown {
  if (e instanceof CyclesError) return e;
  // PostgreSQL text cannot hold U+0000: such a value is refused, not stored altered.
  if (sqlState(e) === '22021' || sqlState(e) === '22P05') {
    return new CyclesError('INVALID_REQUEST', 'Text values must not contain NUL (U+0000) characters on this server');
  }
  if (sqlState(e) === 'CYW01') return new CyclesError('INTERNAL_ERROR', (e as Error).message);
  if (sqlState(e) === '55P03') {
    return new CyclesError('SERVICE_UNAVAILABLE', `The PostgreSQL store is busy: no row lock within ${LOCK_TIMEOUT_MS} ms; nothing was written, retry with the same idempotency key`);
  }
  if (isUnavailable(e)) return new CyclesError('SERVICE_UNAVAILABLE', `The PostgreSQL store is unavailable: ${(e as Error).message}`);
  return e;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Outcome = { ok: true; value: OpResult } | { ok: false; error: unknown };

/** An execution twins can join, while it runs. */
interface InflightEntry {
  running: Promise<OpResult> | undefined;
}

const twinKey = (endpoint: string, owner: string, key: string, hash: string): string => `${endpoint}\u0000${owner}\u0000${key}\u0000${hash}`;

/** One open transaction: the client, the database time at its start, and query helpers. */
const statementNames = new Map<string, string>();
/** A stable name per statement text: PostgreSQL keeps its parsed form and plan on each connection. */
function statementName(text: string): string {
  let name = statementNames.get(text);
  if (!name) statementNames.set(text, (name = `cycles_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`));
  return name;
}

const preparedQuery = (text: string, values: unknown[]): pg.QueryConfig => ({ name: statementName(text), text, values });

/**
 * Sends the queries `send` issues in one network write and waits for all of them. The pool's
 * connections run in pg's pipeline mode, so a query goes out as soon as it is issued; corking the
 * socket around several makes them one write (and one round trip) instead of one each. Socket
 * writes are a large share of the server's CPU time per operation. Each query still gets its own
 * answer: when one fails inside a transaction, the ones after it fail too (or a COMMIT becomes a
 * rollback), which the callers rely on.
 */
export function pipelined(client: pg.PoolClient, send: () => Array<Promise<pg.QueryResult>>): Promise<pg.QueryResult[]> {
  const stream = (client as unknown as { connection?: { stream?: { cork?: () => void; uncork?: () => void } } }).connection?.stream;
  stream?.cork?.();
  let sent: Array<Promise<pg.QueryResult>>;
  try {
    sent = send();
  } finally {
    stream?.uncork?.();
  }
  return Promise.all(sent);
}

/** A COMMIT answered with another tag (ROLLBACK) did not commit: never report success for it. */
function committed(res: pg.QueryResult | undefined): void {
  if (res?.command !== 'COMMIT') throw new Error(`COMMIT was answered with ${res?.command ?? 'nothing'}; the transaction was rolled back`);
}

export class Tx {
  /** Events written by this transaction (reported once it commits). */
  readonly events: EventRecord[] = [];
  /** The last write statement, held back to go out with COMMIT (or before the next statement). */
  private pending: WriteStatement | undefined;

  constructor(
    readonly client: pg.PoolClient,
    readonly now: number,
    /** Rows of the transaction's first statement, if it had one. */
    readonly first: Row[] = [],
  ) {}

  async rows(text: string, values: unknown[] = []): Promise<Row[]> {
    await this.sendPending();
    return (await this.client.query(text, values)).rows as Row[];
  }

  /** A statement prepared once per connection (named by its text), for the hot path. */
  async prepared(text: string, values: unknown[]): Promise<Row[]> {
    await this.sendPending();
    return (await this.client.query(preparedQuery(text, values))).rows as Row[];
  }

  /**
   * Queues a write statement. It checks its own row counts on the server, so it can share a
   * network write with the COMMIT; a later statement of the transaction sends it first.
   */
  write(stmt: WriteStatement): void {
    if (this.pending) throw new Error('a write statement is already pending');
    this.pending = stmt;
  }

  private async sendPending(): Promise<void> {
    const stmt = this.pending;
    if (!stmt) return;
    this.pending = undefined;
    await this.client.query(preparedQuery(stmt.text, stmt.values));
  }

  /** COMMIT, in the same network write as the pending write statement if there is one. */
  async commit(): Promise<void> {
    const stmt = this.pending;
    this.pending = undefined;
    if (!stmt) {
      committed(await this.client.query('COMMIT'));
      return;
    }
    const [, done] = await pipelined(this.client, () => [this.client.query(preparedQuery(stmt.text, stmt.values)), this.client.query('COMMIT')]);
    committed(done);
  }

  async run(sql: Sql): Promise<Row[]> {
    return this.rows(sql.text, sql.values);
  }
}

/** Tenants ($n), idempotency records ($n+1..$n+3: tenant, endpoint, key) and active policies of a group. */
const groupReads = (n: number) => `(SELECT coalesce(json_agg(t), '[]'::json) FROM tenants t WHERE t.tenant_id = ANY($${n}::text[])) AS tenants,
      (SELECT coalesce(json_agg(i), '[]'::json) FROM idempotency i
        JOIN unnest($${n + 1}::text[], $${n + 2}::text[], $${n + 3}::text[]) AS k(tenant_id, endpoint, key)
        ON i.tenant_id = k.tenant_id AND i.endpoint = k.endpoint AND i.key = k.key) AS idem,
      (SELECT coalesce(json_agg(p ORDER BY p.policy_id), '[]'::json) FROM policies p WHERE p.tenant_id = ANY($${n}::text[]) AND p.status = 'ACTIVE') AS policies`;

// Hot-path statements.
const SQL = {
  begin: 'BEGIN; SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now',
  budgets: 'SELECT * FROM budgets WHERE tenant_id = $1 AND scope = ANY($2::text[]) ORDER BY scope, unit',
  budgetsOfMany: `SELECT b.* FROM budgets b JOIN unnest($1::text[], $2::text[]) AS w(tenant_id, scope)
    ON b.tenant_id = w.tenant_id AND b.scope = w.scope ORDER BY b.scope, b.unit FOR UPDATE OF b`,
  reservation: 'SELECT * FROM reservations WHERE reservation_id = $1',
  tenant: 'SELECT * FROM tenants WHERE tenant_id = $1',
  idempotency: 'SELECT * FROM idempotency WHERE tenant_id = $1 AND endpoint = $2 AND key = $3',
  // The budgets of one tenant at some scopes (locked root to leaf when FOR UPDATE is appended
  // inside), with the tenant, an idempotency record and the active policies, in one round trip.
  evaluation: (lock: boolean) => `WITH b AS MATERIALIZED (
      SELECT * FROM budgets WHERE tenant_id = $1 AND scope = ANY($2::text[]) ORDER BY scope, unit${lock ? ' FOR UPDATE' : ''})
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now,
      (SELECT coalesce(json_agg(b), '[]'::json) FROM b) AS budgets,
      (SELECT to_json(t) FROM tenants t WHERE t.tenant_id = $1) AS tenant,
      (SELECT to_json(i) FROM idempotency i WHERE i.tenant_id = $1 AND i.endpoint = $3 AND i.key = $4) AS idem,
      (SELECT coalesce(json_agg(p ORDER BY p.policy_id), '[]'::json) FROM policies p WHERE p.tenant_id = $1 AND p.status = 'ACTIVE') AS policies`,
  // A group's reservations, locked in id order; the first statement of its transaction.
  reservationsFirst: `WITH r AS MATERIALIZED (SELECT * FROM reservations WHERE reservation_id = ANY($1::text[]) ORDER BY reservation_id FOR UPDATE)
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now, (SELECT coalesce(json_agg(r), '[]'::json) FROM r) AS reservations`,
  // A group's evaluation: the budgets of several (tenant, scope) pairs (locked in one ordered
  // statement when FOR UPDATE), the tenants, the idempotency records and the active policies.
  groupEvaluation: (lock: boolean) => `WITH b AS MATERIALIZED (
      SELECT bu.* FROM budgets bu JOIN unnest($1::text[], $2::text[]) AS w(tenant_id, scope)
        ON bu.tenant_id = w.tenant_id AND bu.scope = w.scope ORDER BY bu.scope, bu.unit${lock ? ' FOR UPDATE OF bu' : ''})
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now,
      (SELECT coalesce(json_agg(b), '[]'::json) FROM b) AS budgets, ${groupReads(3)}`,
  // The same reads again, under the locks (for refused operations).
  groupRefresh: `SELECT ${groupReads(1)}`,
  // The reservation a commit, release or extend acts on, locked; the first statement of its transaction.
  reservationFirst: `WITH r AS MATERIALIZED (SELECT * FROM reservations WHERE reservation_id = $1 FOR UPDATE)
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now, (SELECT to_json(r) FROM r) AS reservation`,
  tenantAndIdem: `SELECT (SELECT to_json(t) FROM tenants t WHERE t.tenant_id = $1) AS tenant,
    (SELECT to_json(i) FROM idempotency i WHERE i.tenant_id = $1 AND i.endpoint = $2 AND i.key = $3) AS idem`,
  due: `SELECT * FROM reservations WHERE due_at_ms IS NOT NULL AND due_at_ms < $1
    ORDER BY due_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED`,
} as const;

interface OpPlan<T, C = void> {
  /** The transaction's first statement (it must select the clock as \`now\`); its rows are tx.first. */
  first?: Sql;
  /** Loads (locks first) the rows the operation will need before it runs; returns what `run` needs to know. */
  preload(tx: Tx, view: SnapshotView): Promise<C>;
  run(view: SnapshotView, loaded: C): T;
  /** Whether rows loaded on demand are locked (false for read-only evaluations). */
  lock: boolean;
  /** Time for the view; defaults to the database clock. */
  now?: number;
  /** Extra statements in the same transaction, after the operation's writes. */
  after?(tx: Tx, out: T, loaded: C): Promise<void>;
  /**
   * When the rules refuse the operation, reads again what may have been read before the lock
   * wait (tenant, idempotency record) and says whether it changed; if so the operation is rerun.
   */
  recheck?(tx: Tx, view: SnapshotView): Promise<boolean>;
}

interface GroupPlan {
  /** Per item, the tenant whose rows it evaluates (undefined: nothing to evaluate, e.g. an unknown reservation). */
  evaluated: Array<string | undefined>;
  tenants: string[];
  keys: Array<[string, string, string]>;
  pairs: Array<[string, string]>;
  /** Whether the budgets are locked (any item that may write). */
  lock: boolean;
  /** Parameters of the group evaluation statement, and of the refresh (its reads without the budgets). */
  evaluationArgs: unknown[];
  readArgs: unknown[];
}

/**
 * What a group reads: the budgets of every (tenant, scope) pair, the tenants, the idempotency
 * records and the policies. Settle items name a reservation, whose tenant and scopes come from
 * `view` (loaded first); the others carry their own.
 */
function groupPlan(items: readonly BatchItem[], view: SnapshotView | undefined): GroupPlan {
  const pairs = new Map<string, [string, string]>();
  const tenants = new Set<string>();
  const keys = new Map<string, [string, string, string]>();
  let lock = false;
  const evaluated = items.map((it) => {
    const r = it.reservationId !== undefined ? view?.reservations.get(it.reservationId) : undefined;
    const tenantId = it.reservationId !== undefined ? r?.tenant_id : it.tenantId;
    const scopes = it.reservationId !== undefined ? r?.budgeted_scopes : it.scopes;
    if (tenantId === undefined) return undefined;
    tenants.add(tenantId);
    lock ||= it.lock;
    for (const sc of scopes ?? []) pairs.set(`${tenantId}\u0000${sc}`, [tenantId, sc]);
    if (it.key !== undefined) keys.set(idemKey(tenantId, it.endpoint, it.key), [tenantId, it.endpoint, it.key]);
    return tenantId;
  });
  const tenantList = [...tenants];
  const keyList = [...keys.values()];
  const pairList = [...pairs.values()];
  const readArgs = [tenantList, keyList.map((k) => k[0]), keyList.map((k) => k[1]), keyList.map((k) => k[2])];
  return {
    evaluated,
    tenants: tenantList,
    keys: keyList,
    pairs: pairList,
    lock,
    evaluationArgs: [pairList.map((p) => p[0]), pairList.map((p) => p[1]), ...readArgs],
    readArgs,
  };
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly schema: string | undefined;
  private readonly pool: pg.Pool;
  private readonly migrateOnOpen: boolean;
  private readonly onEventsCommitted: PostgresOptions['onEventsCommitted'];
  private ready: Promise<void> | undefined;
  private closed = false;
  /** Committed transactions and whole-transaction retries by SQLSTATE, since this store opened. */
  readonly stats = { committed: 0, retries: {} as Record<string, number> };
  /** Fire-and-forget writes (audit rows, key use stamps) still in flight in this process. */
  private readonly background = new Set<Promise<unknown>>();
  /** Groups the runtime operations (group commit); see batch.ts. */
  private readonly batcher: Batcher;
  /** Keyed mutations in flight in this process, by (endpoint, owner, idempotency key, payload hash). */
  private readonly inflight = new Map<string, InflightEntry>();

  /**
   * Connecting and migrating happen on first use (the first call waits for them); a failed
   * attempt is retried by the next call, so a server started before its database recovers.
   */
  constructor(opts: PostgresOptions) {
    this.pool = PostgresStore.createPool(opts);
    this.schema = opts.schema;
    this.migrateOnOpen = opts.migrate ?? true;
    this.onEventsCommitted = opts.onEventsCommitted;
    // One connection stays free of groups for reads, the sweeper and the governance plane; the
    // others are shared by the lanes of the batcher (batch.ts), GROUPS_PER_LANE each.
    const slots = Math.max(1, opts.poolSize - 1);
    this.batcher = new Batcher(Math.min(slots, LANES), 1, (group) => this.runGroup(group));
  }

  static createPool(opts: Pick<PostgresOptions, 'url' | 'poolSize' | 'schema' | 'applicationName'>): pg.Pool {
    if (opts.schema !== undefined && !SCHEMA_NAME.test(opts.schema)) {
      throw new Error(`PostgreSQL schema name "${opts.schema}" must match ${String(SCHEMA_NAME)}`);
    }
    // Every execution of a prepared statement is planned for its own arguments and the tables'
    // current size. With PostgreSQL's default, a connection switches to a generic plan after five
    // executions; one made while the tables are still small (a new database's first second) hash-
    // joins a group's idempotency keys against a sequential scan of the table, and keeps doing so
    // as the table grows until an ANALYZE replaces the plan: reserves/s then fall steadily (11,000
    // → 3,400 per 5 s over 40 s, one tenant, autovacuum off). Planning each execution measured
    // the same as good generic plans with one tenant, 4-9% slower over 100 (docs/backends.md,
    // "Operating it" under PostgreSQL).
    const settings = [
      `-c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_TIMEOUT_MS}`,
      `-c lock_timeout=${LOCK_TIMEOUT_MS}`,
      '-c plan_cache_mode=force_custom_plan',
    ];
    if (opts.schema !== undefined) settings.push(`-c search_path=${opts.schema}`);
    const pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize,
      application_name: opts.applicationName ?? 'cycles',
      options: settings.join(' '),
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      // Queries are sent as soon as they are issued, so that `pipelined` can put several in one write.
      pipeline: true,
    });
    // An idle connection that breaks is dropped by the pool; the next query reconnects.
    pool.on('error', () => undefined);
    // A connection that breaks while checked out (database restart, terminated backend) fails its
    // query, which the transaction handles; its 'error' event must not become an uncaught exception.
    pool.on('connect', (client) => client.on('error', () => undefined));
    return pool;
  }

  /** Opens a store and waits until it is connected and migrated. */
  static async open(opts: PostgresOptions): Promise<PostgresStore> {
    const store = new PostgresStore(opts);
    try {
      await store.ensureReady();
    } catch (e) {
      await store.close().catch(() => undefined);
      throw e;
    }
    return store;
  }

  private ensureReady(): Promise<void> {
    if (this.closed) return Promise.reject(new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed'));
    this.ready ??= this.init().catch((e: unknown) => {
      this.ready = undefined;
      throw storeError(e);
    });
    return this.ready;
  }

  private async init(): Promise<void> {
    const client = await this.pool.connect();
    try {
      if (this.migrateOnOpen) {
        await migrate(client, this.schema);
        return;
      }
      const s = await migrationStatus(client);
      if (s.pending.length > 0) {
        throw new Error(
          `PostgreSQL schema is at version ${s.applied.at(-1) ?? 0} but this server needs ${s.required}; run \`cycles migrate\` first`,
        );
      }
    } finally {
      client.release();
    }
  }

  /** `cycles migrate`: applies pending migrations and reports the result. */
  static async migrate(opts: Pick<PostgresOptions, 'url' | 'schema'>): Promise<MigrationResult> {
    return PostgresStore.withClient(opts, (client) => migrate(client, opts.schema));
  }

  /** `cycles store check`: the migration state, without changing anything. */
  static async status(opts: Pick<PostgresOptions, 'url' | 'schema'>): Promise<MigrationStatus> {
    return PostgresStore.withClient(opts, (client) => migrationStatus(client));
  }

  private static async withClient<T>(opts: Pick<PostgresOptions, 'url' | 'schema'>, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const pool = PostgresStore.createPool({ ...opts, poolSize: 1 });
    try {
      const client = await pool.connect();
      try {
        return await fn(client);
      } finally {
        client.release();
      }
    } finally {
      await pool.end();
    }
  }

  // ---------------------------------------------------------------- transactions

  /**
   * Runs `body` in a transaction, retrying the whole of it after a serialization failure,
   * deadlock or lost unique race. Only a successful COMMIT resolves the promise, so an
   * acknowledged mutation is durable; a CyclesError from the rules rolls back and is rethrown.
   */
  private async transaction<T>(body: (tx: Tx) => Promise<T>, first?: Sql): Promise<T> {
    await this.ensureReady();
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed');
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (e) {
        throw storeError(e);
      }
      let broken: Error | undefined;
      try {
        let tx: Tx;
        if (first) {
          // The first statement reads the clock itself (a \`now\` column) and is a prepared
          // statement (planned once per connection); it goes out in one write with BEGIN.
          const [, res] = await pipelined(client, () => [client.query('BEGIN'), client.query(preparedQuery(first.text, first.values))]);
          const rows = res!.rows as Row[];
          tx = new Tx(client, int(rows[0]!.now), rows);
        } else {
          const res = (await client.query(SQL.begin)) as unknown as pg.QueryResult[];
          tx = new Tx(client, int(res[1]!.rows[0]!.now));
        }
        const out = await body(tx);
        await tx.commit();
        this.stats.committed++;
        if (tx.events.length > 0 && this.onEventsCommitted) {
          try {
            this.onEventsCommitted(tx.events);
          } catch {
            // An observer (metrics) must never fail a committed mutation.
          }
        }
        return out;
      } catch (e) {
        await client.query('ROLLBACK').catch((err: Error) => (broken = err));
        if (isUnavailable(e) || isStalePlan(e)) broken = e as Error;
        if ((isRetryable(e) || isStalePlan(e)) && attempt < MAX_ATTEMPTS) {
          const code = sqlState(e) ?? 'unknown';
          this.stats.retries[code] = (this.stats.retries[code] ?? 0) + 1;
          // Jittered exponential backoff: racing retries spread out instead of colliding again.
          await sleep(Math.random() * Math.min(100, 2 ** attempt));
          continue;
        }
        throw storeError(e);
      } finally {
        client.release(broken);
      }
    }
  }

  /**
   * Tracks a write the caller does not wait for (the audit row of a request is written after its
   * reply is queued). Reads of what such writes touch call `settled()` first, so a client that
   * sends its next request to this process always finds the row (a commit group gives the same
   * order on the embedded store).
   */
  track<T>(p: Promise<T>): Promise<T> {
    this.background.add(p);
    const done = () => this.background.delete(p);
    p.then(done, done);
    return p;
  }

  async settled(): Promise<void> {
    if (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** A transaction for this backend's other modules (webhooks), with the same retry rules. */
  transact<T>(body: (tx: Tx) => Promise<T>): Promise<T> {
    return this.transaction(body);
  }

  /**
   * A transaction with a SnapshotView for modules that mix their own SQL with ledger rules and
   * events (governance): what they put in the view is flushed just before COMMIT.
   */
  viewTransaction<T>(body: (tx: Tx, view: SnapshotView) => Promise<T>): Promise<T> {
    return this.transaction(async (tx) => {
      const view = new SnapshotView(tx.now);
      const out = await body(tx, view);
      await this.flush(tx, view);
      return out;
    });
  }

  /** Writes events to the outbox inside `tx`; they are reported to onEventsCommitted after COMMIT. */
  async writeEvents(tx: Tx, drafts: readonly EventDraft[], ctx: OpContext): Promise<void> {
    if (drafts.length === 0) return;
    const events = drafts.map((d) => buildEvent(d, ctx, tx.now));
    const stmt = writeStatement({ reservations: new Map(), budgets: new Map(), idempotency: new Map(), events }, tx.now)!;
    await tx.rows(stmt.text, stmt.values);
    tx.events.push(...events);
  }

  /** Runs a ledger operation: preload, then run / load what it asked for / run again, then flush. */
  private op<T, C = void>(plan: OpPlan<T, C>): Promise<T> {
    return this.transaction(async (tx) => {
      const view = new SnapshotView(plan.now ?? tx.now);
      const loaded = await plan.preload(tx, view);
      let rechecked = false;
      for (let pass = 1; ; pass++) {
        view.reset();
        let out: T;
        try {
          out = plan.run(view, loaded);
        } catch (e) {
          if (e instanceof CyclesError && plan.recheck && !rechecked) {
            rechecked = true;
            if (await plan.recheck(tx, view)) continue;
          }
          if (!(e instanceof Need)) throw e;
          if (pass >= MAX_PASSES) throw new CyclesError('INTERNAL_ERROR', `Ledger operation did not settle its reads after ${pass} passes`);
          await this.load(tx, view, e.want, plan.lock);
          continue;
        }
        await this.flush(tx, view);
        if (plan.after) await plan.after(tx, out, loaded);
        return out;
      }
    }, plan.first);
  }

  private async load(tx: Tx, view: SnapshotView, want: Want, lock: boolean): Promise<void> {
    switch (want.kind) {
      case 'tenant': {
        const [row] = await tx.prepared(SQL.tenant, [want.tenantId]);
        view.loadTenant(want.tenantId, row ? tenantFromRow(row) : undefined);
        return;
      }
      case 'idempotency': {
        const [row] = await tx.prepared(SQL.idempotency, [want.tenantId, want.endpoint, want.key]);
        view.loadIdempotency(want.tenantId, want.endpoint, want.key, row ? idempotencyFromRow(row) : undefined);
        return;
      }
      case 'reservation':
        await this.loadReservation(tx, view, want.reservationId, lock);
        return;
      case 'budgets':
        return this.loadBudgets(tx, view, want.tenantId, want.scopes, lock);
      case 'policies':
        return this.loadPolicies(tx, view, want.tenantId);
    }
  }

  private async loadReservation(tx: Tx, view: SnapshotView, id: string, lock: boolean): Promise<ReservationRecord | undefined> {
    if (view.hasReservation(id)) return view.reservation(id);
    const [row] = await tx.prepared(SQL.reservation + (lock ? ' FOR UPDATE' : ''), [id]);
    const r = row ? reservationFromRow(row) : undefined;
    view.loadReservation(id, r);
    return r;
  }

  /** Budgets of one tenant at these scopes, in every unit; locked root to leaf when `lock`. */
  async loadBudgets(tx: Tx, view: SnapshotView, tenantId: string, scopes: readonly string[], lock: boolean): Promise<void> {
    const missing = view.missingScopes(tenantId, scopes);
    if (missing.length === 0) return;
    const rows = await tx.prepared(SQL.budgets + (lock ? ' FOR UPDATE' : ''), [tenantId, missing]);
    view.loadBudgets(tenantId, missing, rows.map(budgetFromRow));
  }

  /**
   * Everything a reserve, decide, direct debit or funding reads, in one statement: the budgets at
   * the affected scopes (locked when `lock`), the tenant, the idempotency record and the policies.
   * The statement's snapshot predates its lock wait, so the tenant and the idempotency record may
   * be older than the budgets. That is harmless when the operation succeeds (a same-key request
   * that committed meanwhile makes the insert conflict, and the whole transaction is retried) and
   * is corrected by `refreshEvaluation` when it is refused (so that a concurrent close is reported
   * as TENANT_CLOSED, and a same-key request that won meanwhile is replayed, not refused).
   */
  private async loadEvaluation(tx: Tx, view: SnapshotView, tenantId: string, scopes: readonly string[], lock: boolean, endpoint: string, key: string | undefined): Promise<void> {
    const [row] = await tx.prepared(SQL.evaluation(lock), [tenantId, scopes, endpoint, key ?? '']);
    this.applyEvaluation(view, row, tenantId, scopes, endpoint, key);
  }

  /** The evaluation statement as the first of its transaction. */
  private evaluationFirst(tenantId: string, scopes: readonly string[], lock: boolean, endpoint: string, key: string | undefined): Sql {
    return { text: SQL.evaluation(lock), values: [tenantId, [...scopes], endpoint, key ?? ''] };
  }

  private applyEvaluation(view: SnapshotView, row: Row | undefined, tenantId: string, scopes: readonly string[], endpoint: string, key: string | undefined): void {
    const budgets = ((row?.budgets as Row[] | undefined) ?? []).map(budgetFromRow);
    view.loadBudgets(tenantId, scopes, budgets);
    view.loadTenant(tenantId, row?.tenant ? tenantFromRow(row.tenant as Row) : undefined);
    if (key !== undefined) view.loadIdempotency(tenantId, endpoint, key, row?.idem ? idempotencyFromRow(row.idem as Row) : undefined);
    view.loadPolicies(tenantId, ((row?.policies as Row[] | undefined) ?? []).map(policyFromRow));
  }

  /** Reads the tenant and the idempotency record again (now under the locks); true when either changed. */
  private async refreshEvaluation(tx: Tx, view: SnapshotView, tenantId: string, endpoint: string, key: string | undefined): Promise<boolean> {
    const [row] = await tx.prepared(SQL.tenantAndIdem, [tenantId, endpoint, key ?? '']);
    const tenant = row?.tenant ? tenantFromRow(row.tenant as Row) : undefined;
    const idem = key !== undefined && row?.idem ? idempotencyFromRow(row.idem as Row) : undefined;
    const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
    const changed = !same(view.tenants.get(tenantId), tenant) || (key !== undefined && !same(view.idempotencyRecords.get(idemKey(tenantId, endpoint, key)), idem));
    view.loadTenant(tenantId, tenant);
    if (key !== undefined) view.loadIdempotency(tenantId, endpoint, key, idem);
    return changed;
  }

  /** The tenant's ACTIVE policies (read, not locked: a policy change is not a ledger mutation). */
  private async loadPolicies(tx: Tx, view: SnapshotView, tenantId: string): Promise<void> {
    const rows = await tx.rows("SELECT * FROM policies WHERE tenant_id = $1 AND status = 'ACTIVE' ORDER BY policy_id", [tenantId]);
    view.loadPolicies(tenantId, rows.map(policyFromRow));
  }

  /**
   * Writes what the operation buffered, in one prepared statement (there are only a few dozen
   * shapes) that checks every row landed. It is sent with the COMMIT (or before the next
   * statement), so a failed check rolls the transaction back.
   */
  async flush(tx: Tx, view: SnapshotView): Promise<void> {
    const stmt = writeStatement(view.writes, view.now);
    if (!stmt) return;
    tx.write(stmt);
    tx.events.push(...view.writes.events);
  }

  // ---------------------------------------------------------------- group commit

  /**
   * Runs a group of runtime operations in one transaction (batch.ts) and settles each. If the
   * group's transaction fails for any reason but an unreachable store, nothing was written, and
   * each operation runs again in a transaction of its own, so one operation's bad data can only
   * ever fail that operation.
   */
  private async runGroup(group: Queued[]): Promise<void> {
    const items = group.map((q) => q.item);
    // The transaction's first statement goes out with its BEGIN: the reservations settled in the
    // group when there are any (their budgets are known only then), else the whole evaluation.
    const reservationIds = [...new Set(items.map((i) => i.reservationId).filter((id): id is string => id !== undefined))].sort();
    const plain = reservationIds.length === 0 ? groupPlan(items, undefined) : undefined;
    const first: Sql | undefined =
      reservationIds.length > 0
        ? { text: SQL.reservationsFirst, values: [reservationIds] }
        : plain!.tenants.length > 0
          ? { text: SQL.groupEvaluation(plain!.lock), values: plain!.evaluationArgs }
          : undefined;
    let outcomes: Outcome[];
    try {
      outcomes = await this.transaction((tx) => this.groupBody(tx, items, reservationIds, plain), first);
    } catch (e) {
      if (group.length === 1 || (e instanceof CyclesError && e.code === 'SERVICE_UNAVAILABLE')) {
        for (const q of group) q.reject(e);
        return;
      }
      await Promise.all(group.map((q) => q.item.single().then(q.resolve, q.reject)));
      return;
    }
    group.forEach((q, i) => {
      const o = outcomes[i]!;
      if (o.ok) q.resolve(o.value);
      else q.reject(o.error);
    });
  }

  private async groupBody(tx: Tx, items: readonly BatchItem[], reservationIds: readonly string[], plain: GroupPlan | undefined): Promise<Outcome[]> {
    const view = new SnapshotView(tx.now);
    // 1. The reservations settled in this group, locked in id order (the transaction's first statement).
    let plan = plain;
    if (reservationIds.length > 0) {
      const rows = (tx.first[0]?.reservations as Row[] | null | undefined) ?? [];
      const found = new Map(rows.map((r) => [r.reservation_id as string, reservationFromRow(r)]));
      for (const id of reservationIds) view.loadReservation(id, found.get(id));
      plan = groupPlan(items, view);
    }
    const { evaluated, tenants: tenantList, keys: keyList, pairs: pairList, readArgs } = plan!;
    // 2. Everything the operations read, budgets locked root to leaf, in one statement (the first
    // one of the transaction unless reservations came first).
    if (tenantList.length > 0) {
      const row = plain ? tx.first[0] : (await tx.prepared(SQL.groupEvaluation(plan!.lock), plan!.evaluationArgs))[0];
      const budgets = ((row?.budgets as Row[] | undefined) ?? []).map(budgetFromRow);
      for (const t of tenantList) {
        view.loadBudgets(
          t,
          pairList.filter((p) => p[0] === t).map((p) => p[1]),
          budgets.filter((b) => b.tenant_id === t),
        );
      }
      this.applyGroupReads(view, row, tenantList, keyList);
    }
    // 3. The operations, one after the other, each from a checkpoint.
    const outcomes: Outcome[] = new Array(items.length);
    const runItem = async (i: number): Promise<void> => {
      for (let pass = 1; ; pass++) {
        const saved = view.checkpoint();
        try {
          outcomes[i] = { ok: true, value: items[i]!.run(view) };
          return;
        } catch (e) {
          view.restore(saved);
          if (!(e instanceof Need)) {
            outcomes[i] = { ok: false, error: e };
            return;
          }
          if (pass >= MAX_PASSES) {
            outcomes[i] = { ok: false, error: new CyclesError('INTERNAL_ERROR', `Ledger operation did not settle its reads after ${pass} passes`) };
            return;
          }
          // Rows outside the preload: budgets locked (ordered), anything else only read.
          await this.load(tx, view, e.want, e.want.kind === 'budgets');
        }
      }
    };
    for (let i = 0; i < items.length; i++) await runItem(i);
    // 4. The statement of step 2 saw the tenants and idempotency records as they were before its
    // lock wait: a refused operation whose inputs changed meanwhile runs again on the fresh ones.
    const refused = items.map((it, i) => i).filter((i) => !outcomes[i]!.ok && outcomes[i]!.error instanceof CyclesError && evaluated[i] !== undefined && items[i]!.lock);
    if (refused.length > 0 && tenantList.length > 0) {
      const before = refused.map((i) => this.evaluationInputs(view, evaluated[i]!, items[i]!));
      const [row] = await tx.prepared(SQL.groupRefresh, readArgs);
      this.applyGroupReads(view, row, tenantList, keyList);
      for (const [n, i] of refused.entries()) {
        if (this.evaluationInputs(view, evaluated[i]!, items[i]!) !== before[n]) await runItem(i);
      }
    }
    // 5. All writes in one statement.
    await this.flush(tx, view);
    return outcomes;
  }

  private evaluationInputs(view: SnapshotView, tenantId: string, it: BatchItem): string {
    const idem = it.key === undefined ? null : view.idempotencyRecords.get(idemKey(tenantId, it.endpoint, it.key));
    return JSON.stringify([view.tenants.get(tenantId) ?? null, idem ?? null]);
  }

  private applyGroupReads(view: SnapshotView, row: Row | undefined, tenants: readonly string[], keys: ReadonlyArray<[string, string, string]>): void {
    const tenantRows = new Map(((row?.tenants as Row[] | undefined) ?? []).map((t) => [t.tenant_id as string, tenantFromRow(t)]));
    for (const t of tenants) view.loadTenant(t, tenantRows.get(t));
    const idemRows = new Map(((row?.idem as Row[] | undefined) ?? []).map((r) => [idemKey(r.tenant_id as string, r.endpoint as string, r.key as string), idempotencyFromRow(r)]));
    for (const [t, e, k] of keys) view.loadIdempotency(t, e, k, idemRows.get(idemKey(t, e, k)));
    const policies = ((row?.policies as Row[] | undefined) ?? []).map(policyFromRow);
    for (const t of tenants) view.loadPolicies(t, policies.filter((p) => p.tenant_id === t));
  }

  // ---------------------------------------------------------------- runtime operations

  async ping(): Promise<void> {
    await this.ensureReady();
    try {
      await this.pool.query('SELECT 1');
    } catch (e) {
      throw storeError(e);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Waits for checked-out connections (in-flight transactions) to come back, then disconnects.
    await this.pool.end();
  }

  /**
   * Identical requests (same endpoint, owner, idempotency key and payload) that overlap in this
   * process share one execution: the later ones get the first one's answer, as a replay. Without
   * this, a first attempt refused with an error (errors are not stored) and its overlapping twin
   * could see different budget states and answer differently; SQLite gets the same effect from
   * running a commit group's operations back to back. Across processes the stored idempotency
   * record still guarantees one reservation per key.
   */
  private coalesce(key: string | undefined, run: () => Promise<OpResult>): Promise<OpResult> {
    if (key === undefined) return run();
    const twin = this.inflight.get(key)?.running;
    if (twin) return twin.then((r) => ({ ...r, replayed: true }));
    const entry: InflightEntry = { running: undefined };
    // The entry lets go of the promise before the Map lets go of the entry: a Map's replaced
    // tables still point at their entries, and an old-generation table (which a long-lived Map's
    // replacements are) keeps whatever they point at alive to young collections until the next
    // full one. An emptied entry is a few bytes; the promise reaches the whole request.
    const p = run().finally(() => {
      entry.running = undefined;
      this.inflight.delete(key);
    });
    entry.running = p;
    this.inflight.set(key, entry);
    return p;
  }

  reserve = (cmd: Parameters<Store['reserve']>[0]): Promise<OpResult> =>
    this.coalesce(twinKey('reserve', cmd.tenantId, cmd.request.idempotency_key, cmd.hash), () =>
      this.batcher.submit(cmd.tenantId, {
        tenantId: cmd.tenantId,
        scopes: cmd.scopes.affectedScopes,
        lock: cmd.request.dry_run !== true,
        endpoint: 'reserve',
        key: cmd.request.idempotency_key,
        run: (view) => reserve(view, cmd),
        single: () => this.reserveOnce(cmd),
      }),
    );

  private reserveOnce(cmd: Parameters<Store['reserve']>[0]): Promise<OpResult> {
    const live = cmd.request.dry_run !== true;
    return this.op({
      lock: live,
      first: this.evaluationFirst(cmd.tenantId, cmd.scopes.affectedScopes, live, 'reserve', cmd.request.idempotency_key),
      preload: async (tx, view) => this.applyEvaluation(view, tx.first[0], cmd.tenantId, cmd.scopes.affectedScopes, 'reserve', cmd.request.idempotency_key),
      recheck: (tx, view) => this.refreshEvaluation(tx, view, cmd.tenantId, 'reserve', cmd.request.idempotency_key),
      run: (view) => reserve(view, cmd),
    });
  }

  decide = (cmd: Parameters<Store['decide']>[0]): Promise<OpResult> =>
    this.coalesce(twinKey('decide', cmd.tenantId, cmd.request.idempotency_key, cmd.hash), () =>
      this.batcher.submit(cmd.tenantId, {
        tenantId: cmd.tenantId,
        scopes: cmd.scopes.affectedScopes,
        lock: false,
        endpoint: 'decide',
        key: cmd.request.idempotency_key,
        run: (view) => decide(view, cmd),
        single: () => this.decideOnce(cmd),
      }),
    );

  private decideOnce = (cmd: Parameters<Store['decide']>[0]): Promise<OpResult> =>
    this.op({
      lock: false,
      first: this.evaluationFirst(cmd.tenantId, cmd.scopes.affectedScopes, false, 'decide', cmd.request.idempotency_key),
      preload: async (tx, view) => this.applyEvaluation(view, tx.first[0], cmd.tenantId, cmd.scopes.affectedScopes, 'decide', cmd.request.idempotency_key),
      run: (view) => decide(view, cmd),
    });

  createEvent = (cmd: Parameters<Store['createEvent']>[0]): Promise<OpResult> =>
    this.coalesce(twinKey('event', cmd.tenantId, cmd.request.idempotency_key, cmd.hash), () =>
      this.batcher.submit(cmd.tenantId, {
        tenantId: cmd.tenantId,
        scopes: cmd.scopes.affectedScopes,
        lock: true,
        endpoint: 'event',
        key: cmd.request.idempotency_key,
        run: (view) => createEvent(view, cmd),
        single: () => this.createEventOnce(cmd),
      }),
    );

  private createEventOnce = (cmd: Parameters<Store['createEvent']>[0]): Promise<OpResult> =>
    this.op({
      lock: true,
      first: this.evaluationFirst(cmd.tenantId, cmd.scopes.affectedScopes, true, 'event', cmd.request.idempotency_key),
      preload: async (tx, view) => this.applyEvaluation(view, tx.first[0], cmd.tenantId, cmd.scopes.affectedScopes, 'event', cmd.request.idempotency_key),
      recheck: (tx, view) => this.refreshEvaluation(tx, view, cmd.tenantId, 'event', cmd.request.idempotency_key),
      run: (view) => createEvent(view, cmd),
    });

  fundBudget = (cmd: FundingCommand & FundingNote): Promise<OpResult> =>
    this.coalesce(cmd.idempotencyKey === undefined ? undefined : twinKey('fund', cmd.tenantId, cmd.idempotencyKey, cmd.hash), () =>
      this.batcher.submit(cmd.tenantId, {
        tenantId: cmd.tenantId,
        scopes: [cmd.scope],
        lock: true,
        endpoint: 'fund',
        key: cmd.idempotencyKey,
        run: (view) => fundWithEvents(view, cmd),
        single: () => this.fundOnce(cmd),
      }),
    );

  private fundOnce = (cmd: FundingCommand & FundingNote): Promise<OpResult> =>
    this.op({
      lock: true,
      first: this.evaluationFirst(cmd.tenantId, [cmd.scope], true, 'fund', cmd.idempotencyKey),
      preload: async (tx, view) => this.applyEvaluation(view, tx.first[0], cmd.tenantId, [cmd.scope], 'fund', cmd.idempotencyKey),
      recheck: (tx, view) => this.refreshEvaluation(tx, view, cmd.tenantId, 'fund', cmd.idempotencyKey),
      run: (view) => fundWithEvents(view, cmd),
    });

  /** commit, release and extend: the reservation is locked first, then its budgets. */
  private settle<C extends { reservationId: string; callerTenant?: string | undefined; hash: string; request: { idempotency_key: string } }>(
    endpoint: 'commit' | 'release' | 'extend',
    cmd: C,
    run: (view: SnapshotView, cmd: C) => OpResult,
  ): Promise<OpResult> {
    return this.coalesce(twinKey(endpoint, cmd.reservationId, cmd.request.idempotency_key, cmd.hash), () =>
      this.batcher.submit(cmd.callerTenant ?? cmd.reservationId, {
        reservationId: cmd.reservationId,
        lock: true,
        endpoint,
        key: cmd.request.idempotency_key,
        run: (view) => run(view, cmd),
        single: () => this.settleOnce(endpoint, cmd, run),
      }),
    );
  }

  private settleOnce<C extends { reservationId: string; hash: string; request: { idempotency_key: string } }>(
    endpoint: 'commit' | 'release' | 'extend',
    cmd: C,
    run: (view: SnapshotView, cmd: C) => OpResult,
  ): Promise<OpResult> {
    return this.op({
      lock: true,
      first: { text: SQL.reservationFirst, values: [cmd.reservationId] },
      preload: async (tx, view) => {
        // The reservation first: while it is locked no close of its tenant can commit, so the
        // evaluation read that follows cannot see a stale tenant.
        const json = tx.first[0]?.reservation as Row | null | undefined;
        const r = json ? reservationFromRow(json) : undefined;
        view.loadReservation(cmd.reservationId, r);
        if (!r) return;
        await this.loadEvaluation(tx, view, r.tenant_id, r.budgeted_scopes, true, endpoint, cmd.request.idempotency_key);
      },
      run: (view) => run(view, cmd),
    });
  }

  commit = (cmd: Parameters<Store['commit']>[0]): Promise<OpResult> => this.settle('commit', cmd, commit);
  release = (cmd: Parameters<Store['release']>[0]): Promise<OpResult> => this.settle('release', cmd, release);
  extend = (cmd: Parameters<Store['extend']>[0]): Promise<OpResult> => this.settle('extend', cmd, extend);

  /**
   * Claims due reservations with FOR UPDATE SKIP LOCKED, so sweepers in several processes take
   * disjoint batches and never wait on a reservation a request is settling right now.
   */
  async expireDue(limit: number): Promise<number> {
    const ctx: OpContext = { actor: { type: 'system' }, traceId: randomBytes(16).toString('hex') };
    return this.op({
      lock: true,
      preload: async (tx, view) => {
        const due = (await tx.prepared(SQL.due, [tx.now, limit])).map(reservationFromRow);
        for (const r of due) view.loadReservation(r.reservation_id, r);
        await this.loadBudgetsOfReservations(tx, view, due);
        return due.map((r) => r.reservation_id);
      },
      run: (view, ids) => ids.filter((id) => expire(view, id, ctx)).length,
    });
  }

  /** Locks the budgets held by several reservations (possibly of several tenants) in one ordered statement. */
  private async loadBudgetsOfReservations(tx: Tx, view: SnapshotView, rs: readonly ReservationRecord[]): Promise<void> {
    const tenants: string[] = [];
    const scopes: string[] = [];
    const byTenant = new Map<string, Set<string>>();
    for (const r of rs) {
      let set = byTenant.get(r.tenant_id);
      if (!set) byTenant.set(r.tenant_id, (set = new Set()));
      for (const s of view.missingScopes(r.tenant_id, r.budgeted_scopes)) {
        if (set.has(s)) continue;
        set.add(s);
        tenants.push(r.tenant_id);
        scopes.push(s);
      }
    }
    if (scopes.length === 0) return;
    const rows = (await tx.prepared(SQL.budgetsOfMany, [tenants, scopes])).map(budgetFromRow);
    for (const [tenantId, set] of byTenant) {
      view.loadBudgets(tenantId, [...set], rows.filter((b) => b.tenant_id === tenantId));
    }
  }

  async purge(reservationRetentionMs: number): Promise<void> {
    await this.transaction(async (tx) => {
      await tx.rows('DELETE FROM idempotency WHERE expires_at < $1', [tx.now]);
      await tx.rows('DELETE FROM reservations WHERE finalized_at_ms IS NOT NULL AND finalized_at_ms < $1', [tx.now - reservationRetentionMs]);
      await tx.rows("DELETE FROM reservations WHERE status = 'EXPIRED' AND expired_at_ms < $1", [tx.now - reservationRetentionMs]);
      await tx.rows('DELETE FROM audit_logs WHERE expires_at < $1', [tx.now]);
    });
  }

  async getReservation(id: string): Promise<ReservationRecord | undefined> {
    const [row] = await this.query(SQL.reservation, [id], true);
    return row ? reservationFromRow(row) : undefined;
  }

  async listReservations(q: ReservationQuery): Promise<Page<ReservationRecord>> {
    return this.page(reservationListSql(q), q.limit, reservationFromRow);
  }

  // ---------------------------------------------------------------- plain reads

  /** A statement outside any transaction; `prepared` ones are planned once per connection. */
  async query(text: string, values: unknown[] = [], prepared = false): Promise<Row[]> {
    await this.ensureReady();
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (e) {
        throw storeError(e);
      }
      let broken: Error | undefined;
      try {
        return (await client.query(prepared ? { name: statementName(text), text, values } : { text, values })).rows as Row[];
      } catch (e) {
        if (isUnavailable(e) || isStalePlan(e)) broken = e as Error;
        if (isStalePlan(e) && attempt < 3) continue;
        throw storeError(e);
      } finally {
        client.release(broken);
      }
    }
  }

  private async page<T>(sql: Sql, limit: number, map: (r: Row) => T): Promise<Page<T>> {
    const rows = await this.query(sql.text, sql.values);
    return { rows: rows.slice(0, limit).map(map), hasMore: rows.length > limit };
  }

  // ---------------------------------------------------------------- tenants

  async createTenant(t: TenantRecord): Promise<{ created: boolean; tenant: TenantRecord }> {
    const row = tenantToRow(t);
    const inserted = await this.query(`${insertSql('tenants', row)} ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id`, Object.values(row));
    const stored = (await this.getTenant(t.tenant_id))!;
    return { created: inserted.length === 1, tenant: stored };
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const [row] = await this.query(SQL.tenant, [id], true);
    return row ? tenantFromRow(row) : undefined;
  }

  async listTenants(q: TenantQuery): Promise<Page<TenantRecord>> {
    return this.page(tenantListSql(q), q.limit, tenantFromRow);
  }

  async updateTenant(id: string, patch: Partial<TenantRecord>): Promise<TenantRecord | undefined> {
    return this.transaction(async (tx) => {
      const [row] = await tx.rows(`${SQL.tenant} FOR UPDATE`, [id]);
      if (!row) return undefined;
      const next = { ...tenantFromRow(row), ...patch, tenant_id: id };
      await tx.rows(...updateSql('tenants', tenantToRow(next), ['tenant_id']));
      return next;
    }).then((t) => (t ? this.getTenant(id) : undefined));
  }

  /** The close cascade lives in governance.ts (closing is updateTenant with status CLOSED). */
  closeTenant = (id: string, _now: number, ctx?: OpContext): Promise<TenantRecord> =>
    this.governance.changeTenant(id, { status: 'CLOSED' }, ctx ?? { actor: { type: 'system' } });

  // ---------------------------------------------------------------- API keys

  async createApiKey(k: ApiKeyRecord): Promise<void> {
    const row = apiKeyToRow(k);
    await this.query(insertSql('api_keys', row), Object.values(row));
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    await this.settled();
    const [row] = await this.query('SELECT * FROM api_keys WHERE key_id = $1', [id]);
    return row ? apiKeyFromRow(row) : undefined;
  }

  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const [row] = await this.query('SELECT * FROM api_keys WHERE key_hash = $1', [hash], true);
    return row ? apiKeyFromRow(row) : undefined;
  }

  async listApiKeys(q: ApiKeyQuery): Promise<Page<ApiKeyRecord>> {
    return this.page(apiKeyListSql(q), q.limit, apiKeyFromRow);
  }

  async updateApiKey(id: string, patch: Partial<ApiKeyRecord>): Promise<ApiKeyRecord | undefined> {
    return this.transaction(async (tx) => {
      const [row] = await tx.rows('SELECT * FROM api_keys WHERE key_id = $1 FOR UPDATE', [id]);
      if (!row) return undefined;
      const next = { ...apiKeyFromRow(row), ...patch, key_id: id };
      await tx.rows(...updateSql('api_keys', apiKeyToRow(next), ['key_id']));
      return next;
    }).then((k) => (k ? this.getApiKey(id) : undefined));
  }

  // ---------------------------------------------------------------- budgets

  async createBudget(b: BudgetRecord): Promise<void> {
    const row = budgetToRow(b);
    const inserted = await this.query(`${insertSql('budgets', row)} ON CONFLICT (scope, unit) DO NOTHING RETURNING scope`, Object.values(row));
    if (inserted.length === 0) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${b.scope} in unit ${b.unit}`, { scope: b.scope, unit: b.unit });
    }
  }

  async getBudget(scope: string, unit: Unit): Promise<BudgetRecord | undefined> {
    const [row] = await this.query('SELECT * FROM budgets WHERE scope = $1 AND unit = $2', [scope, unit]);
    return row ? budgetFromRow(row) : undefined;
  }

  async listBudgets(q: BudgetQuery): Promise<Page<BudgetRecord>> {
    return this.page(budgetListSql(q), q.limit, budgetFromRow);
  }

  async updateBudget(scope: string, unit: Unit, patch: BudgetPatch): Promise<BudgetRecord | undefined> {
    const updated = await this.transaction(async (tx) => {
      const [row] = await tx.rows('SELECT * FROM budgets WHERE scope = $1 AND unit = $2 FOR UPDATE', [scope, unit]);
      if (!row) return false;
      const b = budgetFromRow(row);
      const next: BudgetRecord = { ...b, updated_at: tx.now };
      if (patch.overdraft_limit !== undefined) next.overdraft_limit = patch.overdraft_limit;
      if (patch.commit_overage_policy !== undefined) next.commit_overage_policy = patch.commit_overage_policy;
      if (patch.metadata !== undefined) next.metadata = patch.metadata;
      if (patch.status !== undefined) next.status = patch.status;
      // Lowering the limit below current debt puts the scope over limit; raising it clears that.
      if (patch.overdraft_limit !== undefined) next.is_over_limit = next.debt > next.overdraft_limit;
      await tx.rows(...updateSql('budgets', budgetToRow(next), ['scope', 'unit']));
      return true;
    });
    return updated ? this.getBudget(scope, unit) : undefined;
  }

  // ---------------------------------------------------------------- events

  async listEvents(q: EventQuery): Promise<Page<EventRecord>> {
    return this.page(eventListSql(q), q.limit, eventFromRow);
  }

  async getEvent(eventId: string): Promise<EventRecord | undefined> {
    const [row] = await this.query('SELECT * FROM events WHERE event_id = $1', [eventId]);
    return row ? eventFromRow(row) : undefined;
  }

  // ---------------------------------------------------------------- webhooks

  private readonly webhooks = new PostgresWebhooks(this);
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

  // ---------------------------------------------------------------- governance plane (governance.ts)

  private readonly governance = new PostgresGovernance(this);
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

  // ---------------------------------------------------------------- meta

  async getMeta(key: string): Promise<string | undefined> {
    const [row] = await this.query('SELECT value FROM meta WHERE key = $1', [key]);
    return row?.value as string | undefined;
  }

  async putMeta(key: string, value: string): Promise<void> {
    await this.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value', [key, value]);
  }

  async putMetaIfAbsent(key: string, value: string): Promise<string> {
    await this.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    return (await this.getMeta(key))!;
  }
}

/** INSERT of every column of `row`, values in Object.values(row) order. */
function insertSql(table: string, row: Row): string {
  const cols = Object.keys(row);
  return `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`;
}

/** UPDATE of every column of `row` except the key columns, which select the row. */
function updateSql(table: string, row: Row, key: readonly string[]): [string, unknown[]] {
  const values: unknown[] = [];
  const p = (v: unknown) => {
    values.push(v);
    return `$${values.length}`;
  };
  const sets = Object.keys(row)
    .filter((c) => !key.includes(c))
    .map((c) => `${c} = ${p(row[c])}`);
  const where = key.map((c) => `${c} = ${p(row[c])}`);
  return [`UPDATE ${table} SET ${sets.join(', ')} WHERE ${where.join(' AND ')}`, values];
}
