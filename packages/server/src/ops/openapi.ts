/**
 * The OpenAPI document of this server's own API, generated from the registered routes and their
 * request schemas (@fastify/swagger, dynamic mode), served at /openapi.json with an interactive
 * page at /docs. Summaries, tags, security and response shapes are added here at document time
 * only, so they never change how a request is validated or a reply serialised.
 *
 * Nothing of it is needed to serve the API, so none of it runs at start-up: the routes are only
 * recorded as they are registered, and the first request for the document or the page loads
 * @fastify/swagger and @fastify/swagger-ui (about a hundred modules) into a private Fastify
 * instance that replays those routes. /openapi.json and /docs answer from that instance.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type RouteOptions } from 'fastify';
import type { RouteAuth } from '../http/auth.js';
import { ERROR_STATUS } from '../ledger/errors.js';

interface Doc {
  summary: string;
  tag: string;
  /** Success status and what it returns. */
  ok?: [number, string];
  description?: string;
}

/** Route docs by "METHOD url"; routes not listed here still appear, under their path's tag. */
const DOCS: Record<string, Doc> = {
  'POST /v1/reservations': { tag: 'runtime', summary: 'Reserve an estimate on every budgeted scope (or dry-run)', ok: [200, 'ReservationCreateResponse'] },
  'POST /v1/decide': { tag: 'runtime', summary: 'Decide without holding anything', ok: [200, 'DecisionResponse'] },
  'GET /v1/reservations': { tag: 'runtime', summary: 'List reservations (tenant key, or admin key with ?tenant=)', ok: [200, 'ReservationListResponse'] },
  'GET /v1/reservations/:reservation_id': { tag: 'runtime', summary: 'Get one reservation', ok: [200, 'ReservationDetail'] },
  'POST /v1/reservations/:reservation_id/commit': { tag: 'runtime', summary: 'Commit the actual cost; the rest of the hold is released', ok: [200, 'CommitResponse'] },
  'POST /v1/reservations/:reservation_id/release': { tag: 'runtime', summary: 'Release the whole hold', ok: [200, 'ReleaseResponse'] },
  'POST /v1/reservations/:reservation_id/extend': { tag: 'runtime', summary: 'Extend the reservation TTL', ok: [200, 'ReservationExtendResponse'] },
  'POST /v1/events': { tag: 'runtime', summary: 'Record usage without a reservation (direct debit)', ok: [201, 'EventCreateResponse'] },
  'GET /v1/balances': { tag: 'runtime', summary: 'Balances of the budgets matching a subject filter', ok: [200, 'BalanceResponse'] },
  'POST /v1/admin/tenants': { tag: 'governance', summary: 'Create a tenant (200 when it already exists with the same name)', ok: [201, 'Tenant'] },
  'GET /v1/admin/tenants': { tag: 'governance', summary: 'List tenants', ok: [200, 'TenantListResponse'] },
  'GET /v1/admin/tenants/:tenant_id': { tag: 'governance', summary: 'Get a tenant', ok: [200, 'Tenant'] },
  'PATCH /v1/admin/tenants/:tenant_id': { tag: 'governance', summary: 'Update, suspend or close a tenant', ok: [200, 'Tenant'] },
  'POST /v1/admin/api-keys': { tag: 'governance', summary: 'Create an API key (the secret is returned once)', ok: [201, 'ApiKeyCreateResponse'] },
  'GET /v1/admin/api-keys': { tag: 'governance', summary: 'List API keys (never their secrets)', ok: [200, 'ApiKeyListResponse'] },
  'DELETE /v1/admin/api-keys/:key_id': { tag: 'governance', summary: 'Revoke an API key', ok: [200, 'ApiKey'] },
  'POST /v1/admin/budgets': { tag: 'governance', summary: 'Create a budget at a scope in one unit', ok: [201, 'BudgetLedger'] },
  'GET /v1/admin/budgets': { tag: 'governance', summary: 'List budgets', ok: [200, 'BudgetListResponse'] },
  'GET /v1/admin/budgets/lookup': { tag: 'governance', summary: 'Get the budget at a scope and unit', ok: [200, 'BudgetLedger'] },
  'POST /v1/admin/budgets/fund': { tag: 'governance', summary: 'Fund a budget: credit, debit, reset, repay debt', ok: [200, 'BudgetFundingResponse'] },
  'GET /v1/auth/introspect': { tag: 'governance', summary: 'Who the presented key is and what it may do', ok: [200, 'AuthIntrospectResponse'] },
  'GET /healthz': { tag: 'operations', summary: 'Liveness: the process serves requests', ok: [200, 'Health'] },
  'GET /readyz': { tag: 'operations', summary: 'Readiness: the store answers and accepts writes (503 when not)', ok: [200, 'Health'] },
  'GET /actuator/health/liveness': { tag: 'operations', summary: 'Liveness (reference-compatible path)', ok: [200, 'Health'] },
  'GET /actuator/health/readiness': { tag: 'operations', summary: 'Readiness (reference-compatible path)', ok: [200, 'Health'] },
  'GET /metrics': { tag: 'operations', summary: 'Prometheus metrics (text exposition format)', ok: [200, 'Prometheus text'] },
  'GET /actuator/prometheus': { tag: 'operations', summary: 'Prometheus metrics (reference-compatible path)', ok: [200, 'Prometheus text'] },
  'GET /openapi.json': { tag: 'operations', summary: 'This document', ok: [200, 'OpenAPI 3.1 document'] },
};

const errorResponse = {
  type: 'object',
  description: 'The protocol ErrorResponse',
  required: ['error', 'message', 'request_id'],
  properties: {
    error: { type: 'string', enum: Object.keys(ERROR_STATUS).filter((c) => c !== 'SERVICE_UNAVAILABLE') },
    message: { type: 'string' },
    request_id: { type: 'string' },
    trace_id: { type: 'string', pattern: '^[0-9a-f]{32}$' },
    details: { type: 'object', additionalProperties: true },
  },
};

function tagOf(url: string): string {
  if (url.startsWith('/v1/admin') || url.startsWith('/v1/auth')) return 'governance';
  if (url.startsWith('/v1/')) return 'runtime';
  return 'operations';
}

function securityOf(auth: RouteAuth['auth'] | undefined): Array<Record<string, string[]>> {
  switch (auth) {
    case 'tenant':
      return [{ ApiKeyAuth: [] }];
    case 'admin':
      return [{ AdminKeyAuth: [] }];
    case 'either':
      return [{ ApiKeyAuth: [] }, { AdminKeyAuth: [] }];
    default:
      return [];
  }
}

/** What the document needs of a route, recorded when the route is registered. */
interface RecordedRoute {
  method: RouteOptions['method'];
  url: string;
  schema: RouteOptions['schema'];
  config: RouteOptions['config'];
}

const DOCS_PREFIX = '/docs';
/** The page's own paths (@fastify/swagger-ui under DOCS_PREFIX); other /docs paths stay 404. */
const DOCS_PATHS = [DOCS_PREFIX, `${DOCS_PREFIX}/`, `${DOCS_PREFIX}/json`, `${DOCS_PREFIX}/yaml`, `${DOCS_PREFIX}/static/*`];
/** Per-connection headers of the private instance's reply; the real connection sets its own. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'date']);

const isDocsUrl = (url: string) => url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`);

/** The private instance: the documentation plugins over a replay of the recorded routes. */
async function buildDocsApp(routes: readonly RecordedRoute[], version: string): Promise<FastifyInstance> {
  const [{ default: swagger }, { default: swaggerUi }] = await Promise.all([import('@fastify/swagger'), import('@fastify/swagger-ui')]);
  const docs = Fastify({ logger: false });
  // The replayed routes are never reached (only the page's paths are forwarded here), so their
  // schemas are documented, not compiled: the application validated them when it started.
  docs.setValidatorCompiler(() => () => true);
  docs.setSerializerCompiler(() => (data) => JSON.stringify(data));
  await docs.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Cycles for TypeScript',
        version,
        description:
          'Budget authority for AI agents speaking the Cycles protocol. Every error is an ErrorResponse carrying request_id and trace_id; ' +
          '429 LIMIT_EXCEEDED carries Retry-After (seconds) and X-RateLimit-Reset (Unix seconds); 503 means the store is unavailable and nothing was written.',
      },
      components: {
        securitySchemes: {
          ApiKeyAuth: { type: 'apiKey', in: 'header', name: 'X-Cycles-API-Key' },
          AdminKeyAuth: { type: 'apiKey', in: 'header', name: 'X-Admin-API-Key' },
        },
      },
      tags: [
        { name: 'runtime', description: 'The protocol runtime plane: reserve, commit, release, extend, decide, events, balances' },
        { name: 'governance', description: 'Tenants, API keys, budgets and funding' },
        { name: 'events', description: 'The event feed and webhooks' },
        { name: 'operations', description: 'Health, readiness, metrics and this document' },
      ],
    },
    hideUntagged: false,
    transform: ({ schema, url, route }) => {
      const method = Array.isArray(route.method) ? route.method[0] : route.method;
      const doc = DOCS[`${method} ${url}`];
      const config = (route.config ?? {}) as Partial<RouteAuth>;
      const out: Record<string, unknown> = { ...(schema ?? {}) };
      out.tags = [doc?.tag ?? tagOf(url)];
      if (doc) out.summary = doc.summary;
      if (doc?.description) out.description = doc.description;
      const security = securityOf(config.auth);
      out.security = security;
      // Who may call it, machine-readable: the key kind and the permission a tenant key needs.
      out['x-cycles-auth'] = config.auth ?? 'public';
      if (config.permission) out['x-cycles-permission'] = config.permission;
      if (!out.response) {
        const [okStatus, okDesc] = doc?.ok ?? [200, 'Success'];
        const response: Record<string, unknown> = { [okStatus]: { description: okDesc, type: okDesc === 'Prometheus text' ? 'string' : 'object', additionalProperties: true } };
        const errors = security.length > 0 ? [400, 401, 403, 404, 409, 429, 500, 503] : [429, 500, 503];
        for (const status of errors) response[status] = { ...errorResponse, description: `ErrorResponse (${status})` };
        out.response = response;
      }
      return { schema: out as typeof schema, url };
    },
  });
  await docs.register(swaggerUi, { routePrefix: DOCS_PREFIX, staticCSP: true });
  const unreachable = async () => {
    throw new Error('documentation only');
  };
  for (const r of routes) docs.route({ method: r.method, url: r.url, schema: r.schema, config: r.config, handler: unreachable });
  await docs.ready();
  return docs;
}

export function registerOpenApi(app: FastifyInstance, version: string): void {
  const routes: RecordedRoute[] = [];
  app.addHook('onRoute', (route) => {
    // HEAD twins of GET routes are left out, as @fastify/swagger does by default.
    if (route.method === 'HEAD' || isDocsUrl(route.url)) return;
    routes.push({ method: route.method, url: route.url, schema: route.schema, config: route.config });
  });
  let docsApp: Promise<FastifyInstance> | undefined;
  // Built once, on first use, when every route is registered; a failed build is retried.
  const docs = () =>
    (docsApp ??= buildDocsApp(routes, version).catch((err: unknown) => {
      docsApp = undefined;
      throw err;
    }));
  // The document and the page are operational: never rate limited, never authenticated.
  const config = { ops: true };
  app.get('/openapi.json', { config }, async () => (await docs()).swagger());
  const forward = async (req: FastifyRequest, reply: FastifyReply) => {
    // Always a GET: for HEAD, Fastify sends this route's headers (the full length) without the body.
    const res = await (await docs()).inject({ method: 'GET', url: req.url, headers: req.headers });
    const missing = res.statusCode === 404;
    for (const [name, value] of Object.entries(res.headers)) {
      if (value === undefined || HOP_HEADERS.has(name)) continue;
      if (missing && (name === 'content-type' || name === 'content-length')) continue;
      reply.header(name, value);
    }
    // A missing file gets this server's own 404 envelope, as any unknown path does.
    if (missing) return reply.callNotFound();
    reply.code(res.statusCode);
    return res.rawPayload.length > 0 ? reply.send(res.rawPayload) : reply.send();
  };
  for (const url of DOCS_PATHS) app.get(url, { config }, forward);
}
