import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import type { Config } from '../config.js';
import { CyclesError } from '../ledger/errors.js';
import type { Store } from '../store/types.js';
import type { OpContext } from '../events/model.js';
import { makeAuthenticator, type AuthSecrets, type Principal } from './auth.js';
import { errorBody, errorHandler } from './errors.js';
import { resolveRequestId, resolveTrace } from './trace.js';
import { registerRuntimeRoutes } from '../runtime/routes.js';
import { registerAdminRoutes } from '../admin/routes.js';
import { governanceHooks } from '../admin/audit.js';
import { registerHealthRoutes } from './health.js';
import { registerMetricsRoutes } from './metrics.js';
import { installRequestTimeout } from './timeout.js';
import type { StoreHealth } from '../ops/instrumented-store.js';
import type { ApiKeyCache } from '../security/key-cache.js';
import { setupLimits } from '../ops/limits.js';
import { deferredChildLogger } from '../ops/logging.js';
import { captureDecision, freshOutcome, makeObserver } from '../ops/observe.js';
import { registerOpenApi } from '../ops/openapi.js';
import type { Tracing } from '../ops/tracing.js';
import type { StoreOps } from '../store/ops.js';
import { registerEventRoutes } from '../events/routes.js';
import { registerWebhookRoutes, type WebhookDeps } from '../events/webhook-routes.js';
import { registerWebhookBulk } from '../events/webhook-bulk.js';
import { loadPrecompiled, serializerFactory, validatorFactory, type ValidatorFactory } from './validators.js';

declare module 'fastify' {
  interface FastifyInstance {
    cyclesSecrets: AuthSecrets;
  }
  interface FastifyRequest {
    cycles: {
      requestId: string;
      traceId: string;
      traceFlags: string | undefined;
      principal: Principal | undefined;
      /** request.routeOptions, read once (http/route-of.ts). */
      route: FastifyRequest['routeOptions'];
    };
  }
}

export interface AppDeps {
  config: Config;
  store: Store;
  secrets: AuthSecrets;
  /** The process logger, or false for none. */
  logger: FastifyBaseLogger | false;
  /** The one-line-per-request access log (ops/logging.ts); the request's logger when absent. */
  accessLog?: FastifyBaseLogger | undefined;
  /** Gauges and failure classification of the store (metrics, 503s). */
  storeOps: StoreOps;
  /** Store health as seen by traffic (readiness). */
  storeHealth?: StoreHealth | undefined;
  /** Present only when OTEL_EXPORTER_OTLP_ENDPOINT is set. */
  tracing?: Tracing | undefined;
  /** Version shown in the OpenAPI document. */
  version?: string | undefined;
  /**
   * API key records by hash (API_KEY_CACHE_TTL_MS); absent = a store lookup per request. The
   * store given here must clear it on key writes (instrumentStore's keyCache option).
   */
  keyCache?: ApiKeyCache | undefined;
  /** Webhook secrets, network policy and dispatcher nudge; absent = no webhook API. */
  webhooks?: WebhookDeps | undefined;
  /** How route schemas become validators; default: the build's precompiled ones (validators.ts). */
  buildValidator?: ValidatorFactory | undefined;
}

/** Headers a browser dashboard may send and read (CORS). */
const CORS_ALLOW_HEADERS = ['content-type', 'x-admin-api-key', 'x-cycles-api-key', 'x-idempotency-key', 'x-request-id', 'x-cycles-trace-id', 'traceparent'];
const CORS_EXPOSE_HEADERS = ['x-request-id', 'x-cycles-trace-id', 'x-cycles-tenant', 'retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'];

/** The request's correlation ids and actor, stamped on the events and audit rows it causes. */
export function opContext(req: FastifyRequest, onBehalfOf = false): OpContext {
  const p = req.cycles.principal;
  const actor: OpContext['actor'] =
    p?.kind === 'tenant'
      ? { type: 'api_key', key_id: p.keyId, source_ip: req.ip }
      : { type: onBehalfOf ? 'admin_on_behalf_of' : 'admin', source_ip: req.ip };
  return { requestId: req.cycles.requestId, traceId: req.cycles.traceId, traceFlags: req.cycles.traceFlags, actor };
}

export function tenantOf(req: FastifyRequest): string | undefined {
  const p = req.cycles.principal;
  return p?.kind === 'tenant' ? p.tenantId : undefined;
}

/** Nesting bound for request bodies: deep enough for any real metadata, far from stack limits. */
export const MAX_JSON_DEPTH = 64;

/** Depth of a parsed JSON value, computed iteratively and stopping once it passes `limit`. */
export function jsonDepth(value: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d > max) max = d;
    if (max > limit) return max;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const config = deps.config;
  const app = Fastify({
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: false }),
    // One line per request is written by the observer (ops/observe.ts), not by Fastify.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    // req.log is built only when something logs through it (ops/logging.ts).
    ...(deps.logger ? { childLoggerFactory: deferredChildLogger as unknown as NonNullable<FastifyServerOptions['childLoggerFactory']> } : {}),
    bodyLimit: config.bodyLimitBytes,
    // Slow clients get 408 after this long to send a request; slow handling gets 503 (http/timeout.ts).
    requestTimeout: config.requestTimeoutMs,
    // A hop count trusts that many proxies in front of the server.
    trustProxy: typeof config.trustProxy === 'number' ? ((_addr: string, hop: number) => hop < (config.trustProxy as number)) : config.trustProxy,
    // Request ids are the protocol's X-Request-Id, set in onRequest below.
    genReqId: (raw) => resolveRequestId(raw.headers['x-request-id']),
    ajv: {
      // Reject, never silently drop, unknown properties; never coerce body types.
      customOptions: {
        removeAdditional: false,
        coerceTypes: false,
        useDefaults: false,
        allErrors: false,
        // Compiling every route schema is a large part of start-up; Ajv's optimisation passes
        // (dead-code and constant folding of the generated source) take about a third of it and
        // change only the source text, not what it accepts: V8 optimises the result the same.
        code: { optimize: false },
      },
    },
    // Route validators from the build (http/validators.ts); Ajv loads only if one must be compiled.
    schemaController: { compilersFactory: { buildValidator: (deps.buildValidator ?? validatorFactory(loadPrecompiled())) as never, buildSerializer: serializerFactory() as never } },
    // Draining is answered below with the protocol envelope instead of Fastify's own 503 body.
    return503OnClosing: false,
    // Long ids must reach the schema (a 400 naming reservation_id), not the router's 414.
    routerOptions: { maxParamLength: 2048 },
    // Errors raised by the router before any hook runs still get the protocol envelope and ids.
    frameworkErrors: (error, req, rawReply) => {
      const reply = rawReply as unknown as FastifyReply;
      const trace = resolveTrace(req.headers['traceparent'], req.headers['x-cycles-trace-id']);
      const requestId = resolveRequestId(req.headers['x-request-id']);
      const tooLong = error.code === 'FST_ERR_MAX_PARAM_LENGTH';
      const message = !tooLong
        ? `Malformed request URL: ${error.message}`
        : req.url.startsWith('/v1/reservations/')
          ? 'reservation_id must be at most 128 characters'
          : 'A path parameter exceeds 2048 characters';
      reply
        .code(400)
        .header('x-request-id', requestId)
        .header('x-cycles-trace-id', trace.traceId)
        .send({ error: 'INVALID_REQUEST', message, request_id: requestId, trace_id: trace.traceId });
    },
  });

  app.decorate('cyclesSecrets', deps.secrets);
  app.decorateRequest('cycles', null as unknown as FastifyRequest['cycles']);
  app.decorateRequest('outcome', null as unknown as FastifyRequest['outcome']);
  // One hook per phase: each hook Fastify runs costs a step of its hook runner (and an async
  // hook a promise) on every request, so the server's concerns share them, in this order.
  // During a graceful shutdown, requests still arriving on open connections get 503 + Retry-After.
  let draining = false;
  app.addHook('preClose', (done) => {
    draining = true;
    done();
  });
  const timeout = installRequestTimeout(app, config.requestTimeoutMs);
  app.addHook('onRequest', (req, reply, done) => {
    const trace = resolveTrace(req.headers['traceparent'], req.headers['x-cycles-trace-id']);
    req.cycles = { requestId: req.id, traceId: trace.traceId, traceFlags: trace.traceFlags, principal: undefined, route: req.routeOptions };
    req.outcome = freshOutcome();
    reply.header('x-request-id', req.id);
    reply.header('x-cycles-trace-id', trace.traceId);
    if (draining) {
      done(new CyclesError('SERVICE_UNAVAILABLE', 'The server is shutting down; retry, another instance will answer'));
      return;
    }
    timeout.track(req, reply);
    done();
  });
  deps.tracing?.install(app);
  const limits = setupLimits(config);
  const authenticate = makeAuthenticator(deps.store, deps.secrets, Date.now, deps.keyCache);
  // API-key last_used_at and the audit log (admin/audit.ts).
  const governance = governanceHooks(app, deps);
  app.addHook('onRequest', async (req, reply) => {
    limits.beforeAuth(req, reply);
    await authenticate(req, reply);
    limits.afterAuth(req, reply);
    governance.authenticated(req);
  });
  app.addHook('onSend', async (req, reply, payload) => {
    await governance.beforeSend(req, reply, payload);
    const p = req.cycles?.principal;
    if (p?.kind === 'tenant' && reply.statusCode < 400) reply.header('x-cycles-tenant', p.tenantId);
    if (req.outcome) captureDecision(req, reply, payload);
    return payload;
  });
  const observer = makeObserver(config, deps.accessLog);
  app.addHook('onResponse', (req, reply, done) => {
    timeout.forget(req);
    limits.onResponse(req, reply);
    observer.onResponse(req, reply);
    done();
  });
  if (config.corsOrigins.length > 0) {
    // Loaded only when configured, like every optional plugin: start-up loads what it uses.
    const { default: cors } = await import('@fastify/cors');
    await app.register(cors, {
      origin: config.corsOrigins.includes('*') ? '*' : config.corsOrigins,
      methods: ['GET', 'POST', 'PATCH', 'PUT', 'DELETE'],
      allowedHeaders: CORS_ALLOW_HEADERS,
      exposedHeaders: CORS_EXPOSE_HEADERS,
      maxAge: 600,
    });
  }
  registerOpenApi(app, deps.version ?? '0.0.0');

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(errorBody(req, 'NOT_FOUND', `No route for ${req.method} ${req.url.split('?')[0]}`));
  });

  // Bodies must be JSON objects; anything else is a clear 400 rather than a parser crash.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') return done(null, undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      return done(new CyclesError('INVALID_REQUEST', `Malformed JSON body: ${(e as Error).message}`), undefined);
    }
    const depth = jsonDepth(parsed, MAX_JSON_DEPTH);
    if (depth > MAX_JSON_DEPTH) {
      return done(new CyclesError('INVALID_REQUEST', `JSON body nests deeper than ${MAX_JSON_DEPTH} levels`), undefined);
    }
    done(null, parsed);
  });

  registerHealthRoutes(app, deps.store, deps.storeHealth, deps.storeOps);
  registerMetricsRoutes(app, config, deps.storeOps);
  // A dispatcher-only process serves health and metrics, not the API.
  if (config.role !== 'dispatcher') {
    registerRuntimeRoutes(app, deps);
    registerAdminRoutes(app, deps);
    registerEventRoutes(app, deps);
    if (deps.webhooks) registerWebhookRoutes(app, deps, deps.webhooks);
    if (deps.webhooks) registerWebhookBulk(app, deps);
  }
  return app;
}
