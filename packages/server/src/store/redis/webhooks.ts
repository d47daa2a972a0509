/**
 * Webhooks on Redis. All dispatcher state (subscriptions, deliveries, the delivery queue, the
 * fan-out cursors) shares the `{wh}` slot, so each dispatcher step is one optimistic transaction
 * (tx.ts) there; several dispatchers in several processes may run at once.
 *
 * Fan-out: a write that appends to an owner's outbox marks the owner dirty (after the write).
 * fanOutEvents takes dirty owners, clears the mark first, reads the owner's outbox from its
 * cursor, and in one transaction creates the deliveries and advances the cursor. Deliveries are
 * unique per (subscription, event, replay), so a repeated fan-out never sends twice. A writer
 * that dies between its write and its mark is covered by a periodic walk of every owner.
 *
 * Queue: `queue` holds PENDING/RETRYING deliveries scored by when they are next due; a claim
 * moves the score to the end of the lease, so an unfinished claim comes back by itself.
 */
import type { EventDraft, EventRecord, OpContext } from '../../events/model.js';
import { subscriptionMatches } from '../../events/matching.js';
import { newDeliveryId, replayInProgress, retryDelay, type ClaimedDelivery, type DeliveryOutcome, type DeliveryRecord, type WebhookRecord } from '../../events/types.js';
import type { DeliveryQuery, Page, WebhookQuery } from '../types.js';
import type { RedisConn } from './conn.js';
import { pad16, parseEventId, SEP, WH_OWNER, type Keyspace } from './keys.js';
import { getEvent, walkIds } from './list.js';
import { eventsOf, type StreamEntry } from './outbox.js';
import { keyedPage, matchesSearch } from './paging.js';
import { pairs, toHash, type Hash } from './records.js';
import { runTx, type OutboxEntry, type SlotTx } from './tx.js';

const opt = (v: string | undefined): number | undefined => (v === undefined || v === '' ? undefined : Number(v));

export function webhookFromHash(h: Hash): WebhookRecord {
  const json = <T>(v: string | undefined) => (v === undefined || v === '' ? undefined : (JSON.parse(v) as T));
  return {
    subscription_id: h.subscription_id!,
    tenant_id: h.tenant_id!,
    url: h.url!,
    name: h.name,
    description: h.description,
    event_types: JSON.parse(h.event_types ?? '[]'),
    event_categories: JSON.parse(h.event_categories ?? '[]'),
    scope_filter: h.scope_filter,
    thresholds: json(h.thresholds),
    header_names: JSON.parse(h.header_names ?? '[]'),
    headers_sealed: h.headers_sealed,
    secret_sealed: h.secret_sealed,
    retry_policy: JSON.parse(h.retry_policy!),
    disable_after_failures: Number(h.disable_after_failures),
    status: h.status as WebhookRecord['status'],
    consecutive_failures: Number(h.consecutive_failures ?? 0),
    metadata: json(h.metadata),
    created_at: Number(h.created_at),
    updated_at: opt(h.updated_at),
    last_triggered_at: opt(h.last_triggered_at),
    last_success_at: opt(h.last_success_at),
    last_failure_at: opt(h.last_failure_at),
  };
}

const fields = (flat: string[]): Hash => {
  const out: Hash = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
};

const webhookFields = (w: WebhookRecord): Hash => fields(pairs({ ...w }));

export function deliveryFromHash(h: Hash): DeliveryRecord {
  return {
    delivery_id: h.delivery_id!,
    subscription_id: h.subscription_id!,
    event_id: h.event_id!,
    event_type: h.event_type!,
    tenant_id: h.tenant_id!,
    status: h.status as DeliveryRecord['status'],
    attempts: Number(h.attempts ?? 0),
    next_attempt_at: Number(h.next_attempt_at),
    attempted_at: Number(h.attempted_at),
    completed_at: opt(h.completed_at),
    response_status: opt(h.response_status),
    response_time_ms: opt(h.response_time_ms),
    error_message: h.error_message,
    trace_id: h.trace_id,
    trace_flags: h.trace_flags,
    traceparent_inbound_valid: h.traceparent_inbound_valid === undefined ? undefined : h.traceparent_inbound_valid === '1',
    replay_id: h.replay_id || undefined,
  };
}

const deliveryFields = (d: DeliveryRecord & { lease_owner?: string | undefined }): Hash => fields(pairs({ ...d }));

const FANOUT_BATCH = 500;
const RECONCILE_EVERY_MS = 60_000;

export class RedisWebhooks {
  private lastReconcile = 0;

  constructor(
    private readonly conn: () => Promise<RedisConn>,
    private readonly keys: Keyspace,
    /** Every owner of an outbox stream (tenants and sentinels). */
    private readonly owners: () => Promise<string[]>,
    /** Told about outbox entries written (committed-event metrics and the fan-out marks). */
    private readonly committed: (entries: OutboxEntry[]) => Promise<void> = async () => undefined,
  ) {}

  private tx<T>(body: (tx: SlotTx) => Promise<T>): Promise<T> {
    return this.conn().then((c) => runTx(c, this.keys.webhooks(), body, this.committed));
  }

  private async hashes(keys: readonly string[]): Promise<Array<Hash | undefined>> {
    const conn = await this.conn();
    return Promise.all(keys.map(async (k) => toHash(await conn.call(k, ['HGETALL', k], true))));
  }

  /** Marks an owner's outbox as holding entries the fan-out has not seen. */
  async markDirty(owner: string): Promise<void> {
    const key = this.keys.fanoutDirty();
    await (await this.conn()).call(key, ['SADD', key, owner]);
  }

  private emit(tx: SlotTx, draft: EventDraft, ctx: OpContext): void {
    tx.emit(this.keys.dispatcherOutbox(), WH_OWNER, draft, ctx);
  }

  private async put(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    await this.tx(async (tx) => {
      const key = this.keys.webhook(w.subscription_id);
      const prev = await tx.hash(key);
      const next = webhookFields(w);
      const put: Record<string, string | undefined> = { ...next };
      for (const f of Object.keys(prev ?? {})) if (!(f in next)) put[f] = undefined;
      tx.put(key, put);
      tx.command('ZADD', this.keys.webhooks(), 0, w.subscription_id);
      for (const e of events) this.emit(tx, e, ctx);
    });
  }

  createWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.put(w, events, ctx);
  }

  updateWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.put(w, events, ctx);
  }

  async getWebhook(id: string): Promise<WebhookRecord | undefined> {
    const [h] = await this.hashes([this.keys.webhook(id)]);
    return h ? webhookFromHash(h) : undefined;
  }

  async allWebhooks(): Promise<WebhookRecord[]> {
    const conn = await this.conn();
    const ids: string[] = [];
    for await (const batch of walkIds(conn, this.keys.webhooks(), undefined)) ids.push(...batch);
    return (await this.hashes(ids.map((id) => this.keys.webhook(id)))).filter((h): h is Hash => !!h).map(webhookFromHash);
  }

  /** The close cascade's view of a tenant's subscriptions (governance.ts). */
  readonly forTenants = {
    open: async (tenantId: string) => (await this.allWebhooks()).filter((w) => w.tenant_id === tenantId && (w.status === 'ACTIVE' || w.status === 'PAUSED')),
    disable: (ids: readonly string[]) =>
      this.tx(async (tx) => {
        for (const id of ids) {
          const h = await tx.hash(this.keys.webhook(id));
          if (h && (h.status === 'ACTIVE' || h.status === 'PAUSED')) tx.put(this.keys.webhook(id), { status: 'DISABLED', updated_at: String(tx.now) });
        }
      }),
  };

  async listWebhooks(q: WebhookQuery): Promise<Page<WebhookRecord>> {
    const rows = (await this.allWebhooks()).filter(
      (w) =>
        (q.tenantId === undefined || w.tenant_id === q.tenantId) &&
        (q.status === undefined || w.status === q.status) &&
        (q.eventType === undefined || w.event_types.includes(q.eventType)) &&
        matchesSearch(q.search, w.subscription_id, w.url),
    );
    const page = keyedPage(rows, (w) => w[q.sortBy], (w) => w.subscription_id, q.sortDir, q.after, q.limit);
    return { rows: page.rows, hasMore: page.hasMore };
  }

  async deleteWebhook(id: string, events: EventDraft[], ctx: OpContext): Promise<boolean> {
    const k = this.keys;
    const deleted = await this.tx(async (tx) => {
      const h = await tx.hash(k.webhook(id));
      if (!h) return false;
      tx.del(k.webhook(id));
      tx.del(k.replayDeliveries(id));
      tx.command('ZREM', k.webhooks(), id);
      // Undelivered work for a deleted subscription is dropped with it.
      const queued = await tx.members(k.deliveryQueue());
      const dls = await tx.hashes(queued.map((d) => k.delivery(d)));
      dls.forEach((d, i) => {
        if (d?.subscription_id !== id) return;
        tx.put(k.delivery(queued[i]!), { status: 'FAILED', error_message: 'subscription deleted', lease_owner: undefined });
        tx.command('ZREM', k.deliveryQueue(), queued[i]!);
      });
      for (const e of events) this.emit(tx, e, ctx);
      return true;
    });
    return deleted;
  }

  async listDeliveries(q: DeliveryQuery): Promise<Page<DeliveryRecord>> {
    const conn = await this.conn();
    const key = this.keys.subscriptionDeliveries(q.subscriptionId);
    const hi = q.after ? '(' + pad16(Number(q.after.value)) + SEP + q.after.id : q.to !== undefined ? '(' + pad16(q.to + 1) : '+';
    const lo = q.from !== undefined ? '[' + pad16(q.from) : '-';
    const rows: DeliveryRecord[] = [];
    let from = hi;
    for (;;) {
      const batch = await conn.call<string[]>(key, ['ZRANGE', key, from, lo, 'BYLEX', 'REV', 'LIMIT', '0', '200'], true);
      const hs = await this.hashes(batch.map((m) => this.keys.delivery(m.slice(m.indexOf(SEP) + 1))));
      for (const h of hs) {
        if (!h) continue;
        const d = deliveryFromHash(h);
        if (q.status !== undefined && d.status !== q.status) continue;
        rows.push(d);
        if (rows.length > q.limit) break;
      }
      if (rows.length > q.limit || batch.length < 200) break;
      from = '(' + batch[batch.length - 1]!;
    }
    return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
  }

  private writeDelivery(tx: SlotTx, d: DeliveryRecord): void {
    const k = this.keys;
    tx.replace(k.delivery(d.delivery_id), deliveryFields(d));
    tx.command('ZADD', k.subscriptionDeliveries(d.subscription_id), 0, pad16(d.attempted_at) + SEP + d.delivery_id);
    tx.command('ZADD', k.allDeliveries(), d.attempted_at, d.delivery_id);
    tx.command('ZADD', k.deliveryQueue(), d.next_attempt_at, d.delivery_id);
    tx.command('SET', k.deliveryPair(d.subscription_id, d.event_id, d.replay_id), d.delivery_id);
  }

  /** Fans out up to `limit` outbox entries of dirty owners into deliveries; returns how many entries it read. */
  async fanOutEvents(limit: number): Promise<number> {
    const k = this.keys;
    const conn = await this.conn();
    if (Date.now() - this.lastReconcile > RECONCILE_EVERY_MS) {
      this.lastReconcile = Date.now();
      await this.reconcile(conn);
    }
    const owners = await conn.call<string[]>(k.fanoutDirty(), ['SRANDMEMBER', k.fanoutDirty(), '50'], true);
    let read = 0;
    for (const owner of owners) {
      if (read >= limit) break;
      await conn.call(k.fanoutDirty(), ['SREM', k.fanoutDirty(), owner]);
      for (;;) {
        const n = await this.fanOutOwner(conn, owner, Math.min(FANOUT_BATCH, limit - read));
        read += n.read;
        if (!n.more || read >= limit) {
          if (n.more) await this.markDirty(owner);
          break;
        }
      }
    }
    return read;
  }

  private async fanOutOwner(conn: RedisConn, owner: string, count: number): Promise<{ read: number; more: boolean }> {
    const k = this.keys;
    const outbox = k.outboxOf(owner);
    return runTx(conn, k.webhooks(), async (tx) => {
      const cursor = (await tx.str(k.fanoutCursor(owner))) ?? '0';
      const entries = (await conn.call<StreamEntry[]>(outbox, ['XRANGE', outbox, `(${cursor}`, '+', 'COUNT', String(count)], true)) ?? [];
      if (entries.length === 0) return { read: 0, more: false };
      const subs = (await this.activeSubscriptions(tx)).filter((s) => s.status === 'ACTIVE');
      const wanted: Array<{ sub: WebhookRecord; e: EventRecord }> = [];
      for (const entry of entries) {
        for (const e of eventsOf(owner, entry)) {
          const m = { event_type: e.event_type, category: e.category, tenant_id: e.tenant_id, scope: e.scope };
          for (const sub of subs) if (subscriptionMatches(sub, m)) wanted.push({ sub, e });
        }
      }
      const done = await Promise.all(wanted.map(({ sub, e }) => tx.str(k.deliveryPair(sub.subscription_id, e.event_id, undefined))));
      wanted.forEach(({ sub, e }, i) => {
        if (done[i] === undefined) this.writeDelivery(tx, newDelivery(sub, e, tx.now, tx.now, undefined));
      });
      tx.command('SET', k.fanoutCursor(owner), entries[entries.length - 1]![0]);
      return { read: entries.length, more: entries.length === count };
    });
  }

  /**
   * The subscriptions a fan-out matches against. Their list is part of the transaction; their
   * contents are not (delivery bookkeeping rewrites them all the time), so a change committed
   * while a fan-out runs applies from the next fan-out on.
   */
  private async activeSubscriptions(tx: SlotTx): Promise<WebhookRecord[]> {
    const ids = await tx.members(this.keys.webhooks());
    return (await this.hashes(ids.map((id) => this.keys.webhook(id)))).filter((h): h is Hash => !!h).map(webhookFromHash);
  }

  /** Marks dirty every owner whose outbox has moved past its fan-out cursor (covers writers that died before marking). */
  private async reconcile(conn: RedisConn): Promise<void> {
    const k = this.keys;
    const owners = [...(await this.owners()), WH_OWNER];
    for (let i = 0; i < owners.length; i += 100) {
      const slice = owners.slice(i, i + 100);
      const lasts = await Promise.all(slice.map((o) => conn.call<StreamEntry[]>(k.outboxOf(o), ['XREVRANGE', k.outboxOf(o), '+', '-', 'COUNT', '1'], true)));
      const cursors = await Promise.all(slice.map((o) => conn.call(k.fanoutCursor(o), ['GET', k.fanoutCursor(o)], true)));
      await Promise.all(
        slice.map(async (o, j) => {
          const last = lasts[j]?.[0]?.[0];
          if (last !== undefined && last !== cursors[j]) await this.markDirty(o);
        }),
      );
    }
  }

  async claimDeliveries(owner: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
    const k = this.keys;
    const conn = await this.conn();
    const claimed = await runTx(conn, k.webhooks(), async (tx) => {
      const due = await conn.call<string[]>(k.deliveryQueue(), ['ZRANGE', k.deliveryQueue(), '-inf', String(tx.now), 'BYSCORE', 'LIMIT', '0', String(limit)], true);
      const hs = await tx.hashes(due.map((id) => k.delivery(id)));
      const out: Array<{ d: DeliveryRecord; sub: WebhookRecord | undefined }> = [];
      for (let i = 0; i < due.length; i++) {
        const h = hs[i];
        if (!h || (h.status !== 'PENDING' && h.status !== 'RETRYING')) {
          tx.command('ZREM', k.deliveryQueue(), due[i]!);
          continue;
        }
        // Read outside the transaction, the queue may be stale: a lease taken meanwhile still stands.
        if (h.lease_until !== undefined && Number(h.lease_until) >= tx.now) continue;
        const d = deliveryFromHash(h);
        // The subscription is only sent along, not decided on: read it without making it part of the claim.
        const subHash = toHash(await conn.call(k.webhook(d.subscription_id), ['HGETALL', k.webhook(d.subscription_id)], true));
        tx.put(k.delivery(d.delivery_id), { lease_owner: owner, lease_until: String(tx.now + leaseMs) });
        tx.command('ZADD', k.deliveryQueue(), tx.now + leaseMs, d.delivery_id);
        out.push({ d, sub: subHash ? webhookFromHash(subHash) : undefined });
      }
      return { out, now: tx.now };
    });
    const result: ClaimedDelivery[] = [];
    for (const { d, sub } of claimed.out) {
      const ev = await this.event(d.event_id);
      if (!sub || !ev) {
        // Nothing to send any more: fail it now rather than retry forever.
        await this.tx(async (tx) => {
          const h = await tx.hash(k.delivery(d.delivery_id));
          if (h?.lease_owner !== owner) return;
          tx.put(k.delivery(d.delivery_id), { status: 'FAILED', completed_at: String(tx.now), error_message: !sub ? 'subscription not found' : 'event not found', lease_owner: undefined, lease_until: undefined });
          tx.command('ZREM', k.deliveryQueue(), d.delivery_id);
        });
        continue;
      }
      result.push({ delivery: d, body: ev.body, request_id: ev.request_id, subscription: sub });
    }
    return result;
  }

  private async event(eventId: string): Promise<EventRecord | undefined> {
    const id = parseEventId(eventId);
    if (!id) return undefined;
    return getEvent(await this.conn(), this.keys, id.tenant, id.entryId, id.index);
  }

  async completeDelivery(o: DeliveryOutcome): Promise<void> {
    const k = this.keys;
    await this.tx(async (tx) => {
      const h = await tx.hash(k.delivery(o.delivery_id));
      // A lost lease means another dispatcher took over: its outcome wins, ours is dropped.
      if (!h || h.lease_owner !== o.owner) return;
      const d = deliveryFromHash(h);
      const now = tx.now;
      if (o.ok) {
        // Success touches the subscription blindly: many deliveries of one subscription complete at once.
        tx.put(k.delivery(d.delivery_id), {
          attempts: String(d.attempts + 1),
          response_status: o.response_status === undefined ? undefined : String(o.response_status),
          response_time_ms: o.response_time_ms === undefined ? undefined : String(o.response_time_ms),
          lease_owner: undefined,
          lease_until: undefined,
          status: 'SUCCESS',
          completed_at: String(now),
          error_message: undefined,
        });
        tx.command('ZREM', k.deliveryQueue(), d.delivery_id);
        tx.putIfExists(k.webhook(d.subscription_id), { consecutive_failures: '0', last_success_at: String(now), last_triggered_at: String(now) });
        return;
      }
      const subHash = await tx.hash(k.webhook(d.subscription_id));
      const sub = subHash ? webhookFromHash(subHash) : undefined;
      const attempts = d.attempts + 1;
      const common: Record<string, string | undefined> = {
        attempts: String(attempts),
        response_status: o.response_status === undefined ? undefined : String(o.response_status),
        response_time_ms: o.response_time_ms === undefined ? undefined : String(o.response_time_ms),
        lease_owner: undefined,
        lease_until: undefined,
      };
      const policy = sub?.retry_policy;
      const exhausted = o.terminal || !policy || attempts > policy.max_retries;
      if (!exhausted) {
        const next = now + retryDelay(policy!, attempts);
        tx.put(k.delivery(d.delivery_id), { ...common, status: 'RETRYING', next_attempt_at: String(next), error_message: o.error_message });
        tx.command('ZADD', k.deliveryQueue(), next, d.delivery_id);
        if (sub) tx.put(k.webhook(sub.subscription_id), { last_failure_at: String(now), last_triggered_at: String(now) });
        return;
      }
      tx.put(k.delivery(d.delivery_id), { ...common, status: 'FAILED', completed_at: String(now), error_message: o.error_message });
      tx.command('ZREM', k.deliveryQueue(), d.delivery_id);
      if (!sub) return;
      const failures = sub.consecutive_failures + 1;
      const ctx: OpContext = { actor: { type: 'system' }, traceId: d.trace_id, traceFlags: d.trace_flags };
      this.emit(
        tx,
        {
          event_type: 'system.webhook_delivery_failed',
          tenant_id: '__system__',
          correlation_id: `webhook_delivery_failed:${d.delivery_id}`,
          data: {
            component: 'webhook-dispatcher',
            message: `Delivery of ${d.event_id} to ${sub.subscription_id} failed after ${attempts} attempt(s)`,
            severity: 'warning',
            details: {
              subscription_id: sub.subscription_id,
              delivery_id: d.delivery_id,
              event_id: d.event_id,
              subscription_tenant_id: sub.tenant_id,
              last_error: o.error_message ?? null,
              last_status: o.response_status ?? null,
            },
          },
        },
        ctx,
      );
      // The spec disables a subscription once its consecutive failures exceed the threshold.
      const disable = sub.status === 'ACTIVE' && failures > sub.disable_after_failures;
      tx.put(k.webhook(sub.subscription_id), {
        consecutive_failures: String(failures),
        last_failure_at: String(now),
        last_triggered_at: String(now),
        status: disable ? 'DISABLED' : sub.status,
        updated_at: disable ? String(now) : sub.updated_at === undefined ? undefined : String(sub.updated_at),
      });
      if (disable) {
        this.emit(
          tx,
          {
            event_type: 'webhook.disabled',
            tenant_id: sub.tenant_id,
            correlation_id: `webhook_auto_disable:${sub.subscription_id}:${d.delivery_id}`,
            data: {
              subscription_id: sub.subscription_id,
              tenant_id: sub.tenant_id,
              previous_status: 'ACTIVE',
              new_status: 'DISABLED',
              disable_reason: 'consecutive_failures_exceeded_threshold',
            },
          },
          ctx,
        );
      }
    });
  }

  async enqueueReplay(subscriptionId: string, eventIds: string[], replayId: string): Promise<number> {
    const events = await Promise.all(eventIds.map((id) => this.event(id)));
    const k = this.keys;
    return this.tx(async (tx) => {
      // The previous replay's deliveries (a purged one counts as finished): read in the transaction,
      // so two concurrent replays conflict and the second sees the first's deliveries.
      const previous = await tx.members(k.replayDeliveries(subscriptionId));
      const states = await tx.hashes(previous.map((d) => k.delivery(d)));
      if (states.some((h) => h?.status === 'PENDING' || h?.status === 'RETRYING')) throw replayInProgress(subscriptionId);
      const sub = await tx.hash(k.webhook(subscriptionId));
      const done = await Promise.all(events.map((e) => (e ? tx.str(k.deliveryPair(subscriptionId, e.event_id, replayId)) : undefined)));
      let n = 0;
      tx.del(k.replayDeliveries(subscriptionId));
      // Chronological order: the earliest event gets the earliest attempt time.
      events.forEach((e, i) => {
        if (!e || !sub || done[i] !== undefined) return;
        const d = newDelivery(webhookFromHash(sub), e, tx.now + i, tx.now, replayId);
        this.writeDelivery(tx, d);
        tx.command('ZADD', k.replayDeliveries(subscriptionId), 0, d.delivery_id);
        n++;
      });
      return n;
    });
  }

  /** Deletes finished deliveries past their retention; outbox entries past the event retention are trimmed once fanned out. */
  async purgeEvents(eventRetentionMs: number, deliveryRetentionMs: number): Promise<void> {
    const k = this.keys;
    const conn = await this.conn();
    const [s] = await conn.call<string[]>(k.webhooks(), ['TIME'], true);
    const now = Number(s) * 1000;
    for (;;) {
      const old = await conn.call<string[]>(k.allDeliveries(), ['ZRANGE', k.allDeliveries(), '-inf', String(now - deliveryRetentionMs), 'BYSCORE', 'LIMIT', '0', '500'], true);
      if (old.length === 0) break;
      await this.tx(async (tx) => {
        const hs = await tx.hashes(old.map((id) => k.delivery(id)));
        old.forEach((id, i) => {
          const h = hs[i];
          if (h && h.status !== 'SUCCESS' && h.status !== 'FAILED') return;
          tx.del(k.delivery(id));
          tx.command('ZREM', k.allDeliveries(), id);
          if (h) {
            tx.command('ZREM', k.subscriptionDeliveries(h.subscription_id!), pad16(Number(h.attempted_at)) + SEP + id);
            tx.del(k.deliveryPair(h.subscription_id!, h.event_id!, h.replay_id));
          }
        });
      });
      if (old.length < 500) break;
    }
    // Outbox entries: never beyond what the fan-out has read.
    const cutoff = now - eventRetentionMs;
    for (const owner of [...(await this.owners()), WH_OWNER]) {
      const cursor = await conn.call(k.fanoutCursor(owner), ['GET', k.fanoutCursor(owner)], true);
      const cursorMs = typeof cursor === 'string' ? Number(cursor.split('-')[0]) : 0;
      const minId = Math.min(cutoff, cursorMs);
      if (minId > 0) await conn.call(k.outboxOf(owner), ['XTRIM', k.outboxOf(owner), 'MINID', String(minId)]);
    }
  }
}

function newDelivery(sub: WebhookRecord, e: EventRecord, due: number, now: number, replayId: string | undefined): DeliveryRecord {
  return {
    delivery_id: newDeliveryId(),
    subscription_id: sub.subscription_id,
    event_id: e.event_id,
    event_type: e.event_type,
    tenant_id: e.tenant_id,
    status: 'PENDING',
    attempts: 0,
    next_attempt_at: due,
    attempted_at: now,
    trace_id: e.trace_id,
    trace_flags: e.trace_flags,
    traceparent_inbound_valid: e.trace_flags ? true : false,
    replay_id: replayId,
  };
}
