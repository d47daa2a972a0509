import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorBody } from './errors.js';

/**
 * The request timeout (CYCLES_REQUEST_TIMEOUT_MS): a request not answered in time gets 503 with
 * the protocol envelope. One timer checks every in-flight request a few times per timeout,
 * which costs a Map insert and delete per request; Fastify's own handlerTimeout builds an
 * AbortController and a DOMException per request, about a tenth of a small request's CPU.
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

/**
 * Installs the timer and the abort and close hooks; the caller calls track and forget from its
 * own onRequest and onResponse hooks (one hook per phase costs less than one per concern).
 */
export function installRequestTimeout(app: FastifyInstance, timeoutMs: number): RequestTimeout {
  const inFlight = new Map<FastifyRequest, { reply: FastifyReply; deadline: number }>();
  const tick = Math.min(1000, Math.max(20, Math.floor(timeoutMs / 4)));
  const timer = setInterval(() => {
    const now = Date.now();
    for (const [req, { reply, deadline }] of inFlight) {
      if (deadline > now) continue;
      inFlight.delete(req);
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
    inFlight.delete(req);
    done();
  });
  app.addHook('onClose', (_app, done) => {
    clearInterval(timer);
    done();
  });
  return {
    track(req, reply) {
      inFlight.set(req, { reply, deadline: Date.now() + timeoutMs });
    },
    forget(req) {
      inFlight.delete(req);
    },
  };
}
