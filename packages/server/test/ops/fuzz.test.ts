/**
 * Fuzzing every endpoint (the routes listed in our own /openapi.json, plus random paths) with
 * fast-check generated bodies, headers, query strings and path parameters, under every kind of
 * credential. Two properties: the server never answers 5xx, and a rejected request (4xx) never
 * changes any ledger (budgets of every tenant, reservations). Seeded: FC_SEED reruns a failure.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { ADMIN_KEY, idem, NO_LIMITS, provision, reserveBody, show, startOps, type OpsServer, type Tenant } from './support.js';

const SEED = Number(process.env.FC_SEED ?? Date.now() % 1_000_000);
const RUNS_PER_ROUTE = Number(process.env.FUZZ_RUNS ?? 25);

let s: OpsServer;
let a: Tenant;
let b: Tenant;
let reservationId: string;
let routes: Array<{ method: string; path: string }>;

before(async () => {
  s = await startOps({ ...NO_LIMITS });
  a = await provision(s.client, [{ at: '', allocated: 1_000_000, overdraft: 10_000 }, { at: 'workspace:w1', allocated: 100_000 }]);
  b = await provision(s.client, [{ at: '', allocated: 1_000 }]);
  const r = await s.client.post('/v1/reservations', reserveBody(a.id, 500, { subject: { tenant: a.id, workspace: 'w1' } }), { key: a.key });
  assert.equal(r.status, 200, show(r));
  reservationId = r.body.reservation_id;
  const doc = (await s.client.get('/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
  routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => ({ method: m.toUpperCase(), path })));
  // Destructive routes last, so the others are fuzzed against a live tenant.
  routes.sort((x, y) => Number(x.method === 'PATCH' || x.method === 'DELETE') - Number(y.method === 'PATCH' || y.method === 'DELETE'));
});
after(() => s.close());

/** Every ledger of every tenant, read straight from the store. */
async function ledgers(): Promise<string> {
  const budgets = await s.server.store.listBudgets({ limit: 100_000 });
  const rows: unknown[] = budgets.rows.map((x) => [x.scope, x.unit, x.allocated, x.reserved, x.spent, x.debt, x.overdraft_limit, x.is_over_limit, x.status]);
  for (const t of [a.id, b.id]) {
    const page = await s.server.store.listReservations({ tenantId: t, subject: {}, sortBy: 'reservation_id', sortDir: 'asc', limit: 100_000 });
    rows.push(page.rows.map((r) => [r.reservation_id, r.status, r.reserved, r.committed, r.expires_at_ms, r.extension_count]));
  }
  return JSON.stringify(rows);
}

const ascii = (max = 40) => fc.string({ unit: 'grapheme-ascii', maxLength: max });

/** Valid-looking bodies to mutate, by route. */
function template(method: string, path: string): Record<string, unknown> {
  const key = idem('fz');
  if (path === '/v1/reservations' && method === 'POST') return reserveBody(a.id, 10);
  if (path === '/v1/decide') return reserveBody(a.id, 10);
  if (path === '/v1/events') return { idempotency_key: key, subject: { tenant: a.id }, action: { kind: 'x', name: 'y' }, actual: { unit: 'TOKENS', amount: 3 } };
  if (path.endsWith('/commit')) return { idempotency_key: key, actual: { unit: 'TOKENS', amount: 5 } };
  if (path.endsWith('/release')) return { idempotency_key: key, reason: 'fuzz' };
  if (path.endsWith('/extend')) return { idempotency_key: key, extend_by_ms: 1000 };
  if (path === '/v1/admin/tenants') return { tenant_id: `fz-${key.slice(-8).toLowerCase()}`, name: 'fuzz' };
  if (path === '/v1/admin/api-keys') return { tenant_id: a.id, name: 'fuzz' };
  if (path === '/v1/admin/budgets') return { tenant_id: a.id, scope: `tenant:${a.id}/workspace:fz`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 10 } };
  if (path === '/v1/admin/budgets/fund') return { operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 }, idempotency_key: key };
  return { name: 'fuzz', idempotency_key: key };
}

function bodyArb(method: string, path: string): fc.Arbitrary<string | undefined> {
  const t = template(method, path);
  const keys = Object.keys(t);
  const mutated = fc.oneof(
    fc.constant(t),
    fc.tuple(fc.nat(), fc.anything({ maxDepth: 3 })).map(([i, v]) => ({ ...t, [keys[i % keys.length]!]: v })),
    fc.nat().map((i) => {
      const c: Record<string, unknown> = { ...t };
      delete c[keys[i % keys.length]!];
      return c;
    }),
    fc.tuple(ascii(12), fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => ({ ...t, [k]: v })),
    fc.jsonValue({ maxDepth: 4 }),
    fc.constantFrom({ amount: Number.MAX_SAFE_INTEGER + 2 }, { ...t, idempotency_key: 'x'.repeat(300) }, { ...t, subject: { tenant: b.id } }),
  );
  return fc.oneof(
    { weight: 6, arbitrary: mutated.map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
    { weight: 1, arbitrary: fc.constantFrom('', '{', '{"a":', '[]', 'null', '"x"', '{}'.padStart(70_000, ' ')) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
}

const paramArb = () =>
  fc.oneof(
    fc.constant(reservationId),
    fc.constant(a.id),
    fc.constant(b.id),
    fc.constant(a.keyId),
    ascii(20).map((x) => encodeURIComponent(x)),
    fc.string({ unit: 'binary', maxLength: 10 }).map((x) => encodeURIComponent(x)),
    fc.constant('x'.repeat(300)),
    fc.constant('..%2F..%2Fetc%2Fpasswd'),
  );

const QUERY_NAMES = ['limit', 'cursor', 'tenant', 'tenant_id', 'status', 'sort_by', 'sort_dir', 'from', 'to', 'scope', 'unit', 'include', 'include_children', 'workspace', 'agent', 'idempotency_key', 'scope_prefix', 'reason', 'event_type', 'category', 'search'];
const queryArb = () =>
  fc
  .array(
    fc.tuple(
      fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...QUERY_NAMES) }, { weight: 1, arbitrary: ascii(8) }),
      fc.oneof(ascii(30), fc.integer().map(String), fc.constantFrom('-1', '0', '201', '1e3', a.id, b.id, 'TOKENS', 'ACTIVE', 'true', '2026-01-01T00:00:00Z', 'eyJ2IjoxfQ')),
    ),
    { maxLength: 5 },
  )
  .map((pairs) => (pairs.length ? '?' + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&') : ''));

const credArb = () =>
  fc.constantFrom<Record<string, string>>(
    {},
    { 'x-cycles-api-key': a.key },
    { 'x-cycles-api-key': b.key },
    { 'x-admin-api-key': ADMIN_KEY },
    { 'x-cycles-api-key': a.key, 'x-admin-api-key': ADMIN_KEY },
    { 'x-cycles-api-key': 'cyc_live_' + 'A'.repeat(32) },
    { 'x-admin-api-key': 'not-the-admin-key-0000' },
    { authorization: `Bearer ${ADMIN_KEY}` },
  );

const headerArb = fc.record(
  {
    'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16'),
    'x-idempotency-key': fc.oneof(ascii(20), fc.constant('x'.repeat(300))),
    traceparent: fc.oneof(ascii(60), fc.constant('00-' + '0'.repeat(32) + '-' + '1'.repeat(16) + '-01')),
    'x-cycles-trace-id': ascii(40),
    'x-request-id': ascii(140),
  },
  { requiredKeys: [] },
);

test(`every endpoint: no 5xx, and no rejected request changes a ledger (seed ${SEED})`, async () => {
  let snapshot = await ledgers();
  let sent = 0;
  const statuses = new Map<number, number>();
  const targets = [...routes, { method: 'GET', path: '/v1/{random}' }, { method: 'POST', path: '/{random}/{random}' }];
  for (const route of targets) {
    const arb = fc.record({
      params: fc.array(paramArb(), { minLength: 4, maxLength: 4 }),
      query: queryArb(),
      creds: credArb(),
      headers: headerArb,
      body: route.method === 'GET' || route.method === 'DELETE' ? fc.constant(undefined) : bodyArb(route.method, route.path),
    });
    await fc.assert(
      fc.asyncProperty(arb, async (req) => {
        let i = 0;
        const path = route.path.replace(/\{[^}]+\}/g, () => req.params[i++ % 4]!) + req.query;
        const headers: Record<string, string> = { ...req.headers, ...req.creds };
        if (req.body === undefined) delete headers['content-type'];
        const res = await s.client.call(route.method, path, { raw: req.body, headers });
        sent += 1;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        assert.ok(res.status < 500, `${route.method} ${path} -> ${show(res)}`);
        if (res.status >= 400 && res.body !== undefined && typeof res.body === 'object' && 'error' in res.body) {
          assert.equal(res.body.request_id, res.headers.get('x-request-id'), 'error envelope carries the request id');
        }
        const now = await ledgers();
        if (res.status >= 400) assert.equal(now, snapshot, `${route.method} ${path} was rejected (${res.status}) but changed a ledger`);
        snapshot = now;
      }),
      { numRuns: RUNS_PER_ROUTE, seed: SEED, endOnFailure: true },
    );
  }
  assert.ok(sent >= targets.length * RUNS_PER_ROUTE);
  // The fuzz reached past validation too, not only 400s.
  assert.ok([...statuses.keys()].some((st) => st >= 200 && st < 300), `statuses seen: ${JSON.stringify([...statuses])}`);
  assert.ok(statuses.has(400) && statuses.has(401) && statuses.has(404), `statuses seen: ${JSON.stringify([...statuses])}`);
});
