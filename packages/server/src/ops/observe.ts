/**
 * What each request leaves behind once answered: one latency observation by route and status,
 * the domain counter of its protocol outcome, and one structured log line. Outcomes are derived
 * from the route, the status, the protocol error code (set where the ErrorResponse is built) and,
 * for reserve and decide, the decision in the reply; replays are told by sendOp.
 */
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { EventRecord } from '../events/model.js';
import {
  commitOutcomes,
  decideOutcomes,
  domainEvents,
  eventOutcomes,
  extendOutcomes,
  httpRequestDuration,
  idempotentReplays,
  overdraftIncurred,
  overLimitEntered,
  releaseOutcomes,
  reserveOutcomes,
  webhookDeliveries,
  webhookDeliveryDuration,
} from './metrics.js';
import { routeOf } from '../http/route-of.js';

/** Per-request facts gathered on the way for the observer. */
export interface RequestOutcome {
  /** Protocol error code of an ErrorResponse, when one was sent. */
  errorCode: string | undefined;
  /** The reply was an idempotent replay of an earlier outcome. */
  replayed: boolean;
  decision: string | undefined;
  reason: string | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    outcome: RequestOutcome;
  }
}

/** Error codes that mean the request never reached the ledger (auth, validation, throttling). */
const NOT_DOMAIN = new Set(['INVALID_REQUEST', 'UNAUTHORIZED', 'FORBIDDEN', 'INSUFFICIENT_PERMISSIONS', 'LIMIT_EXCEEDED']);

type Operation = 'reserve' | 'decide' | 'commit' | 'release' | 'extend' | 'event';

const OPERATIONS: Record<string, Operation> = {
  'POST /v1/reservations': 'reserve',
  'POST /v1/decide': 'decide',
  'POST /v1/reservations/:reservation_id/commit': 'commit',
  'POST /v1/reservations/:reservation_id/release': 'release',
  'POST /v1/reservations/:reservation_id/extend': 'extend',
  'POST /v1/events': 'event',
};

const DECISION = /"decision":"([A-Z_]+)"/;
const REASON = /"reason_code":"([A-Za-z0-9_.:-]{1,128})"/;

/** Called by sendOp: the store answered from an idempotency record. */
export function noteReplay(req: FastifyRequest, replayed: boolean): void {
  if (req.outcome) req.outcome.replayed = replayed;
}

/** Called where an ErrorResponse is built. */
export function noteErrorCode(req: FastifyRequest, code: string): void {
  if (req.outcome) req.outcome.errorCode = code;
}

export function freshOutcome(): RequestOutcome {
  return { errorCode: undefined, replayed: false, decision: undefined, reason: undefined };
}

function operationOf(req: FastifyRequest): Operation | undefined {
  return OPERATIONS[`${req.method} ${routeOf(req).url ?? ''}`];
}

/** onSend: reserve and decide tell their decision only in the reply body. */
export function captureDecision(req: FastifyRequest, reply: FastifyReply, payload: unknown): void {
  if (reply.statusCode !== 200 || typeof payload !== 'string') return;
  const op = operationOf(req);
  if (op !== 'reserve' && op !== 'decide') return;
  const head = payload.length > 2048 ? payload.slice(0, 2048) : payload;
  const decision = DECISION.exec(head)?.[1];
  req.outcome.decision = decision;
  // Only a denial carries a reason_code; an allowing reply (most of them) is not scanned for one.
  req.outcome.reason = decision === 'DENY' ? REASON.exec(head)?.[1] : undefined;
}

function tenantOf(req: FastifyRequest): string | undefined {
  const p = req.cycles?.principal;
  return p?.kind === 'tenant' ? p.tenantId : p?.kind === 'admin' ? 'admin' : undefined;
}

function countDomain(req: FastifyRequest, status: number, tenantLabel: boolean): void {
  const op = operationOf(req);
  if (!op) return;
  const o = req.outcome;
  if (o.errorCode !== undefined && NOT_DOMAIN.has(o.errorCode)) return;
  const tenant = tenantLabel ? (tenantOf(req) ?? 'none') : undefined;
  const t = tenant === undefined ? {} : { tenant };
  if (o.replayed) {
    idempotentReplays.inc({ operation: op, ...t });
    return;
  }
  const failed = status >= 400;
  const code = status === 503 ? 'UNAVAILABLE' : (o.errorCode ?? (failed ? `HTTP_${status}` : 'OK'));
  switch (op) {
    case 'reserve':
    case 'decide': {
      let decision: string;
      let reason: string;
      if (!failed) {
        decision = o.decision ?? 'ALLOW';
        reason = o.reason ?? 'OK';
      } else {
        // A live denial is a 409 carrying the reason as its error code.
        decision = status === 409 ? 'DENY' : 'ERROR';
        reason = code;
      }
      if (op === 'reserve') {
        const dry = (req.body as { dry_run?: unknown } | undefined)?.dry_run === true;
        reserveOutcomes.inc({ decision, reason, dry_run: String(dry), ...t });
      } else {
        decideOutcomes.inc({ decision, reason, ...t });
      }
      return;
    }
    case 'commit':
      commitOutcomes.inc({ outcome: code, ...t });
      return;
    case 'release':
      releaseOutcomes.inc({ outcome: code, actor: req.cycles?.principal?.kind === 'admin' ? 'admin_on_behalf_of' : 'tenant', ...t });
      return;
    case 'extend':
      extendOutcomes.inc({ outcome: code, ...t });
      return;
    case 'event':
      eventOutcomes.inc({ outcome: code, ...t });
      return;
  }
}

export interface Observer {
  onResponse(req: FastifyRequest, reply: FastifyReply): void;
}

/**
 * `access` writes the per-request line (falls back to the request's logger). Histogram children
 * are cached per (method, route, status): label hashing is the dominant cost of an observation.
 */
export function makeObserver(config: Config, access?: FastifyBaseLogger): Observer {
  const tenantLabel = config.metricsTenantLabel;
  const timers = new Map<string, { observe(v: number): void }>();
  return {
    onResponse(req, reply) {
      const status = reply.statusCode;
      const route = routeOf(req).url ?? 'unmatched';
      const key = `${req.method} ${status} ${route}`;
      let timer = timers.get(key);
      if (!timer) {
        timer = httpRequestDuration.labels(req.method, route, String(status));
        // Bounded: routes are templates and statuses few; unmatched paths share one label.
        if (timers.size < 10_000) timers.set(key, timer);
      }
      timer.observe(reply.elapsedTime / 1000);
      if (req.outcome) countDomain(req, status, tenantLabel);
      const log = access ?? req.log;
      // At LOG_LEVEL=warn and above the line would be dropped: do not build it.
      const level = status >= 500 ? 'error' : 'info';
      if ((log as { isLevelEnabled?: (l: string) => boolean }).isLevelEnabled?.(level) === false) return;
      const p = req.cycles?.principal;
      const line: Record<string, unknown> = {
        request_id: access ? req.cycles?.requestId : undefined,
        trace_id: req.cycles?.traceId,
        tenant: p?.kind === 'tenant' ? p.tenantId : undefined,
        key_id: p?.kind === 'tenant' ? p.keyId : undefined,
        admin: p?.kind === 'admin' ? true : undefined,
        method: req.method,
        route,
        path: req.url.split('?', 1)[0],
        status,
        error: req.outcome?.errorCode,
        replayed: req.outcome?.replayed || undefined,
        duration_ms: Math.round(reply.elapsedTime * 1000) / 1000,
        ip: req.ip,
      };
      log[level](line, 'request');
    },
  };
}

/** The dispatcher's report of each delivery attempt (its onOutcome): delivered, failed (will retry), exhausted, blocked. */
export function countWebhookOutcome(
  d: { delivery: { attempts: number }; subscription: { retry_policy?: { max_retries: number } | undefined } },
  o: { ok: boolean; terminal?: boolean | undefined; response_time_ms?: number | undefined },
): void {
  const attempts = d.delivery.attempts + 1;
  const outcome = o.ok ? 'delivered' : o.terminal ? 'blocked' : attempts > (d.subscription.retry_policy?.max_retries ?? 0) ? 'exhausted' : 'failed';
  webhookDeliveries.inc({ outcome });
  if (o.response_time_ms !== undefined) webhookDeliveryDuration.observe({ outcome }, o.response_time_ms / 1000);
}

/** The store's report of what each committed mutation wrote: the domain-event counters. */
export function countCommittedEvents(tenantLabel: boolean): (events: readonly EventRecord[]) => void {
  return (events) => {
    for (const e of events) {
      domainEvents.inc({ event_type: e.event_type });
      const t = tenantLabel ? { tenant: e.tenant_id } : {};
      if (e.event_type === 'budget.debt_incurred') overdraftIncurred.inc(t);
      else if (e.event_type === 'budget.over_limit_entered') overLimitEntered.inc(t);
    }
  };
}
