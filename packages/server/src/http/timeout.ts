import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LinkedList, type Linked } from '../linked-list.js';
import { errorBody } from './errors.js';

/**
 * The request timeout (CYCLES_REQUEST_TIMEOUT_MS): a request not answered in time gets 503 with
 * the protocol envelope. One timer checks the oldest in-flight requests a few times per timeout;
 * Fastify's own handlerTimeout builds an AbortController and a DOMException per request, about a
 * tenth of a small request's CPU.
 *
 * The work itself is not cancelled: a mutation may still commit after the 503, which is why the
 * message asks for a retry with the same idempotency key (the retry returns the outcome).
 */
export interface RequestTimeout {
  /** Starts the clock of a request (from the server's first onRequest hook). */
  track(req: FastifyRequest, reply: FastifyReply): void;
  /** The request was answered (from the server's onResponse hook). */
  forget(req: FastifyRequest): void;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's place in the timeout's in-flight list while it is tracked. */
    inFlight: InFlightEntry | null;
  }
}

export interface InFlightEntry extends Linked<InFlightEntry> {
  req: FastifyRequest | null;
  reply: FastifyReply | null;
  /** performance.now() by which the request must have been answered. */
  deadline: number;
}

/**
 * The in-flight requests, oldest first: with one timeout for all, that is also deadline order,
 * so a check stops at the first request still in time. A linked list, not a Map: a Map with an
 * insert and a delete per request kept about 2 MB of finished requests per young collection
 * alive (src/linked-list.ts says how).
 */
export class InFlightList {
  private readonly list = new LinkedList<InFlightEntry>();

  get size(): number {
    return this.list.size;
  }

  add(req: FastifyRequest, reply: FastifyReply, deadline: number): InFlightEntry {
    return this.list.push({ req, reply, deadline, prev: null, next: null });
  }

  remove(entry: InFlightEntry): void {
    // An entry already removed has no request left; removing it twice must not unlink others.
    if (entry.req === null) return;
    this.list.remove(entry);
    entry.req = entry.reply = null;
  }

  /** Removes and returns the oldest entry if its deadline has passed at `now`. */
  shiftExpired(now: number): { req: FastifyRequest; reply: FastifyReply } | undefined {
    const first = this.list.head;
    if (!first || first.deadline > now) return undefined;
    const due = { req: first.req!, reply: first.reply! };
    this.remove(first);
    return due;
  }
}

/**
 * Installs the timer and the abort and close hooks; the caller calls track and forget from its
 * own onRequest and onResponse hooks (one hook per phase costs less than one per concern).
 */
export function installRequestTimeout(app: FastifyInstance, timeoutMs: number): RequestTimeout {
  const inFlight = new InFlightList();
  const tick = Math.min(1000, Math.max(20, Math.floor(timeoutMs / 4)));
  app.decorateRequest('inFlight', null);
  const forget = (req: FastifyRequest) => {
    if (req.inFlight) {
      inFlight.remove(req.inFlight);
      req.inFlight = null;
    }
  };
  const timer = setInterval(() => {
    // The monotonic clock: a wall-clock step must neither expire every request nor none.
    const now = performance.now();
    for (let due = inFlight.shiftExpired(now); due; due = inFlight.shiftExpired(now)) {
      const { req, reply } = due;
      req.inFlight = null;
      if (reply.sent || reply.raw.headersSent) continue;
      req.log.warn({ timeout_ms: timeoutMs, route: req.routeOptions.url }, 'request timed out');
      reply
        .code(503)
        .header('retry-after', '1')
        .send(errorBody(req, 'INTERNAL_ERROR', 'The request timed out; it may still complete, retry with the same idempotency key'));
    }
  }, tick);
  timer.unref();
  app.addHook('onRequestAbort', (req, done) => {
    forget(req);
    done();
  });
  app.addHook('onClose', (_app, done) => {
    clearInterval(timer);
    done();
  });
  return {
    track(req, reply) {
      req.inFlight = inFlight.add(req, reply, performance.now() + timeoutMs);
    },
    forget,
  };
}
