/**
 * The webhook dispatcher: fans events out of the outbox into deliveries, leases due
 * deliveries, sends them signed, and records each outcome. It runs inside the server by
 * default or alone (`cycles serve --role dispatcher`); any number may share a store, since
 * fan-out is unique per (subscription, event) and each delivery is leased to one of them.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../store/types.js';
import { SOURCE } from './model.js';
import type { SecretBox } from './secrets.js';
import { newSpanId, send } from './sender.js';
import { sign } from './signature.js';
import type { WebhookNetworkPolicy } from './ssrf.js';
import type { ClaimedDelivery, DeliveryOutcome, WebhookRecord } from './types.js';

export interface DispatcherOptions {
  store: Store;
  box: SecretBox;
  /** The network policy in force for sends (the webhook security configuration). */
  policy: () => Promise<WebhookNetworkPolicy>;
  log: FastifyBaseLogger;
  /** Deliveries in flight at once. */
  concurrency: number;
  /** Idle poll interval. */
  pollMs: number;
  /** Per-attempt HTTP timeout. */
  timeoutMs: number;
  /** Called after each attempt (metrics). */
  onOutcome?: (d: ClaimedDelivery, o: DeliveryOutcome) => void;
}

export const USER_AGENT = `${SOURCE}-webhooks/0.1`;

/** Headers the subscription's custom headers may not override. */
const RESERVED = new Set(['content-type', 'content-length', 'user-agent', 'host', 'x-cycles-event-id', 'x-cycles-event-type', 'x-cycles-signature', 'x-cycles-trace-id', 'traceparent', 'x-request-id']);

/** Decrypts a subscription's custom headers; undecryptable headers are dropped, never sent garbled. */
export function customHeaders(box: SecretBox, sub: WebhookRecord): Record<string, string> {
  if (!sub.headers_sealed) return {};
  const all = JSON.parse(box.open(sub.headers_sealed, `headers:${sub.subscription_id}`)) as Record<string, string>;
  return Object.fromEntries(Object.entries(all).filter(([k]) => !RESERVED.has(k.toLowerCase())));
}

/** The full header set of one delivery, signature over the exact body bytes. */
export function deliveryHeaders(
  box: SecretBox,
  sub: WebhookRecord,
  body: string,
  e: { event_id: string; event_type: string; trace_id?: string | undefined; trace_flags?: string | undefined; request_id?: string | undefined },
): Record<string, string> {
  const traceId = e.trace_id ?? randomBytes(16).toString('hex');
  const headers: Record<string, string> = {
    ...customHeaders(box, sub),
    'content-type': 'application/json',
    'user-agent': USER_AGENT,
    'x-cycles-event-id': e.event_id,
    'x-cycles-event-type': e.event_type,
    'x-cycles-trace-id': traceId,
    traceparent: `00-${traceId}-${newSpanId()}-${e.trace_flags ?? '01'}`,
  };
  if (e.request_id) headers['x-request-id'] = e.request_id;
  // Fail closed: a subscription whose secret cannot be opened is never sent unsigned.
  if (!sub.secret_sealed) throw new Error('subscription has no signing secret');
  headers['x-cycles-signature'] = sign(body, box.open(sub.secret_sealed, `secret:${sub.subscription_id}`));
  return headers;
}

export function startDispatcher(opts: DispatcherOptions) {
  const owner = `dispatcher_${randomBytes(6).toString('hex')}`;
  // Every attempt ends within timeoutMs, so a lease of timeout + margin is never taken over while its
  // owner still works; a dispatcher that died gives its deliveries back after at most this long.
  const leaseMs = opts.timeoutMs + 5_000;
  let stopped = false;
  let inflight = 0;
  const pending = new Set<Promise<void>>();
  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;

  async function attempt(d: ClaimedDelivery, policy: WebhookNetworkPolicy): Promise<void> {
    let outcome: DeliveryOutcome;
    try {
      const headers = deliveryHeaders(opts.box, d.subscription, d.body, {
        event_id: d.delivery.event_id,
        event_type: d.delivery.event_type,
        trace_id: d.delivery.trace_id,
        trace_flags: d.delivery.trace_flags,
        request_id: d.request_id,
      });
      const r = await send({ url: d.subscription.url, body: d.body, headers, timeoutMs: opts.timeoutMs, policy });
      outcome = { delivery_id: d.delivery.delivery_id, owner, ok: r.ok, response_status: r.status, response_time_ms: r.timeMs, error_message: r.error, terminal: r.blocked };
    } catch (err) {
      outcome = { delivery_id: d.delivery.delivery_id, owner, ok: false, error_message: `not sent: ${(err as Error).message}`, terminal: true };
    }
    try {
      await opts.store.completeDelivery(outcome);
      opts.onOutcome?.(d, outcome);
    } catch (err) {
      // The lease expires and another pass retries the attempt; nothing is lost.
      opts.log.warn({ err, delivery_id: d.delivery.delivery_id }, 'could not record webhook outcome');
    }
  }

  async function tick(): Promise<boolean> {
    let busy = false;
    while (!stopped && (await opts.store.fanOutEvents(500)) === 500) busy = true;
    const room = opts.concurrency - inflight;
    if (room <= 0 || stopped) return true;
    // Read before claiming: a store that cannot answer fails this pass, never a delivery.
    const policy = await opts.policy();
    const claimed = await opts.store.claimDeliveries(owner, room, leaseMs);
    for (const d of claimed) {
      inflight++;
      const p = attempt(d, policy).finally(() => {
        inflight--;
        pending.delete(p);
        wake?.();
      });
      pending.add(p);
    }
    return busy || claimed.length === room;
  }

  const loop = async () => {
    while (!stopped) {
      let more = false;
      try {
        more = await tick();
      } catch (err) {
        opts.log.warn({ err }, 'webhook dispatch pass failed; will retry');
      }
      if (stopped) break;
      if (!more) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, opts.pollMs);
          timer.unref();
        });
        wake = undefined;
      }
    }
  };
  const running = loop();
  return {
    owner,
    /** Wakes the loop now (e.g. after a write that produced events). */
    kick(): void {
      wake?.();
    },
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearTimeout(timer);
      wake?.();
      await running;
      // In-flight attempts finish and record their outcome; anything unrecorded is re-leased later.
      await Promise.allSettled([...pending]);
    },
  };
}
