/**
 * Abuse limits, all answered with the protocol's 429 LIMIT_EXCEEDED, `Retry-After` in
 * delta-seconds and `X-RateLimit-Reset` in Unix seconds. They guard the server, never budgets:
 * a throttled request is refused before its body is read and touches no ledger.
 *
 *  - per client address (before authentication, so it also covers bad keys and unknown routes);
 *  - per API key (after authentication; the admin key counts as one key);
 *  - repeated authentication failures per client address: past the limit, every request from
 *    that address is refused until the window ends, so keys cannot be guessed at speed.
 *
 * Health, readiness, metrics and the API docs are never limited. Counters live in this process,
 * in LRU maps (toad-cache, the store @fastify/rate-limit keeps them in); several processes
 * behind one balancer each apply them.
 *
 * The counting is the plugin's fixed window (counted from a client's first request in it; a
 * refused request counts too), done synchronously here: the plugin's `createRateLimit` check is
 * an async call that builds a promise, an argument array, a result object and Fastify's
 * routeOptions object on every request. With both limits on, that was about a fifth of the
 * server's CPU per request on light endpoints (decide: 130-142 against 105-116 µs per request
 * with the limits off, same build).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { LruMap } from 'toad-cache';
import type { Config } from '../config.js';
import { CyclesError } from '../ledger/errors.js';
import { authFailures, rateLimited } from './metrics.js';
import { routeOf } from '../http/route-of.js';

/** Most distinct clients tracked per limit; the least recently seen are forgotten first. */
export const MAX_TRACKED_CLIENTS = 10_000;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Operational routes (probes, metrics, docs) that no rate limit applies to. */
    ops?: boolean;
    /** An operational route that checks a credential itself: repeated failures still throttle it. */
    throttleAuth?: boolean;
  }
}

export class LimitExceeded extends CyclesError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    readonly resetAtSeconds: number,
    readonly limit: number,
  ) {
    super('LIMIT_EXCEEDED', message);
  }
}

/** Adds the throttling headers a 429 carries (the error handler sends the body). */
export function limitHeaders(reply: FastifyReply, e: LimitExceeded): void {
  reply.header('retry-after', String(e.retryAfterSeconds));
  reply.header('x-ratelimit-limit', String(e.limit));
  reply.header('x-ratelimit-remaining', '0');
  reply.header('x-ratelimit-reset', String(e.resetAtSeconds));
}

/**
 * Failed authentications per client address in fixed windows. Unlike RequestWindows (below),
 * which counts every request it sees, this one is checked on every request (`blockedUntil`) but
 * counts only failures (`fail`).
 */
export class AuthFailureThrottle {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The window's end (ms) when `client` is over the limit, else undefined. */
  blockedUntil(client: string): number | undefined {
    const w = this.windows.get(client);
    if (!w) return undefined;
    if (w.resetAt <= this.clock()) {
      this.windows.delete(client);
      return undefined;
    }
    return w.count >= this.limit ? w.resetAt : undefined;
  }

  fail(client: string): void {
    const now = this.clock();
    let w = this.windows.get(client);
    if (!w || w.resetAt <= now) {
      if (this.windows.size >= MAX_TRACKED_CLIENTS) this.evict(now);
      w = { count: 0, resetAt: now + this.windowMs };
    }
    w.count += 1;
    // Re-insert so the map stays in least-recently-failed order for eviction.
    this.windows.delete(client);
    this.windows.set(client, w);
  }

  private evict(now: number): void {
    for (const [k, w] of this.windows) if (w.resetAt <= now) this.windows.delete(k);
    while (this.windows.size >= MAX_TRACKED_CLIENTS) {
      const oldest = this.windows.keys().next().value;
      if (oldest === undefined) break;
      this.windows.delete(oldest);
    }
  }
}

/** Requests per client in fixed windows; the least recently seen clients are forgotten first. */
export class RequestWindows {
  private readonly windows = new LruMap<{ count: number; startedAt: number }>(MAX_TRACKED_CLIENTS);
  /** The limit as the header shows it, built once. */
  readonly maxHeader: string;

  constructor(
    readonly max: number,
    readonly windowMs: number,
  ) {
    this.maxHeader = String(max);
  }

  /** Counts one request of `client` at `now`; returns its window (count so far, start). */
  hit(client: string, now: number): { count: number; startedAt: number } {
    let w = this.windows.get(client);
    if (!w) {
      w = { count: 0, startedAt: now };
      this.windows.set(client, w);
    } else if (w.startedAt + this.windowMs <= now) {
      w.count = 0;
      w.startedAt = now;
    }
    w.count += 1;
    return w;
  }
}

const isOpsRoute = (req: FastifyRequest): boolean => routeOf(req).config?.ops === true;

function exceeded(kind: string, max: number, ttlMs: number, now: number): LimitExceeded {
  const retryAfter = Math.max(1, Math.ceil(ttlMs / 1000));
  return new LimitExceeded(`Rate limit exceeded (${kind}); retry after ${retryAfter} s`, retryAfter, Math.ceil((now + ttlMs) / 1000), max);
}

/**
 * Registers the limits as hooks. `beforeAuth` must run before the authentication hook and
 * `afterAuth` after it; the caller adds them in that order.
 */
export function setupLimits(config: Config): {
  beforeAuth: (req: FastifyRequest, reply: FastifyReply) => void;
  afterAuth: (req: FastifyRequest, reply: FastifyReply) => void;
  onResponse: (req: FastifyRequest, reply: FastifyReply) => void;
} {
  const window = config.rateLimitWindowMs;
  const perIp = config.rateLimitPerIp > 0 ? new RequestWindows(config.rateLimitPerIp, window) : undefined;
  const perKey = config.rateLimitPerKey > 0 ? new RequestWindows(config.rateLimitPerKey, window) : undefined;
  const throttle = config.authFailureLimit > 0 ? new AuthFailureThrottle(config.authFailureLimit, window) : undefined;

  const apply = (limit: RequestWindows | undefined, kind: 'ip' | 'key', client: string, reply: FastifyReply) => {
    if (!limit) return;
    const now = Date.now();
    const w = limit.hit(client, now);
    const ttl = w.startedAt + limit.windowMs - now;
    reply.header('x-ratelimit-limit', limit.maxHeader);
    reply.header('x-ratelimit-remaining', String(Math.max(0, limit.max - w.count)));
    reply.header('x-ratelimit-reset', String(Math.ceil((now + ttl) / 1000)));
    if (w.count > limit.max) {
      rateLimited.inc({ limit: kind });
      throw exceeded(kind === 'ip' ? 'requests per client address' : 'requests per API key', limit.max, ttl, now);
    }
  };

  return {
    beforeAuth(req, reply) {
      const ops = isOpsRoute(req);
      if (ops && routeOf(req).config?.throttleAuth !== true) return;
      if (throttle) {
        const until = throttle.blockedUntil(req.ip);
        if (until !== undefined) {
          rateLimited.inc({ limit: 'auth_failures' });
          const now = Date.now();
          throw new LimitExceeded(
            `Too many failed authentications from this address; retry after ${Math.max(1, Math.ceil((until - now) / 1000))} s`,
            Math.max(1, Math.ceil((until - now) / 1000)),
            Math.ceil(until / 1000),
            config.authFailureLimit,
          );
        }
      }
      if (!ops) apply(perIp, 'ip', `ip:${req.ip}`, reply);
    },
    afterAuth(req, reply) {
      const p = req.cycles.principal;
      if (!p || isOpsRoute(req)) return;
      apply(perKey, 'key', p.kind === 'tenant' ? `key:${p.keyId}` : 'admin', reply);
    },
    onResponse(req, reply) {
      if (reply.statusCode !== 401) return;
      authFailures.inc();
      throttle?.fail(req.ip);
    },
  };
}
