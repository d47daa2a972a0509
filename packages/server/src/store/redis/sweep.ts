/**
 * Expiry and retention across several server processes sharing one Redis.
 *
 * Truth: each tenant's `due` ZSET (ACTIVE reservations by expires_at + grace), written by the
 * ledger scripts. A Cluster script cannot also write a global key, so a small registry (ZSET
 * tenant -> earliest time worth a look) tells the sweeper where to go:
 *  - after a reservation is taken, its process lowers the tenant's hint (ZADD LT) and marks the
 *    tenant touched;
 *  - a sweep of a tenant clears the mark, expires what is due (one script per batch), then moves
 *    the hint to the next due time, or drops it, unless the tenant was touched meanwhile
 *    (a reservation may have landed after the sweep looked);
 *  - a process that dies between its reserve script and its registry write leaves a reservation
 *    the registry may not know; a periodic reconciliation walks every tenant's `due` head and
 *    repairs the registry, so such a reservation expires at most one reconciliation late.
 * Only the holder of a short lease (SET NX PX, compare-and-delete) sweeps at a time; the expire
 * script rechecks state and time itself, so a lost lease can cost duplicate work, never a double
 * refund.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { firstScore, type RedisConn } from './conn.js';
import type { Keyspace } from './keys.js';
import { SCRIPTS } from './scripts.js';
import type { OutboxEntry } from './tx.js';

const LEASE_MS = 10_000;
const TENANTS_PER_TICK = 100;
const RESERVATIONS_PER_SCRIPT = 100;
const RECONCILE_EVERY_MS = 60_000;
const PURGE_BATCH = 200;

export class Sweeper {
  private lastReconcile = 0;

  constructor(
    private readonly conn: () => Promise<RedisConn>,
    private readonly keys: Keyspace,
    /** Told about the outbox entries (expiry events) each sweep wrote. */
    private readonly committed: (entries: OutboxEntry[]) => Promise<void>,
  ) {}

  /** Registry writes waiting for the end of this event-loop turn: tenant -> earliest due time. */
  private touches = new Map<string, number>();
  private flushing: NodeJS.Immediate | undefined;

  /**
   * Registry write after a reservation is taken. The request does not wait for it: the
   * reservation is already in its tenant's `due` queue (the truth), and the touches of one
   * event-loop turn go out as one script call instead of one round trip per reservation. A touch
   * that fails is kept for the next call; one lost with its process is repaired by the periodic
   * reconciliation, exactly like a crash between the reserve script and this write.
   */
  touch(tenant: string, dueAt: number): void {
    const prev = this.touches.get(tenant);
    if (prev === undefined || dueAt < prev) this.touches.set(tenant, dueAt);
    this.flushing ??= setImmediate(() => void this.flush());
  }

  /** Writes the pending touches (also called before the store closes). */
  async flush(): Promise<void> {
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    if (this.touches.size === 0) return;
    const batch = this.touches;
    this.touches = new Map();
    const args: Array<string | number> = [];
    for (const [tenant, dueAt] of batch) args.push(tenant, dueAt);
    const k = this.keys;
    try {
      await (await this.conn()).run(SCRIPTS.registryTouch, [k.sweepDue(), k.sweepTouched()], args);
    } catch {
      for (const [tenant, dueAt] of batch) {
        const prev = this.touches.get(tenant);
        if (prev === undefined || dueAt < prev) this.touches.set(tenant, dueAt);
      }
    }
  }

  /** Runs `job` only while holding the named lease; returns undefined when another process holds it. */
  private async withLease<T>(job: string, run: (conn: RedisConn) => Promise<T>): Promise<T | undefined> {
    const conn = await this.conn();
    const key = this.keys.lease(job);
    const token = randomUUID();
    if ((await conn.call(key, ['SET', key, token, 'NX', 'PX', String(LEASE_MS)])) !== 'OK') return undefined;
    try {
      return await run(conn);
    } finally {
      await conn.run(SCRIPTS.leaseRelease, [key], [token]).catch(() => undefined);
    }
  }

  private async redisNow(conn: RedisConn): Promise<number> {
    const [s, us] = await conn.call<string[]>(undefined, ['TIME'], true);
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  async expireDue(limit: number, tenants: () => Promise<string[]>): Promise<number> {
    const n = await this.withLease('expire', async (conn) => {
      const now = await this.redisNow(conn);
      const registry = this.keys.sweepDue();
      const due = await conn.call<string[]>(registry, ['ZRANGE', registry, '-inf', String(now), 'BYSCORE', 'LIMIT', '0', String(TENANTS_PER_TICK)], true);
      const ctx = JSON.stringify({ actor: { type: 'system' }, traceId: randomBytes(16).toString('hex') });
      let total = 0;
      for (const tenant of due) {
        if (total >= limit) break;
        total += await this.expireTenant(conn, tenant, Math.min(limit - total, RESERVATIONS_PER_SCRIPT), now, ctx);
      }
      if (Date.now() - this.lastReconcile > RECONCILE_EVERY_MS) {
        this.lastReconcile = Date.now();
        await this.reconcile(conn, await tenants());
      }
      return total;
    });
    return n ?? 0;
  }

  private async expireTenant(conn: RedisConn, tenant: string, batch: number, now: number, ctx: string): Promise<number> {
    const k = this.keys;
    await conn.call(k.sweepTouched(), ['SREM', k.sweepTouched(), tenant]);
    const dueKey = k.due(tenant);
    const ids = await conn.call<string[]>(dueKey, ['ZRANGE', dueKey, '-inf', String(now), 'BYSCORE', 'LIMIT', '0', String(batch)], true);
    let expired = 0;
    let next = '';
    if (ids.length > 0) {
      const metas = await Promise.all(
        ids.map((id) => conn.call<Array<string | null>>(dueKey, ['HMGET', k.reservation(tenant, id), 'unit', 'budgeted_scopes'], true)),
      );
      const keys = [dueKey, k.reservationIndex(tenant, 'status'), k.finalized(tenant), k.outbox(tenant)];
      const args: Array<string | number> = [ctx, ids.length];
      ids.forEach((id, i) => {
        const [unit, scopesJson] = metas[i]!;
        const scopes = unit && scopesJson ? (JSON.parse(scopesJson) as string[]) : [];
        keys.push(k.reservation(tenant, id), ...scopes.map((s) => k.budget(tenant, s, unit!)));
        args.push(id, scopesJson ?? '', scopes.length);
      });
      const [n, head, ...entries] = await conn.run<[number, string, ...string[]]>(SCRIPTS.expire, keys, args);
      expired = Number(n);
      next = String(head);
      if (entries.length > 0) await this.committed(entries.map((id) => ({ owner: tenant, id: String(id) })));
    } else {
      next = firstScore(await conn.call(dueKey, ['ZRANGE', dueKey, '0', '0', 'WITHSCORES'], true)) ?? '';
    }
    await conn.run(SCRIPTS.registrySettle, [k.sweepDue(), k.sweepTouched()], [tenant, next]);
    return expired;
  }

  /** Puts every tenant that has ACTIVE reservations back into the registry (crash repair). */
  async reconcile(conn: RedisConn, tenants: string[]): Promise<number> {
    let repaired = 0;
    for (let i = 0; i < tenants.length; i += 100) {
      const slice = tenants.slice(i, i + 100);
      const heads = await Promise.all(slice.map((t) => conn.call(this.keys.due(t), ['ZRANGE', this.keys.due(t), '0', '0', 'WITHSCORES'], true)));
      await Promise.all(
        slice.map(async (t, j) => {
          const score = firstScore(heads[j]);
          if (score === undefined) return;
          repaired++;
          await conn.call(this.keys.sweepDue(), ['ZADD', this.keys.sweepDue(), 'LT', score, t]);
        }),
      );
    }
    return repaired;
  }

  async purge(retentionMs: number, tenants: () => Promise<string[]>): Promise<void> {
    await this.withLease('purge', async (conn) => {
      const cutoff = (await this.redisNow(conn)) - retentionMs;
      const k = this.keys;
      for (const t of await tenants()) {
        for (;;) {
          const final = k.finalized(t);
          const ids = await conn.call<string[]>(final, ['ZRANGE', final, '-inf', `(${cutoff}`, 'BYSCORE', 'LIMIT', '0', String(PURGE_BATCH)], true);
          if (ids.length === 0) break;
          await conn.run(SCRIPTS.purgeReservations, [final, ...k.reservationIndexes(t), ...ids.map((id) => k.reservation(t, id))], [cutoff, ...ids]);
          if (ids.length < PURGE_BATCH) break;
        }
      }
    });
  }
}
