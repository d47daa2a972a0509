/**
 * Redis 7 backend (single server or Cluster). Every ledger mutation is one Lua script over the
 * keys of one tenant (one hash tag, one slot): it checks every scope first and then applies, and
 * writes the idempotency record and the outbox fact in the same step. Several server processes
 * can share one Redis: all correctness comes from the scripts. See docs/backends.md.
 */
import { randomHex } from '../../ids.js';
import type { EventRecord, OpContext } from '../../events/model.js';
import type { Unit } from '../../ledger/amounts.js';
import { CyclesError } from '../../ledger/errors.js';
import type { DecideCommand } from '../../ledger/ops/decide.js';
import { newEventId, type EventCommand } from '../../ledger/ops/event.js';
import type { ReserveCommand } from '../../ledger/ops/reserve.js';
import type { CommitRequest, ExtendRequest, ReleaseRequest, ReservationCommand } from '../../ledger/ops/settle.js';
import type { OpResult } from '../../ledger/ops/shared.js';
import type { BudgetRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type {
  ApiKeyQuery,
  ApiKeyRecord,
  BudgetPatch,
  BudgetQuery,
  EventQuery,
  FundingCommand,
  FundingNote,
  OverviewSnapshot,
  Page,
  ReservationQuery,
  Store,
  TenantQuery,
} from '../types.js';
import { RedisConn, type RedisTarget, type Reply } from './conn.js';
import { scriptError, type ErrorContext } from './errors.js';
import { Keyspace, parseEventId, reservationIdFor, tenantOfReservation, tenantOfScope, UNITS_IN_KEYS, WH_OWNER } from './keys.js';
import { buildOverview, RedisGovernance } from './governance.js';
import { getEvent, listBudgets, listEvents, listReservations, walkIds } from './list.js';
import { eventsOf, type StreamEntry } from './outbox.js';
import { apiKeyFields, apiKeyFromHash, budgetFields, budgetFromHash, patchOps, reservationFromHash, tenantFields, tenantFromHash, toHash } from './records.js';
import { ALL_SCRIPTS, SCRIPTS } from './scripts.js';
import { Sweeper } from './sweep.js';
import type { OutboxEntry } from './tx.js';
import { RedisWebhooks } from './webhooks.js';

export interface RedisStoreOptions extends RedisTarget {
  /** Prefix of every key (default "cycles:"); lets several deployments or test runs share a Redis. */
  prefix?: string | undefined;
  /** Told, after each mutation, which events it wrote (never for refused or replayed work). */
  onEventsCommitted?: ((events: readonly EventRecord[]) => void) | undefined;
}

/** What a reservation's commit/release/extend script needs to name its budget keys (immutable once taken). */
interface HeldKeys {
  unit: string;
  scopesJson: string;
}

const HELD_CACHE_MAX = 50_000;
const UNITS_CSV = UNITS_IN_KEYS.join(',');
const API_KEY_CACHE_MAX = 10_000;

/** A bounded map that forgets its oldest entries. */
class Bounded<V> extends Map<string, V> {
  constructor(private readonly max: number) {
    super();
  }
  override set(k: string, v: V): this {
    if (this.size >= this.max && !this.has(k)) this.delete(this.keys().next().value as string);
    return super.set(k, v);
  }
}

export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  readonly keys: Keyspace;
  private connecting: Promise<RedisConn> | undefined;
  private closed = false;
  private readonly held = new Bounded<HeldKeys>(HELD_CACHE_MAX);
  /** key hash -> [tenant, key id]: written once when a key is created, never changed. */
  private readonly keyOwners = new Bounded<[string, string]>(API_KEY_CACHE_MAX);
  private readonly sweeper: Sweeper;
  readonly governance: RedisGovernance;
  readonly webhooks: RedisWebhooks;

  constructor(private readonly options: RedisStoreOptions) {
    this.keys = new Keyspace(options.prefix ?? 'cycles:');
    const conn = () => this.conn();
    const committed = (entries: OutboxEntry[]) => this.committed(entries);
    this.webhooks = new RedisWebhooks(conn, this.keys, () => this.streamOwners(), committed);
    this.sweeper = new Sweeper(conn, this.keys, committed);
    this.governance = new RedisGovernance(conn, this.keys, committed, this.webhooks.forTenants);
  }

  /** Connects on first use; a failed attempt is retried by the next call. */
  conn(): Promise<RedisConn> {
    if (this.closed) return Promise.reject(new CyclesError('SERVICE_UNAVAILABLE', 'The store is closed'));
    this.connecting ??= RedisConn.open(this.options).then(
      async (c) => {
        await c.preload(ALL_SCRIPTS);
        return c;
      },
      (e: unknown) => {
        this.connecting = undefined;
        throw e;
      },
    );
    return this.connecting;
  }

  async ping(): Promise<void> {
    await (await this.conn()).ping();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Registry touches still waiting for the end of the event-loop turn go out first.
    await this.sweeper.flush();
    this.closed = true;
    const c = await this.connecting?.catch(() => undefined);
    await c?.close();
  }

  /** A script's outbox entry id ('' when it wrote none). */
  private async wrote(owner: string, entry: Reply | undefined): Promise<void> {
    if (typeof entry === 'string' && entry !== '') await this.committed([{ owner, id: entry }]);
  }

  /**
   * After a mutation wrote outbox entries: mark their owners for the webhook fan-out, and report
   * the events to the metrics (read back from the entries: the same bytes every reader gets).
   */
  private async committed(entries: OutboxEntry[]): Promise<void> {
    for (const owner of new Set(entries.map((e) => e.owner))) await this.webhooks.markDirty(owner);
    const hook = this.options.onEventsCommitted;
    if (!hook) return;
    try {
      const conn = await this.conn();
      const records: EventRecord[] = [];
      for (const { owner, id } of entries) {
        const key = this.keys.outboxOf(owner);
        const found = (await conn.call<StreamEntry[]>(key, ['XRANGE', key, id, id], true)) ?? [];
        if (found[0]) records.push(...eventsOf(owner, found[0]));
      }
      if (records.length) hook(records);
    } catch {
      // An observer (metrics) must never fail a committed mutation.
    }
  }

  private fail(reply: Reply[], ctx: ErrorContext): never {
    throw scriptError(reply.slice(1).map(String), ctx);
  }

  // ---------------------------------------------------------------- runtime ledger

  private async evaluate(mode: 'live' | 'dry' | 'decide', cmd: ReserveCommand | DecideCommand): Promise<{ reply: Reply[]; rid: string }> {
    const { tenantId: t, request: req, scopes, hash } = cmd;
    const k = this.keys;
    const rid = reservationIdFor(t, randomHex(16));
    const r = req as ReserveCommand['request'];
    const unit = req.estimate.unit;
    const affected = scopes.affectedScopes;
    const keys = [
      k.tenant(t),
      k.idempotency(t, mode === 'decide' ? 'decide' : 'reserve', req.idempotency_key),
      k.reservation(t, rid),
      k.due(t),
      ...k.reservationIndexes(t),
      k.outbox(t),
      k.policyRules(t),
    ];
    const fixed = keys.length;
    // First only the requested unit's budget keys: the script needs the other units' keys only
    // to tell a missing budget from a unit mismatch, and answers WIDEN (having written nothing)
    // when it finds no budget in the requested unit.
    for (const s of affected) keys.push(k.budget(t, s, unit));
    const args: Array<string | number> = [
      mode,
      t,
      req.idempotency_key,
      hash,
      unit,
      req.estimate.amount,
      affected.length,
      rid,
      r.ttl_ms ?? '',
      r.grace_period_ms ?? '',
      r.overage_policy ?? '',
      JSON.stringify(req.subject),
      JSON.stringify(req.action),
      req.metadata === undefined ? '' : JSON.stringify(req.metadata),
      JSON.stringify(scopes.scopePath),
      JSON.stringify(affected),
      JSON.stringify(cmd.ctx),
      unit,
      ...affected,
      '1',
    ];
    const conn = await this.conn();
    let reply = await conn.run<Reply[]>(SCRIPTS.evaluate, keys, args);
    if (reply[0] === 'WIDEN') {
      keys.length = fixed;
      keys.push(...k.budgetGrid(t, affected));
      args[17] = UNITS_CSV;
      args[args.length - 1] = '';
      reply = await conn.run<Reply[]>(SCRIPTS.evaluate, keys, args);
    }
    if (reply[0] === 'ERR') {
      this.fail(reply, { tenantId: t, scopePath: scopes.scopePath, unit, subjectHasTenant: req.subject.tenant !== undefined });
    }
    return { reply, rid };
  }

  async reserve(cmd: ReserveCommand): Promise<OpResult> {
    const dry = cmd.request.dry_run === true;
    const { reply, rid } = await this.evaluate(dry ? 'dry' : 'live', cmd);
    if (reply[0] === 'REPLAY') return this.reserveReplay(cmd.tenantId, reply);
    const body = reply[2] as string;
    if (reply[4] !== '') await this.wrote(cmd.tenantId, reply[4]);
    if (!dry && typeof reply[5] === 'string') {
      // The script hands back the budgeted scopes it stored, so a later commit/release/extend of
      // this reservation from this process names its budget keys without reading them first.
      this.held.set(rid, { unit: cmd.request.estimate.unit, scopesJson: reply[5] });
      // The expiry registry lives outside the tenant's slot, so it is told after the script.
      this.sweeper.touch(cmd.tenantId, Number(reply[3]));
    }
    return { status: Number(reply[1]), body, replayed: false };
  }

  /** A reserve replay recomputes remaining_ttl_ms (0 once the reservation is no longer ACTIVE). */
  private async reserveReplay(tenant: string, reply: Reply[]): Promise<OpResult> {
    const body = String(reply[2]);
    const now = Number(reply[4]);
    const parsed = JSON.parse(body) as Record<string, unknown>;
    if (!('remaining_ttl_ms' in parsed)) return { status: Number(reply[1]), body, replayed: true };
    const id = parsed['reservation_id'] as string | undefined;
    let active = true;
    if (id) {
      const key = this.keys.reservation(tenant, id);
      active = (await (await this.conn()).call(key, ['HGET', key, 'status'], true)) === 'ACTIVE';
    }
    parsed['remaining_ttl_ms'] = active ? Math.max(0, (parsed['expires_at_ms'] as number) - now) : 0;
    return { status: Number(reply[1]), body: JSON.stringify(parsed), replayed: true };
  }

  async decide(cmd: DecideCommand): Promise<OpResult> {
    const { reply } = await this.evaluate('decide', cmd);
    if (reply[0] === 'OK') await this.wrote(cmd.tenantId, reply[4]);
    return { status: Number(reply[1]), body: String(reply[2]), replayed: reply[0] === 'REPLAY' };
  }

  private async heldKeys(owner: string, id: string): Promise<HeldKeys | undefined> {
    const cached = this.held.get(id);
    if (cached) return cached;
    const key = this.keys.reservation(owner, id);
    const v = await (await this.conn()).call<Array<string | null>>(key, ['HMGET', key, 'unit', 'budgeted_scopes'], true);
    if (!v[0] || !v[1]) return undefined;
    return { unit: v[0], scopesJson: v[1] };
  }

  private async settle(op: 'commit' | 'release' | 'extend', cmd: ReservationCommand<{ idempotency_key: string }>, extra: Array<string | number>): Promise<OpResult> {
    const id = cmd.reservationId;
    const owner = tenantOfReservation(id);
    const errCtx: ErrorContext = { tenantId: owner, reservationId: id };
    const notFound = () => scriptError(['RSV_NOT_FOUND'], errCtx);
    if (!owner) throw notFound();
    let held = await this.heldKeys(owner, id);
    if (!held) throw notFound();
    const k = this.keys;
    const conn = await this.conn();
    for (let attempt = 0; attempt < 3; attempt++) {
      const scopes = JSON.parse(held.scopesJson) as string[];
      const unit = held.unit;
      const keys = [
        k.tenant(owner),
        k.reservation(owner, id),
        k.idempotency(owner, op, cmd.request.idempotency_key),
        k.due(owner),
        k.reservationIndex(owner, 'status'),
        k.finalized(owner),
        k.reservationIndex(owner, 'expires'),
        k.outbox(owner),
        ...scopes.map((s) => k.budget(owner, s, unit)),
      ];
      const args: Array<string | number> = [op, id, cmd.callerTenant ?? '', cmd.request.idempotency_key, cmd.hash, held.scopesJson, JSON.stringify(cmd.ctx), ...extra];
      const reply: Reply[] = await conn.run<Reply[]>(SCRIPTS.settle, keys, args);
      switch (reply[0]) {
        case 'KEYS':
          held = { unit: String(reply[1]), scopesJson: String(reply[2]) };
          continue;
        case 'ERR':
          this.fail(reply, errCtx);
          break;
        case 'REPLAY': {
          const body = String(reply[2]);
          if (op !== 'extend') return { status: Number(reply[1]), body, replayed: true };
          const parsed = JSON.parse(body) as Record<string, unknown>;
          if (!('remaining_ttl_ms' in parsed)) return { status: Number(reply[1]), body, replayed: true };
          parsed['remaining_ttl_ms'] = reply[3] === 'ACTIVE' ? Math.max(0, (parsed['expires_at_ms'] as number) - Number(reply[4])) : 0;
          return { status: Number(reply[1]), body: JSON.stringify(parsed), replayed: true };
        }
        default:
          if (op !== 'extend') this.held.delete(id);
          await this.wrote(owner, reply[4]);
          return { status: Number(reply[1]), body: String(reply[2]), replayed: false };
      }
    }
    throw new CyclesError('INTERNAL_ERROR', `Reservation ${id} changed shape while being settled`);
  }

  commit(cmd: ReservationCommand<CommitRequest>): Promise<OpResult> {
    const r = cmd.request;
    return this.settle('commit', cmd, [
      r.actual.unit,
      r.actual.amount,
      r.metrics === undefined ? '' : JSON.stringify(r.metrics),
      r.metadata === undefined ? '' : JSON.stringify(r.metadata),
    ]);
  }

  release(cmd: ReservationCommand<ReleaseRequest>): Promise<OpResult> {
    return this.settle('release', cmd, []);
  }

  extend(cmd: ReservationCommand<ExtendRequest>): Promise<OpResult> {
    return this.settle('extend', cmd, [cmd.request.extend_by_ms]);
  }

  async createEvent(cmd: EventCommand): Promise<OpResult> {
    const { tenantId: t, request: req, scopes, hash } = cmd;
    const k = this.keys;
    const keys = [k.tenant(t), k.idempotency(t, 'event', req.idempotency_key), k.outbox(t), ...k.budgetGrid(t, scopes.affectedScopes)];
    const args = [
      req.idempotency_key,
      hash,
      req.actual.unit,
      req.actual.amount,
      req.overage_policy ?? '',
      newEventId(),
      JSON.stringify(cmd.ctx),
      scopes.affectedScopes.length,
      '',
      UNITS_CSV,
      ...scopes.affectedScopes,
    ];
    const reply = await (await this.conn()).run<Reply[]>(SCRIPTS.directDebit, keys, args);
    if (reply[0] === 'ERR') {
      this.fail(reply, { tenantId: t, scopePath: scopes.scopePath, unit: req.actual.unit, subjectHasTenant: req.subject.tenant !== undefined });
    }
    if (reply[0] === 'OK') await this.wrote(t, reply[3]);
    return { status: Number(reply[1]), body: String(reply[2]), replayed: reply[0] === 'REPLAY' };
  }

  fundBudget(cmd: FundingCommand & FundingNote): Promise<OpResult> {
    return this.governance.fund(cmd);
  }

  expireDue(limit: number): Promise<number> {
    return this.sweeper.expireDue(limit, () => this.allTenants());
  }

  async purge(reservationRetentionMs: number): Promise<void> {
    await this.sweeper.purge(reservationRetentionMs, () => this.allTenants());
    const [s] = await (await this.conn()).call<string[]>(undefined, ['TIME'], true);
    await this.governance.purgeAudit(Number(s) * 1000);
  }

  async getReservation(id: string): Promise<ReservationRecord | undefined> {
    const owner = tenantOfReservation(id);
    if (!owner) return undefined;
    const h = toHash(await this.hgetall(this.keys.reservation(owner, id)));
    return h ? reservationFromHash(h) : undefined;
  }

  async listReservations(query: ReservationQuery): Promise<Page<ReservationRecord>> {
    return listReservations(await this.conn(), this.keys, query);
  }

  /** Point-in-time gauges (ACTIVE reservations, over-limit and indebted scopes), walking every tenant. */
  async gauges(): Promise<{ activeReservations: number; overLimitScopes: number; scopesInDebt: number }> {
    const conn = await this.conn();
    let activeReservations = 0;
    let overLimitScopes = 0;
    let scopesInDebt = 0;
    const tenants = await this.allTenants();
    for (let i = 0; i < tenants.length; i += 50) {
      const slice = tenants.slice(i, i + 50);
      const counts = await Promise.all(slice.map((t) => conn.call<number>(this.keys.due(t), ['ZCARD', this.keys.due(t)], true)));
      activeReservations += counts.reduce((a, b) => a + Number(b), 0);
    }
    for await (const batch of walkIds(conn, this.keys.allBudgets(), undefined)) {
      const names = await conn.call<Array<string | null>>(this.keys.allLedgers(), ['HMGET', this.keys.allLedgers(), ...batch], true);
      const rows = await Promise.all(
        names.map((name) => {
          if (!name) return null;
          const bar = name.indexOf('|');
          const scope = name.slice(bar + 1);
          const key = this.keys.budget(tenantOfScope(scope), scope, name.slice(0, bar));
          return conn.call<Array<string | null>>(key, ['HMGET', key, 'is_over_limit', 'debt'], true);
        }),
      );
      for (const r of rows) {
        if (!r) continue;
        if (r[0] === '1') overLimitScopes++;
        if (Number(r[1] ?? 0) > 0) scopesInDebt++;
      }
    }
    return { activeReservations, overLimitScopes, scopesInDebt };
  }

  // ---------------------------------------------------------------- helpers

  private async hgetall(key: string): Promise<Reply> {
    return (await this.conn()).call(key, ['HGETALL', key], true);
  }

  /** Every tenant id, from the global tenant index (admin and background paths only). */
  private async allTenants(): Promise<string[]> {
    const conn = await this.conn();
    const out: string[] = [];
    for await (const batch of walkIds(conn, this.keys.tenants(), undefined)) out.push(...batch);
    return out;
  }

  // ---------------------------------------------------------------- tenants

  async createTenant(record: TenantRecord): Promise<{ created: boolean; tenant: TenantRecord }> {
    const conn = await this.conn();
    const index = this.keys.tenants();
    // Global index first: a listed id without a record is skipped; a record is never unlisted.
    await conn.call(index, ['ZADD', index, '0', record.tenant_id]);
    await conn.call(this.keys.streams(), ['ZADD', this.keys.streams(), '0', record.tenant_id]);
    const key = this.keys.tenant(record.tenant_id);
    const created = await conn.run(SCRIPTS.createIfAbsent, [key], tenantFields(record));
    return { created: created === 1, tenant: (await this.getTenant(record.tenant_id))! };
  }

  async getTenant(tenantId: string): Promise<TenantRecord | undefined> {
    const h = toHash(await this.hgetall(this.keys.tenant(tenantId)));
    return h ? tenantFromHash(h) : undefined;
  }

  async listTenants(q: TenantQuery): Promise<Page<TenantRecord>> {
    const conn = await this.conn();
    const rows: TenantRecord[] = [];
    for await (const batch of walkIds(conn, this.keys.tenants(), q.afterId)) {
      const records = await Promise.all(batch.map((id) => this.getTenant(id)));
      for (const t of records) {
        if (!t) continue;
        if (q.status && t.status !== q.status) continue;
        if (q.parentTenantId && t.parent_tenant_id !== q.parentTenantId) continue;
        rows.push(t);
        if (rows.length > q.limit) break;
      }
      if (rows.length > q.limit) break;
    }
    return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
  }

  async updateTenant(tenantId: string, patch: Partial<TenantRecord>): Promise<TenantRecord | undefined> {
    const { set, del } = patchOps(patch as Record<string, unknown>, ['tenant_id']);
    const ok = await (await this.conn()).run(SCRIPTS.patchIfPresent, [this.keys.tenant(tenantId)], [set.length / 2, ...set, ...del]);
    return ok === 1 ? this.getTenant(tenantId) : undefined;
  }

  /** Closing is updateTenant with status CLOSED (the cascade runs in the same transaction). */
  closeTenant(tenantId: string, _now: number, ctx?: OpContext): Promise<TenantRecord> {
    return this.governance.changeTenant(tenantId, { status: 'CLOSED' }, ctx ?? { actor: { type: 'system' } });
  }

  // ---------------------------------------------------------------- API keys

  async createApiKey(record: ApiKeyRecord): Promise<void> {
    const conn = await this.conn();
    const k = this.keys;
    const t = record.tenant_id;
    // Lookup indexes first (immutable, harmless if the record never lands), then the record.
    await Promise.all([
      conn.call(k.apiKeyOwner(record.key_id), ['SET', k.apiKeyOwner(record.key_id), t]),
      conn.call(k.apiKeyByHash(record.key_hash), ['SET', k.apiKeyByHash(record.key_hash), `${t} ${record.key_id}`]),
      conn.call(k.allApiKeys(), ['ZADD', k.allApiKeys(), '0', record.key_id]),
    ]);
    const created = await conn.run(SCRIPTS.createApiKey, [k.apiKey(t, record.key_id), k.tenantApiKeys(t)], [record.key_id, ...apiKeyFields(record)]);
    if (created !== 1) throw new CyclesError('DUPLICATE_RESOURCE', `API key ${record.key_id} already exists`);
  }

  private async apiKeyAt(tenant: string, keyId: string): Promise<ApiKeyRecord | undefined> {
    const h = toHash(await this.hgetall(this.keys.apiKey(tenant, keyId)));
    return h ? apiKeyFromHash(h) : undefined;
  }

  private async ownerOfKey(keyId: string): Promise<string | undefined> {
    const key = this.keys.apiKeyOwner(keyId);
    const v = await (await this.conn()).call(key, ['GET', key], true);
    return typeof v === 'string' ? v : undefined;
  }

  async getApiKey(keyId: string): Promise<ApiKeyRecord | undefined> {
    const owner = await this.ownerOfKey(keyId);
    return owner ? this.apiKeyAt(owner, keyId) : undefined;
  }

  async findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | undefined> {
    let owner = this.keyOwners.get(keyHash);
    if (!owner) {
      const key = this.keys.apiKeyByHash(keyHash);
      const v = await (await this.conn()).call(key, ['GET', key], true);
      if (typeof v !== 'string') return undefined;
      const space = v.indexOf(' ');
      owner = [v.slice(0, space), v.slice(space + 1)];
      this.keyOwners.set(keyHash, owner);
    }
    const record = await this.apiKeyAt(owner[0], owner[1]);
    return record && record.key_hash === keyHash ? record : undefined;
  }

  async listApiKeys(q: ApiKeyQuery): Promise<Page<ApiKeyRecord>> {
    const conn = await this.conn();
    const index = q.tenantId ? this.keys.tenantApiKeys(q.tenantId) : this.keys.allApiKeys();
    const rows: ApiKeyRecord[] = [];
    for await (const batch of walkIds(conn, index, q.afterId)) {
      const records = await Promise.all(batch.map((id) => (q.tenantId ? this.apiKeyAt(q.tenantId, id) : this.getApiKey(id))));
      for (const r of records) {
        if (!r) continue;
        if (q.status && r.status !== q.status) continue;
        rows.push(r);
        if (rows.length > q.limit) break;
      }
      if (rows.length > q.limit) break;
    }
    return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
  }

  async updateApiKey(keyId: string, patch: Partial<ApiKeyRecord>): Promise<ApiKeyRecord | undefined> {
    const owner = await this.ownerOfKey(keyId);
    if (!owner) return undefined;
    const { set, del } = patchOps(patch as Record<string, unknown>, ['key_id', 'tenant_id', 'key_hash']);
    const ok = await (await this.conn()).run(SCRIPTS.patchIfPresent, [this.keys.apiKey(owner, keyId)], [set.length / 2, ...set, ...del]);
    return ok === 1 ? this.apiKeyAt(owner, keyId) : undefined;
  }

  // ---------------------------------------------------------------- budgets

  async createBudget(b: BudgetRecord): Promise<void> {
    const conn = await this.conn();
    const k = this.keys;
    const t = b.tenant_id;
    const name = `${b.unit}|${b.scope}`;
    await Promise.all([conn.call(k.allLedgers(), ['HSET', k.allLedgers(), b.ledger_id, name]), conn.call(k.allBudgets(), ['ZADD', k.allBudgets(), '0', b.ledger_id])]);
    const created = await conn.run(SCRIPTS.createBudget, [k.budget(t, b.scope, b.unit), k.tenantBudgets(t), k.tenantLedgers(t)], [b.ledger_id, name, ...budgetFields(b)]);
    if (created !== 1) {
      await Promise.all([conn.call(k.allLedgers(), ['HDEL', k.allLedgers(), b.ledger_id]), conn.call(k.allBudgets(), ['ZREM', k.allBudgets(), b.ledger_id])]);
      throw new CyclesError('DUPLICATE_RESOURCE', `Budget already exists for scope ${b.scope} in unit ${b.unit}`, { scope: b.scope, unit: b.unit });
    }
  }

  async getBudget(scope: string, unit: Unit): Promise<BudgetRecord | undefined> {
    const h = toHash(await this.hgetall(this.keys.budget(tenantOfScope(scope), scope, unit)));
    return h ? budgetFromHash(h) : undefined;
  }

  async listBudgets(query: BudgetQuery): Promise<Page<BudgetRecord>> {
    return listBudgets(await this.conn(), this.keys, query);
  }

  async updateBudget(scope: string, unit: Unit, patch: BudgetPatch): Promise<BudgetRecord | undefined> {
    const key = this.keys.budget(tenantOfScope(scope), scope, unit);
    const args = [
      patch.overdraft_limit ?? '',
      patch.commit_overage_policy ?? '',
      patch.metadata === undefined ? '' : JSON.stringify(patch.metadata),
      patch.status ?? '',
    ];
    const ok = await (await this.conn()).run(SCRIPTS.updateBudget, [key], args);
    return ok === 1 ? this.getBudget(scope, unit) : undefined;
  }

  // ---------------------------------------------------------------- events

  async listEvents(query: EventQuery): Promise<Page<EventRecord>> {
    const owners = query.tenantId ? [query.tenantId, WH_OWNER] : [...(await this.streamOwners()), WH_OWNER];
    return listEvents(await this.conn(), this.keys, query, owners);
  }

  /** Every owner of an outbox stream: tenants and the sentinel tenants events were appended for. */
  async streamOwners(): Promise<string[]> {
    const conn = await this.conn();
    const out: string[] = [];
    for await (const batch of walkIds(conn, this.keys.streams(), undefined)) out.push(...batch);
    return out;
  }

  // ---------------------------------------------------------------- governance plane (governance.ts)

  queryTenants: Store['queryTenants'] = (q) => this.governance.queryTenants(q);
  openTenant: Store['openTenant'] = (t, c) => this.governance.openTenant(t, c);
  changeTenant: Store['changeTenant'] = (id, ch, c) => this.governance.changeTenant(id, ch, c);
  queryApiKeys: Store['queryApiKeys'] = (q) => this.governance.queryApiKeys(q);
  issueApiKey: Store['issueApiKey'] = (k, c) => this.governance.issueApiKey(k, c);
  changeApiKey: Store['changeApiKey'] = (id, ch, c) => this.governance.changeApiKey(id, ch, c);
  revokeApiKey: Store['revokeApiKey'] = (id, r, c) => this.governance.revokeApiKey(id, r, c);
  touchApiKey: Store['touchApiKey'] = (id, now) => this.governance.touchApiKey(id, now);
  openBudget: Store['openBudget'] = (b, c) => this.governance.openBudget(b, c);
  queryLedgers: Store['queryLedgers'] = (q) => this.governance.queryLedgers(q);
  changeBudget: Store['changeBudget'] = (sc, u, ch, c) => this.governance.changeBudget(sc, u, ch, c);
  createPolicy: Store['createPolicy'] = (p, c) => this.governance.createPolicy(p, c);
  getPolicy: Store['getPolicy'] = (id) => this.governance.getPolicy(id);
  queryPolicies: Store['queryPolicies'] = (q) => this.governance.queryPolicies(q);
  changePolicy: Store['changePolicy'] = (id, ch, c) => this.governance.changePolicy(id, ch, c);
  bulkTenants: Store['bulkTenants'] = (cmd) => this.governance.bulkTenants(cmd);
  bulkBudgets: Store['bulkBudgets'] = (cmd) => this.governance.bulkBudgets(cmd);
  appendAudit: Store['appendAudit'] = (e) => this.governance.appendAudit(e);
  queryAudit: Store['queryAudit'] = (q) => this.governance.queryAudit(q);
  appendEvents: Store['appendEvents'] = (d, c) => this.governance.appendEvents(d, c);

  async overview(now: number, windowMs: number): Promise<OverviewSnapshot> {
    const conn = await this.conn();
    const [tenants, budgets, webhooks] = await Promise.all([this.governance.allTenantRecords(), this.governance.budgetRecords(undefined), this.webhooks.allWebhooks()]);
    const events: EventRecord[] = [];
    for (const owner of [...(await this.streamOwners()), WH_OWNER]) {
      const key = this.keys.outboxOf(owner);
      let start = String(Math.max(0, now - windowMs - 2_000));
      for (;;) {
        const entries = (await conn.call<StreamEntry[]>(key, ['XRANGE', key, start, '+', 'COUNT', '500'], true)) ?? [];
        for (const entry of entries) for (const e of eventsOf(owner, entry)) if (e.timestamp >= now - windowMs) events.push(e);
        if (entries.length < 500) break;
        start = '(' + entries[entries.length - 1]![0];
      }
    }
    return buildOverview({ tenants, budgets, webhooks }, events, 10);
  }

  // ---------------------------------------------------------------- webhooks (webhooks.ts)

  createWebhook: Store['createWebhook'] = (w, e, c) => this.webhooks.createWebhook(w, e, c);
  getWebhook: Store['getWebhook'] = (id) => this.webhooks.getWebhook(id);
  listWebhooks: Store['listWebhooks'] = (q) => this.webhooks.listWebhooks(q);
  updateWebhook: Store['updateWebhook'] = (w, e, c) => this.webhooks.updateWebhook(w, e, c);
  deleteWebhook: Store['deleteWebhook'] = (id, e, c) => this.webhooks.deleteWebhook(id, e, c);
  listDeliveries: Store['listDeliveries'] = (q) => this.webhooks.listDeliveries(q);
  fanOutEvents: Store['fanOutEvents'] = (limit) => this.webhooks.fanOutEvents(limit);
  claimDeliveries: Store['claimDeliveries'] = (o, l, ms) => this.webhooks.claimDeliveries(o, l, ms);
  completeDelivery: Store['completeDelivery'] = (o) => this.webhooks.completeDelivery(o);
  enqueueReplay: Store['enqueueReplay'] = (id, ids, r) => this.webhooks.enqueueReplay(id, ids, r);
  purgeEvents: Store['purgeEvents'] = (e, d) => this.webhooks.purgeEvents(e, d);

  async getEvent(eventId: string): Promise<EventRecord | undefined> {
    const id = parseEventId(eventId);
    if (!id) return undefined;
    return getEvent(await this.conn(), this.keys, id.tenant, id.entryId, id.index);
  }

  // ---------------------------------------------------------------- meta

  async getMeta(key: string): Promise<string | undefined> {
    const meta = this.keys.meta();
    const v = await (await this.conn()).call(meta, ['HGET', meta, key], true);
    return typeof v === 'string' ? v : undefined;
  }

  async putMeta(key: string, value: string): Promise<void> {
    const meta = this.keys.meta();
    await (await this.conn()).call(meta, ['HSET', meta, key, value]);
  }

  async putMetaIfAbsent(key: string, value: string): Promise<string> {
    const meta = this.keys.meta();
    const conn = await this.conn();
    await conn.call(meta, ['HSETNX', meta, key, value]);
    return (await this.getMeta(key))!;
  }
}
