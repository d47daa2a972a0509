/**
 * PostgreSQL side of webhooks: subscriptions, the fan-out from the event outbox into
 * deliveries, and the leased delivery queue. Any number of dispatchers in any number of
 * processes may run: fan-out claims unread events with FOR UPDATE SKIP LOCKED (and marks them
 * read in the same transaction), deliveries are unique per (subscription, event, replay), and a
 * delivery is leased to one dispatcher at a time. Lock order: subscription, then delivery.
 */
import { randomBytes } from 'node:crypto';
import type { EventDraft, OpContext } from '../../events/model.js';
import { subscriptionMatches } from '../../events/matching.js';
import { newDeliveryId, replayInProgress, retryDelay, type ClaimedDelivery, type DeliveryOutcome, type DeliveryRecord, type WebhookRecord } from '../../events/types.js';
import type { DeliveryQuery, Page, WebhookQuery } from '../types.js';
import { Params } from './queries.js';
import { int, type Row } from './rows.js';
import type { PostgresStore } from './store.js';

const optInt = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : int(v));
const opt = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (v as T));
const json = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (JSON.parse(v as string) as T));
const toJson = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));

export function webhookFromRow(r: Row): WebhookRecord {
  return {
    subscription_id: r.subscription_id as string,
    tenant_id: r.tenant_id as string,
    url: r.url as string,
    name: opt(r.name),
    description: opt(r.description),
    event_types: JSON.parse(r.event_types as string),
    event_categories: JSON.parse(r.event_categories as string),
    scope_filter: opt(r.scope_filter),
    thresholds: json(r.thresholds),
    header_names: JSON.parse(r.header_names as string),
    headers_sealed: opt(r.headers_sealed),
    secret_sealed: opt(r.secret_sealed),
    retry_policy: JSON.parse(r.retry_policy as string),
    disable_after_failures: int(r.disable_after_failures),
    status: r.status as WebhookRecord['status'],
    consecutive_failures: int(r.consecutive_failures),
    metadata: json(r.metadata),
    created_at: int(r.created_at),
    updated_at: optInt(r.updated_at),
    last_triggered_at: optInt(r.last_triggered_at),
    last_success_at: optInt(r.last_success_at),
    last_failure_at: optInt(r.last_failure_at),
  };
}

function webhookToRow(w: WebhookRecord): Row {
  return {
    subscription_id: w.subscription_id,
    tenant_id: w.tenant_id,
    url: w.url,
    name: w.name ?? null,
    description: w.description ?? null,
    event_types: JSON.stringify(w.event_types),
    event_categories: JSON.stringify(w.event_categories),
    scope_filter: w.scope_filter ?? null,
    thresholds: toJson(w.thresholds),
    header_names: JSON.stringify(w.header_names),
    headers_sealed: w.headers_sealed ?? null,
    secret_sealed: w.secret_sealed ?? null,
    retry_policy: JSON.stringify(w.retry_policy),
    disable_after_failures: w.disable_after_failures,
    status: w.status,
    consecutive_failures: w.consecutive_failures,
    metadata: toJson(w.metadata),
    created_at: w.created_at,
    updated_at: w.updated_at ?? null,
    last_triggered_at: w.last_triggered_at ?? null,
    last_success_at: w.last_success_at ?? null,
    last_failure_at: w.last_failure_at ?? null,
  };
}

export function deliveryFromRow(r: Row): DeliveryRecord {
  return {
    delivery_id: r.delivery_id as string,
    subscription_id: r.subscription_id as string,
    event_id: r.event_id as string,
    event_type: r.event_type as string,
    tenant_id: r.tenant_id as string,
    status: r.status as DeliveryRecord['status'],
    attempts: int(r.attempts),
    next_attempt_at: int(r.next_attempt_at),
    attempted_at: int(r.attempted_at),
    completed_at: optInt(r.completed_at),
    response_status: optInt(r.response_status),
    response_time_ms: optInt(r.response_time_ms),
    error_message: opt(r.error_message),
    trace_id: opt(r.trace_id),
    trace_flags: opt(r.trace_flags),
    traceparent_inbound_valid: r.traceparent_inbound_valid === null || r.traceparent_inbound_valid === undefined ? undefined : r.traceparent_inbound_valid === true,
    replay_id: (r.replay_id as string) || undefined,
  };
}

const WEBHOOK_SORT = {
  consecutive_failures: { col: 'consecutive_failures', numeric: true },
  url: { col: 'url', numeric: false },
  tenant_id: { col: 'tenant_id', numeric: false },
  status: { col: 'status', numeric: false },
} as const;

const SUBSCRIPTION_COLS = Object.keys(
  webhookToRow({
    subscription_id: '', tenant_id: '', url: '', event_types: [], event_categories: [], header_names: [],
    retry_policy: { max_retries: 0, initial_delay_ms: 0, backoff_multiplier: 1, max_delay_ms: 0 }, disable_after_failures: 0,
    status: 'ACTIVE', consecutive_failures: 0, created_at: 0,
  }),
);
const UPSERT_SQL = `INSERT INTO webhook_subscriptions (${SUBSCRIPTION_COLS.join(', ')})
  VALUES (${SUBSCRIPTION_COLS.map((_, i) => `$${i + 1}`).join(', ')})
  ON CONFLICT (subscription_id) DO UPDATE SET ${SUBSCRIPTION_COLS.filter((c) => c !== 'subscription_id').map((c) => `${c} = EXCLUDED.${c}`).join(', ')}`;

const INSERT_DELIVERY = `INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, event_type, tenant_id, status, attempts,
    next_attempt_at, attempted_at, trace_id, trace_flags, traceparent_inbound_valid, replay_id)
  SELECT d.delivery_id, d.subscription_id, d.event_id, d.event_type, d.tenant_id, 'PENDING', 0, $2, $2, d.trace_id, d.trace_flags,
    d.trace_flags IS NOT NULL, ''
  FROM json_populate_recordset(NULL::webhook_deliveries, $1::json) d
  ON CONFLICT (subscription_id, event_id, replay_id) DO NOTHING`;

export class PostgresWebhooks {
  constructor(private readonly s: PostgresStore) {}

  createWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.s.transact(async (tx) => {
      await tx.rows(UPSERT_SQL, Object.values(webhookToRow(w)));
      await this.s.writeEvents(tx, events, ctx);
    });
  }

  updateWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.createWebhook(w, events, ctx);
  }

  async getWebhook(id: string): Promise<WebhookRecord | undefined> {
    const [row] = await this.s.query('SELECT * FROM webhook_subscriptions WHERE subscription_id = $1', [id]);
    return row ? webhookFromRow(row) : undefined;
  }

  async listWebhooks(q: WebhookQuery): Promise<Page<WebhookRecord>> {
    const P = new Params();
    const where: string[] = [];
    if (q.tenantId) where.push(`tenant_id = ${P.p(q.tenantId)}`);
    if (q.status) where.push(`status = ${P.p(q.status)}`);
    if (q.eventType) where.push(`EXISTS (SELECT 1 FROM json_array_elements_text(event_types::json) AS e(v) WHERE e.v = ${P.p(q.eventType)})`);
    if (q.search) {
      const s = P.p(q.search.toLowerCase());
      where.push(`(strpos(lower(subscription_id), ${s}) > 0 OR strpos(lower(url), ${s}) > 0)`);
    }
    const { col, numeric } = WEBHOOK_SORT[q.sortBy];
    const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
    const cmp = q.sortDir === 'asc' ? '>' : '<';
    if (q.after) {
      const raw = q.after.value;
      const value = numeric ? Number(raw) : String(raw);
      if (numeric && !Number.isSafeInteger(value)) return { rows: [], hasMore: false };
      const v = P.p(value);
      where.push(`(${col} ${cmp} ${v} OR (${col} = ${v} AND subscription_id ${cmp} ${P.p(q.after.id)}))`);
    }
    const text = `SELECT * FROM webhook_subscriptions ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY ${col} ${dir}, subscription_id ${dir} LIMIT ${P.p(q.limit + 1)}`;
    const rows = await this.s.query(text, P.values);
    return { rows: rows.slice(0, q.limit).map(webhookFromRow), hasMore: rows.length > q.limit };
  }

  deleteWebhook(id: string, events: EventDraft[], ctx: OpContext): Promise<boolean> {
    return this.s.transact(async (tx) => {
      const deleted = await tx.rows('DELETE FROM webhook_subscriptions WHERE subscription_id = $1 RETURNING subscription_id', [id]);
      if (deleted.length === 0) return false;
      // Undelivered work for a deleted subscription is dropped with it.
      await tx.rows(
        "UPDATE webhook_deliveries SET status = 'FAILED', error_message = 'subscription deleted', lease_owner = NULL WHERE subscription_id = $1 AND status IN ('PENDING', 'RETRYING')",
        [id],
      );
      await this.s.writeEvents(tx, events, ctx);
      return true;
    });
  }

  async listDeliveries(q: DeliveryQuery): Promise<Page<DeliveryRecord>> {
    const P = new Params();
    const where = [`subscription_id = ${P.p(q.subscriptionId)}`];
    if (q.status) where.push(`status = ${P.p(q.status)}`);
    if (q.from !== undefined) where.push(`attempted_at >= ${P.p(q.from)}`);
    if (q.to !== undefined) where.push(`attempted_at <= ${P.p(q.to)}`);
    if (q.after) {
      const value = Number(q.after.value);
      if (!Number.isSafeInteger(value)) return { rows: [], hasMore: false };
      const v = P.p(value);
      where.push(`(attempted_at < ${v} OR (attempted_at = ${v} AND delivery_id < ${P.p(q.after.id)}))`);
    }
    const text = `SELECT * FROM webhook_deliveries WHERE ${where.join(' AND ')} ORDER BY attempted_at DESC, delivery_id DESC LIMIT ${P.p(q.limit + 1)}`;
    const rows = await this.s.query(text, P.values);
    return { rows: rows.slice(0, q.limit).map(deliveryFromRow), hasMore: rows.length > q.limit };
  }

  /**
   * Claims up to `limit` unread events (SKIP LOCKED: dispatchers in other processes take other
   * events), creates their deliveries and marks them read, all in one transaction.
   */
  fanOutEvents(limit: number): Promise<number> {
    return this.s.transact(async (tx) => {
      const events = await tx.rows(
        `SELECT seq, event_id, event_type, category, tenant_id, scope, trace_id, trace_flags FROM events
         WHERE NOT fanned_out ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [limit],
      );
      if (events.length === 0) return 0;
      const subs = (await tx.rows("SELECT * FROM webhook_subscriptions WHERE status = 'ACTIVE'")).map(webhookFromRow);
      const deliveries: Row[] = [];
      for (const e of events) {
        const m = { event_type: e.event_type as string, category: e.category as string, tenant_id: e.tenant_id as string, scope: opt<string>(e.scope) };
        for (const sub of subs) {
          if (!subscriptionMatches(sub, m)) continue;
          deliveries.push({
            delivery_id: newDeliveryId(),
            subscription_id: sub.subscription_id,
            event_id: e.event_id,
            event_type: e.event_type,
            tenant_id: e.tenant_id,
            trace_id: e.trace_id,
            trace_flags: e.trace_flags,
          });
        }
      }
      if (deliveries.length > 0) await tx.rows(INSERT_DELIVERY, [JSON.stringify(deliveries), tx.now]);
      await tx.rows('UPDATE events SET fanned_out = true WHERE seq = ANY($1::bigint[])', [events.map((e) => e.seq)]);
      return events.length;
    });
  }

  claimDeliveries(owner: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
    return this.s.transact(async (tx) => {
      const now = tx.now;
      const rows = await tx.rows(
        `UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2
         WHERE delivery_id IN (
           SELECT delivery_id FROM webhook_deliveries
           WHERE status IN ('PENDING', 'RETRYING') AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
           ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING *`,
        [owner, now + leaseMs, now, limit],
      );
      if (rows.length === 0) return [];
      const claimed = rows.map(deliveryFromRow).sort((a, b) => a.next_attempt_at - b.next_attempt_at);
      const subs = new Map(
        (await tx.rows('SELECT * FROM webhook_subscriptions WHERE subscription_id = ANY($1::text[])', [[...new Set(claimed.map((d) => d.subscription_id))]]))
          .map(webhookFromRow)
          .map((w) => [w.subscription_id, w]),
      );
      const evs = new Map(
        (await tx.rows('SELECT event_id, body, request_id FROM events WHERE event_id = ANY($1::text[])', [[...new Set(claimed.map((d) => d.event_id))]])).map(
          (e) => [e.event_id as string, e],
        ),
      );
      const out: ClaimedDelivery[] = [];
      for (const d of claimed) {
        const sub = subs.get(d.subscription_id);
        const ev = evs.get(d.event_id);
        if (!sub || !ev) {
          // Nothing to send any more: fail it now rather than retry forever.
          await tx.rows(
            "UPDATE webhook_deliveries SET status = 'FAILED', completed_at = $1, error_message = $2, lease_owner = NULL, lease_until = NULL WHERE delivery_id = $3",
            [now, !sub ? 'subscription not found' : 'event not found', d.delivery_id],
          );
          continue;
        }
        out.push({ delivery: d, body: ev.body as string, request_id: opt(ev.request_id), subscription: sub });
      }
      return out;
    });
  }

  completeDelivery(o: DeliveryOutcome): Promise<void> {
    return this.s.transact(async (tx) => {
      const now = tx.now;
      const [peek] = await tx.rows('SELECT subscription_id FROM webhook_deliveries WHERE delivery_id = $1', [o.delivery_id]);
      if (!peek) return;
      // Subscription first, then delivery: the order deleteWebhook takes them in.
      const [subRow] = await tx.rows('SELECT * FROM webhook_subscriptions WHERE subscription_id = $1 FOR UPDATE', [peek.subscription_id]);
      const [row] = await tx.rows('SELECT * FROM webhook_deliveries WHERE delivery_id = $1 FOR UPDATE', [o.delivery_id]);
      // A lost lease means another dispatcher took over: its outcome wins, ours is dropped.
      if (!row || row.lease_owner !== o.owner) return;
      const d = deliveryFromRow(row);
      const sub = subRow ? webhookFromRow(subRow) : undefined;
      const attempts = d.attempts + 1;
      const base = [d.delivery_id, attempts, o.response_status ?? null, o.response_time_ms ?? null];
      if (o.ok) {
        await tx.rows(
          `UPDATE webhook_deliveries SET status = 'SUCCESS', attempts = $2, completed_at = $5, response_status = $3, response_time_ms = $4,
             error_message = NULL, lease_owner = NULL, lease_until = NULL WHERE delivery_id = $1`,
          [...base, now],
        );
        if (sub) {
          await tx.rows('UPDATE webhook_subscriptions SET consecutive_failures = 0, last_success_at = $1, last_triggered_at = $1 WHERE subscription_id = $2', [
            now,
            sub.subscription_id,
          ]);
        }
        return;
      }
      const policy = sub?.retry_policy;
      const exhausted = o.terminal || !policy || attempts > policy.max_retries;
      if (!exhausted) {
        await tx.rows(
          `UPDATE webhook_deliveries SET status = 'RETRYING', attempts = $2, next_attempt_at = $5, response_status = $3, response_time_ms = $4,
             error_message = $6, lease_owner = NULL, lease_until = NULL WHERE delivery_id = $1`,
          [...base, now + retryDelay(policy!, attempts), o.error_message ?? null],
        );
        if (sub) await tx.rows('UPDATE webhook_subscriptions SET last_failure_at = $1, last_triggered_at = $1 WHERE subscription_id = $2', [now, sub.subscription_id]);
        return;
      }
      await tx.rows(
        `UPDATE webhook_deliveries SET status = 'FAILED', attempts = $2, completed_at = $5, response_status = $3, response_time_ms = $4,
           error_message = $6, lease_owner = NULL, lease_until = NULL WHERE delivery_id = $1`,
        [...base, now, o.error_message ?? null],
      );
      if (!sub) return;
      const failures = sub.consecutive_failures + 1;
      const ctx: OpContext = { actor: { type: 'system' }, traceId: d.trace_id, traceFlags: d.trace_flags };
      const drafts: EventDraft[] = [
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
      ];
      // The spec disables a subscription once its consecutive failures exceed the threshold.
      const disable = sub.status === 'ACTIVE' && failures > sub.disable_after_failures;
      await tx.rows(
        'UPDATE webhook_subscriptions SET consecutive_failures = $1, last_failure_at = $2, last_triggered_at = $2, status = $3, updated_at = $4 WHERE subscription_id = $5',
        [failures, now, disable ? 'DISABLED' : sub.status, disable ? now : (sub.updated_at ?? null), sub.subscription_id],
      );
      if (disable) {
        drafts.push({
          event_type: 'webhook.disabled',
          tenant_id: sub.tenant_id,
          correlation_id: `webhook_auto_disable:${sub.subscription_id}:${randomBytes(6).toString('hex')}`,
          data: {
            subscription_id: sub.subscription_id,
            tenant_id: sub.tenant_id,
            previous_status: 'ACTIVE',
            new_status: 'DISABLED',
            disable_reason: 'consecutive_failures_exceeded_threshold',
          },
        });
      }
      await this.s.writeEvents(tx, drafts, ctx);
    });
  }

  enqueueReplay(subscriptionId: string, eventIds: string[], replayId: string): Promise<number> {
    return this.s.transact(async (tx) => {
      // The subscription row lock serialises replays to one subscription across processes.
      await tx.rows('SELECT 1 FROM webhook_subscriptions WHERE subscription_id = $1 FOR UPDATE', [subscriptionId]);
      const busy = await tx.rows(
        "SELECT 1 FROM webhook_deliveries WHERE status IN ('PENDING', 'RETRYING') AND subscription_id = $1 AND replay_id <> '' LIMIT 1",
        [subscriptionId],
      );
      if (busy.length > 0) throw replayInProgress(subscriptionId);
      if (eventIds.length === 0) return 0;
      // Chronological order: the earliest event gets the earliest attempt time.
      const rows = await tx.rows(
        `INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, event_type, tenant_id, status, attempts, next_attempt_at,
           attempted_at, trace_id, trace_flags, traceparent_inbound_valid, replay_id)
         SELECT w.delivery_id, $1, e.event_id, e.event_type, e.tenant_id, 'PENDING', 0, $2::bigint + w.ord - 1, $2, e.trace_id, e.trace_flags,
           e.trace_flags IS NOT NULL, $3
         FROM unnest($4::text[], $5::text[]) WITH ORDINALITY AS w(event_id, delivery_id, ord)
         JOIN events e ON e.event_id = w.event_id
         ON CONFLICT (subscription_id, event_id, replay_id) DO NOTHING
         RETURNING 1`,
        [subscriptionId, tx.now, replayId, eventIds, eventIds.map(() => newDeliveryId())],
      );
      return rows.length;
    });
  }

  purgeEvents(eventRetentionMs: number, deliveryRetentionMs: number): Promise<void> {
    return this.s.transact(async (tx) => {
      // Never purge an event the fan-out has not read yet.
      await tx.rows('DELETE FROM events WHERE timestamp < $1 AND fanned_out', [tx.now - eventRetentionMs]);
      await tx.rows("DELETE FROM webhook_deliveries WHERE attempted_at < $1 AND status IN ('SUCCESS', 'FAILED')", [tx.now - deliveryRetentionMs]);
    });
  }
}
