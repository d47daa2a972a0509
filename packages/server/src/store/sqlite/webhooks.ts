/**
 * SQLite side of webhooks: subscriptions, the fan-out from the event outbox into deliveries,
 * and the leased delivery queue. Several dispatchers (threads of one process or separate
 * processes on the same file) can run: fan-out inserts are unique per (subscription, event),
 * and a delivery is leased to one dispatcher at a time.
 */
import { randomBytes } from 'node:crypto';
import type { EventDraft, OpContext } from '../../events/model.js';
import { subscriptionMatches } from '../../events/matching.js';
import { newDeliveryId, replayInProgress, retryDelay, type ClaimedDelivery, type DeliveryOutcome, type DeliveryRecord, type WebhookRecord } from '../../events/types.js';
import type { DeliveryQuery, Page, WebhookQuery } from '../types.js';
import type { SqliteStore } from './store.js';

type Row = Record<string, unknown>;

function add(where: string[], params: Row, clause: string, name: string, value: unknown): void {
  where.push(clause);
  params[name] = value;
}
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
    disable_after_failures: r.disable_after_failures as number,
    status: r.status as WebhookRecord['status'],
    consecutive_failures: r.consecutive_failures as number,
    metadata: json(r.metadata),
    created_at: r.created_at as number,
    updated_at: opt(r.updated_at),
    last_triggered_at: opt(r.last_triggered_at),
    last_success_at: opt(r.last_success_at),
    last_failure_at: opt(r.last_failure_at),
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
    attempts: r.attempts as number,
    next_attempt_at: r.next_attempt_at as number,
    attempted_at: r.attempted_at as number,
    completed_at: opt(r.completed_at),
    response_status: opt(r.response_status),
    response_time_ms: opt(r.response_time_ms),
    error_message: opt(r.error_message),
    trace_id: opt(r.trace_id),
    trace_flags: opt(r.trace_flags),
    traceparent_inbound_valid: r.traceparent_inbound_valid === null || r.traceparent_inbound_valid === undefined ? undefined : r.traceparent_inbound_valid === 1,
    replay_id: (r.replay_id as string) || undefined,
  };
}

const WEBHOOK_SORT = { consecutive_failures: 'consecutive_failures', url: 'url', tenant_id: 'tenant_id', status: 'status' } as const;

export class SqliteWebhooks {
  constructor(private readonly s: SqliteStore) {}

  private upsert(w: WebhookRecord): void {
    const row = webhookToRow(w);
    const cols = Object.keys(row);
    this.s
      .stmt(`INSERT OR REPLACE INTO webhook_subscriptions (${cols.join(',')}) VALUES (${cols.map((c) => '@' + c).join(',')})`)
      .run(row);
  }

  createWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.s.transact((view) => {
      this.upsert(w);
      for (const e of events) view.emit(e, ctx);
    });
  }

  async getWebhook(id: string): Promise<WebhookRecord | undefined> {
    const row = this.s.stmt('SELECT * FROM webhook_subscriptions WHERE subscription_id = ?').get(id) as Row | undefined;
    return row ? webhookFromRow(row) : undefined;
  }

  async listWebhooks(q: WebhookQuery): Promise<Page<WebhookRecord>> {
    const where: string[] = [];
    const params: Row = { limit: q.limit + 1 };
    if (q.tenantId) add(where, params, 'tenant_id = @tenant', 'tenant', q.tenantId);
    if (q.status) add(where, params, 'status = @status', 'status', q.status);
    if (q.eventType) add(where, params, 'EXISTS (SELECT 1 FROM json_each(event_types) WHERE value = @etype)', 'etype', q.eventType);
    if (q.search) {
      where.push('(instr(lower(subscription_id), @search) > 0 OR instr(lower(url), @search) > 0)');
      params.search = q.search.toLowerCase();
    }
    const col = WEBHOOK_SORT[q.sortBy];
    const dir = q.sortDir === 'asc' ? 'ASC' : 'DESC';
    const cmp = q.sortDir === 'asc' ? '>' : '<';
    if (q.after) {
      params.afterValue = q.after.value;
      params.afterId = q.after.id;
      where.push(`(${col} ${cmp} @afterValue OR (${col} = @afterValue AND subscription_id ${cmp} @afterId))`);
    }
    const sql = `SELECT * FROM webhook_subscriptions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY ${col} ${dir}, subscription_id ${dir} LIMIT @limit`;
    const rows = this.s.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(webhookFromRow), hasMore: rows.length > q.limit };
  }

  updateWebhook(w: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void> {
    return this.s.transact((view) => {
      this.upsert(w);
      for (const e of events) view.emit(e, ctx);
    });
  }

  deleteWebhook(id: string, events: EventDraft[], ctx: OpContext): Promise<boolean> {
    return this.s.transact((view) => {
      const info = this.s.stmt('DELETE FROM webhook_subscriptions WHERE subscription_id = ?').run(id);
      if (info.changes === 0) return false;
      // Undelivered work for a deleted subscription is dropped with it.
      this.s.stmt("UPDATE webhook_deliveries SET status = 'FAILED', error_message = 'subscription deleted', lease_owner = NULL WHERE subscription_id = ? AND status IN ('PENDING', 'RETRYING')").run(id);
      for (const e of events) view.emit(e, ctx);
      return true;
    });
  }

  async listDeliveries(q: DeliveryQuery): Promise<Page<DeliveryRecord>> {
    const where = ['subscription_id = @sub'];
    const params: Row = { sub: q.subscriptionId, limit: q.limit + 1 };
    if (q.status) add(where, params, 'status = @status', 'status', q.status);
    if (q.from !== undefined) add(where, params, 'attempted_at >= @from', 'from', q.from);
    if (q.to !== undefined) add(where, params, 'attempted_at <= @to', 'to', q.to);
    if (q.after) {
      params.afterValue = q.after.value;
      params.afterId = q.after.id;
      where.push('(attempted_at < @afterValue OR (attempted_at = @afterValue AND delivery_id < @afterId))');
    }
    const sql = `SELECT * FROM webhook_deliveries WHERE ${where.join(' AND ')} ORDER BY attempted_at DESC, delivery_id DESC LIMIT @limit`;
    const rows = this.s.stmt(sql).all(params) as Row[];
    return { rows: rows.slice(0, q.limit).map(deliveryFromRow), hasMore: rows.length > q.limit };
  }

  fanOutEvents(limit: number): Promise<number> {
    return this.s.transact((view) => {
      const state = this.s.stmt("SELECT last_seq FROM dispatch_state WHERE name = 'fanout'").get() as Row | undefined;
      const last = (state?.last_seq as number | undefined) ?? 0;
      const events = this.s.stmt('SELECT seq, event_id, event_type, category, tenant_id, scope, trace_id, trace_flags FROM events WHERE seq > ? ORDER BY seq LIMIT ?').all(last, limit) as Row[];
      if (events.length === 0) return 0;
      const subs = (this.s.stmt("SELECT * FROM webhook_subscriptions WHERE status = 'ACTIVE'").all() as Row[]).map(webhookFromRow);
      const insert = this.s.stmt(
        `INSERT OR IGNORE INTO webhook_deliveries (delivery_id, subscription_id, event_id, event_type, tenant_id, status, attempts, next_attempt_at, attempted_at, trace_id, trace_flags, traceparent_inbound_valid, replay_id)
         VALUES (?, ?, ?, ?, ?, 'PENDING', 0, ?, ?, ?, ?, ?, '')`,
      );
      for (const e of events) {
        const m = { event_type: e.event_type as string, category: e.category as string, tenant_id: e.tenant_id as string, scope: opt<string>(e.scope) };
        for (const sub of subs) {
          if (!subscriptionMatches(sub, m)) continue;
          insert.run(newDeliveryId(), sub.subscription_id, e.event_id, e.event_type, e.tenant_id, view.now, view.now, e.trace_id ?? null, e.trace_flags ?? null, e.trace_flags ? 1 : 0);
        }
      }
      const newLast = events[events.length - 1]!.seq as number;
      this.s.stmt("INSERT INTO dispatch_state (name, last_seq) VALUES ('fanout', ?) ON CONFLICT(name) DO UPDATE SET last_seq = excluded.last_seq").run(newLast);
      return events.length;
    });
  }

  claimDeliveries(owner: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
    return this.s.transact((view) => {
      const now = view.now;
      const rows = this.s
        .stmt(
          `UPDATE webhook_deliveries SET lease_owner = @owner, lease_until = @until
           WHERE delivery_id IN (
             SELECT delivery_id FROM webhook_deliveries
             WHERE status IN ('PENDING', 'RETRYING') AND next_attempt_at <= @now AND (lease_until IS NULL OR lease_until < @now)
             ORDER BY next_attempt_at LIMIT @limit)
           RETURNING *`,
        )
        .all({ owner, until: now + leaseMs, now, limit }) as Row[];
      const out: ClaimedDelivery[] = [];
      for (const row of rows) {
        const d = deliveryFromRow(row);
        const sub = this.s.stmt('SELECT * FROM webhook_subscriptions WHERE subscription_id = ?').get(d.subscription_id) as Row | undefined;
        const ev = this.s.stmt('SELECT body, request_id FROM events WHERE event_id = ?').get(d.event_id) as Row | undefined;
        if (!sub || !ev) {
          // Nothing to send any more: fail it now rather than retry forever.
          this.s
            .stmt("UPDATE webhook_deliveries SET status = 'FAILED', completed_at = ?, error_message = ?, lease_owner = NULL, lease_until = NULL WHERE delivery_id = ?")
            .run(now, !sub ? 'subscription not found' : 'event not found', d.delivery_id);
          continue;
        }
        out.push({ delivery: d, body: ev.body as string, request_id: opt(ev.request_id), subscription: webhookFromRow(sub) });
      }
      return out;
    });
  }

  completeDelivery(o: DeliveryOutcome): Promise<void> {
    return this.s.transact((view) => {
      const now = view.now;
      const row = this.s.stmt('SELECT * FROM webhook_deliveries WHERE delivery_id = ?').get(o.delivery_id) as Row | undefined;
      // A lost lease means another dispatcher took over: its outcome wins, ours is dropped.
      if (!row || row.lease_owner !== o.owner) return;
      const d = deliveryFromRow(row);
      const subRow = this.s.stmt('SELECT * FROM webhook_subscriptions WHERE subscription_id = ?').get(d.subscription_id) as Row | undefined;
      const sub = subRow ? webhookFromRow(subRow) : undefined;
      const attempts = d.attempts + 1;
      const common = { id: d.delivery_id, attempts, status_code: o.response_status ?? null, time: o.response_time_ms ?? null, error: o.error_message ?? null };
      if (o.ok) {
        this.s
          .stmt(
            `UPDATE webhook_deliveries SET status = 'SUCCESS', attempts = @attempts, completed_at = @now, response_status = @status_code,
               response_time_ms = @time, error_message = NULL, lease_owner = NULL, lease_until = NULL WHERE delivery_id = @id`,
          )
          .run({ ...common, now });
        if (sub) {
          this.s
            .stmt('UPDATE webhook_subscriptions SET consecutive_failures = 0, last_success_at = ?, last_triggered_at = ? WHERE subscription_id = ?')
            .run(now, now, sub.subscription_id);
        }
        return;
      }
      const policy = sub?.retry_policy;
      const exhausted = o.terminal || !policy || attempts > policy.max_retries;
      if (!exhausted) {
        this.s
          .stmt(
            `UPDATE webhook_deliveries SET status = 'RETRYING', attempts = @attempts, next_attempt_at = @next, response_status = @status_code,
               response_time_ms = @time, error_message = @error, lease_owner = NULL, lease_until = NULL WHERE delivery_id = @id`,
          )
          .run({ ...common, next: now + retryDelay(policy!, attempts) });
        if (sub) this.s.stmt('UPDATE webhook_subscriptions SET last_failure_at = ?, last_triggered_at = ? WHERE subscription_id = ?').run(now, now, sub.subscription_id);
        return;
      }
      this.s
        .stmt(
          `UPDATE webhook_deliveries SET status = 'FAILED', attempts = @attempts, completed_at = @now, response_status = @status_code,
             response_time_ms = @time, error_message = @error, lease_owner = NULL, lease_until = NULL WHERE delivery_id = @id`,
        )
        .run({ ...common, now });
      if (!sub) return;
      const failures = sub.consecutive_failures + 1;
      const ctx: OpContext = { actor: { type: 'system' }, traceId: d.trace_id, traceFlags: d.trace_flags };
      view.emit(
        {
          event_type: 'system.webhook_delivery_failed',
          tenant_id: '__system__',
          correlation_id: `webhook_delivery_failed:${d.delivery_id}`,
          data: {
            component: 'webhook-dispatcher',
            message: `Delivery of ${d.event_id} to ${sub.subscription_id} failed after ${attempts} attempt(s)`,
            severity: 'warning',
            details: { subscription_id: sub.subscription_id, delivery_id: d.delivery_id, event_id: d.event_id, subscription_tenant_id: sub.tenant_id, last_error: o.error_message ?? null, last_status: o.response_status ?? null },
          },
        },
        ctx,
      );
      // The spec disables a subscription once its consecutive failures exceed the threshold.
      const disable = sub.status === 'ACTIVE' && failures > sub.disable_after_failures;
      this.s
        .stmt('UPDATE webhook_subscriptions SET consecutive_failures = ?, last_failure_at = ?, last_triggered_at = ?, status = ?, updated_at = ? WHERE subscription_id = ?')
        .run(failures, now, now, disable ? 'DISABLED' : sub.status, disable ? now : (sub.updated_at ?? null), sub.subscription_id);
      if (disable) {
        view.emit(
          {
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
          },
          ctx,
        );
      }
    });
  }

  enqueueReplay(subscriptionId: string, eventIds: string[], replayId: string): Promise<number> {
    return this.s.transact((view) => {
      // The pending-deliveries partial index (deliveries_due) serves this check.
      const busy = this.s
        .stmt("SELECT 1 FROM webhook_deliveries WHERE status IN ('PENDING', 'RETRYING') AND subscription_id = ? AND replay_id <> '' LIMIT 1")
        .get(subscriptionId);
      if (busy) throw replayInProgress(subscriptionId);
      const insert = this.s.stmt(
        `INSERT OR IGNORE INTO webhook_deliveries (delivery_id, subscription_id, event_id, event_type, tenant_id, status, attempts, next_attempt_at, attempted_at, trace_id, trace_flags, traceparent_inbound_valid, replay_id)
         SELECT ?, ?, event_id, event_type, tenant_id, 'PENDING', 0, ?, ?, trace_id, trace_flags, CASE WHEN trace_flags IS NULL THEN 0 ELSE 1 END, ? FROM events WHERE event_id = ?`,
      );
      let n = 0;
      // Chronological order: the earliest event gets the earliest attempt time.
      eventIds.forEach((id, i) => {
        n += insert.run(newDeliveryId(), subscriptionId, view.now + i, view.now, replayId, id).changes;
      });
      return n;
    });
  }

  purgeEvents(eventRetentionMs: number, deliveryRetentionMs: number): Promise<void> {
    return this.s.transact((view) => {
      const fanout = (this.s.stmt("SELECT last_seq FROM dispatch_state WHERE name = 'fanout'").get() as Row | undefined)?.last_seq ?? 0;
      // Never purge an event the fan-out has not read yet.
      this.s.stmt('DELETE FROM events WHERE timestamp < ? AND seq <= ?').run(view.now - eventRetentionMs, fanout);
      this.s.stmt("DELETE FROM webhook_deliveries WHERE attempted_at < ? AND status IN ('SUCCESS', 'FAILED')").run(view.now - deliveryRetentionMs);
    });
  }
}
