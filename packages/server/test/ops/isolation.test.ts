/**
 * Isolation: every endpoint of our own API (read from /openapi.json, so routes added later are
 * covered too) is called with another tenant's key, a revoked key, an expired key and a key
 * lacking the route's permission. Each gets the right 401/403/404, no response leaks any of the
 * victim tenant's data, and the victim's ledger is unchanged. Finally the captured log of the
 * whole run is scanned for every credential handed out (also done by every ops server on close).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ADMIN_KEY, fingerprint, idem, NO_LIMITS, provision, secretLeaks, SECRETS, show, sleep, startOps, type OpsServer, type Res, type Tenant } from './support.js';

interface Operation {
  method: string;
  path: string;
  auth: string;
  permission: string | undefined;
}

const MARK = `marker${randomBytes(6).toString('hex')}`;

let s: OpsServer;
let victim: Tenant;
let other: Tenant;
let reservationId: string;
let ledgerIds: string[] = [];
const keys: Record<'revoked' | 'expired' | 'limited', { secret: string; id: string }> = {} as never;
let operations: Operation[];

async function issueKey(tenant: string, extra: Record<string, unknown> = {}): Promise<{ secret: string; id: string }> {
  const r = await s.client.post('/v1/admin/api-keys', { tenant_id: tenant, name: 'iso', ...extra }, { admin: true });
  assert.equal(r.status, 201, show(r));
  return { secret: r.body.key_secret, id: r.body.key_id };
}

before(async () => {
  s = await startOps({ ...NO_LIMITS });
  victim = await provision(s.client, [{ at: '', allocated: 1_000_000 }, { at: 'workspace:w1', allocated: 50_000 }]);
  other = await provision(s.client, [{ at: '', allocated: 1_000 }]);
  const budgets = await s.client.get(`/v1/admin/budgets?tenant_id=${victim.id}`, { admin: true });
  ledgerIds = budgets.body.ledgers.map((l: { ledger_id: string }) => l.ledger_id);
  const r = await s.client.post(
    '/v1/reservations',
    { idempotency_key: idem(), subject: { tenant: victim.id, workspace: 'w1', agent: MARK }, action: { kind: 'llm.completion', name: MARK }, estimate: { unit: 'TOKENS', amount: 777 }, metadata: { note: MARK } },
    { key: victim.key },
  );
  assert.equal(r.status, 200, show(r));
  reservationId = r.body.reservation_id;
  keys.revoked = await issueKey(victim.id);
  const del = await s.client.call('DELETE', `/v1/admin/api-keys/${keys.revoked.id}`, { admin: true });
  assert.equal(del.status, 200, show(del));
  keys.expired = await issueKey(victim.id, { expires_at: new Date(Date.now() + 1500).toISOString() });
  keys.limited = await issueKey(victim.id, { permissions: ['balances:read'] });
  const doc = (await s.client.get('/openapi.json')).body as { paths: Record<string, Record<string, Record<string, unknown>>> };
  operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([m, op]) => ({ method: m.toUpperCase(), path, auth: String(op['x-cycles-auth'] ?? 'public'), permission: op['x-cycles-permission'] as string | undefined })),
  );
  await sleep(Math.max(0, 1600));
});
after(() => s.close());

/** Path parameters point at the victim's resources. */
function concrete(path: string): string {
  return path
    .replace('{reservation_id}', reservationId)
    .replace('{tenant_id}', victim.id)
    .replace('{key_id}', victim.keyId)
    .replace(/\{[^}]+\}/g, `${victim.id}-${MARK}`);
}

/** Queries and bodies aim at the victim too, so a missing check would show. */
function request(op: Operation): { path: string; body: unknown } {
  const q = `tenant=${victim.id}&tenant_id=${victim.id}&scope=${encodeURIComponent(`tenant:${victim.id}`)}&unit=TOKENS&scope_prefix=${encodeURIComponent(`tenant:${victim.id}`)}`;
  const path = concrete(op.path) + (op.method === 'GET' || op.method === 'DELETE' || op.path.endsWith('/fund') ? `?${q}` : '');
  const subject = { tenant: victim.id, workspace: 'w1' };
  const action = { kind: 'llm.completion', name: 'x' };
  let body: unknown;
  if (op.method === 'POST' || op.method === 'PATCH' || op.method === 'PUT') {
    if (op.path === '/v1/reservations' || op.path === '/v1/decide') body = { idempotency_key: idem(), subject, action, estimate: { unit: 'TOKENS', amount: 1 } };
    else if (op.path === '/v1/events') body = { idempotency_key: idem(), subject, action, actual: { unit: 'TOKENS', amount: 1 } };
    else if (op.path.endsWith('/commit')) body = { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 1 } };
    else if (op.path.endsWith('/extend')) body = { idempotency_key: idem(), extend_by_ms: 1000 };
    else if (op.path.endsWith('/release')) body = { idempotency_key: idem() };
    else if (op.path.endsWith('/fund')) body = { operation: 'DEBIT', amount: { unit: 'TOKENS', amount: 1 }, idempotency_key: idem() };
    else if (op.path === '/v1/admin/budgets') body = { scope: `tenant:${victim.id}/workspace:iso`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 1 } };
    else body = { tenant_id: victim.id, name: 'iso', status: 'CLOSED' };
  }
  return { path, body };
}

function assertNoLeak(r: Res, what: string): void {
  assert.ok(!r.text.includes(MARK), `${what}: response leaks the victim's data: ${show(r)}`);
  for (const id of ledgerIds) assert.ok(!r.text.includes(id), `${what}: response leaks a victim ledger id`);
  assert.ok(!r.text.includes(victim.key) && !r.text.includes(victim.key.slice(0, 14)), `${what}: response leaks the victim's key`);
}

const isPublic = (op: Operation) => op.auth === 'public';

test('revoked and expired keys: 401 on every non-public endpoint', async () => {
  const checked = new Set<string>();
  for (const op of operations.filter((o) => !isPublic(o))) {
    for (const which of ['revoked', 'expired'] as const) {
      const { path, body } = request(op);
      const r = await s.client.call(op.method, path, { key: keys[which].secret, body });
      const what = `${which} key: ${op.method} ${op.path}`;
      assert.equal(r.status, 401, `${what}: ${show(r)}`);
      assert.equal(r.body.error, 'UNAUTHORIZED', what);
      if (op.auth !== 'admin') assert.match(r.body.message, which === 'revoked' ? /revoked/ : /expired/, what);
      assertNoLeak(r, what);
      checked.add(op.path);
    }
  }
  assert.ok(checked.size >= 15, `covered ${checked.size} paths`);
});

test('a key lacking the permission: 403 (runtime FORBIDDEN, governance INSUFFICIENT_PERMISSIONS); admin-only routes 401', async () => {
  let forbidden = 0;
  for (const op of operations.filter((o) => !isPublic(o))) {
    const { path, body } = request(op);
    const r = await s.client.call(op.method, path, { key: keys.limited.secret, body });
    const what = `limited key: ${op.method} ${op.path}`;
    assertNoLeak(r, what);
    if (op.auth === 'admin') {
      assert.equal(r.status, 401, `${what}: ${show(r)}`);
      continue;
    }
    if (!op.permission || op.permission === 'balances:read') continue; // the key holds it
    assert.equal(r.status, 403, `${what}: ${show(r)}`);
    assert.ok(['FORBIDDEN', 'INSUFFICIENT_PERMISSIONS'].includes(r.body.error), what);
    if (op.path.startsWith('/v1/admin/')) assert.equal(r.body.error, 'INSUFFICIENT_PERMISSIONS', what);
    if (['POST /v1/reservations', 'GET /v1/reservations', 'POST /v1/decide', 'POST /v1/events', 'GET /v1/balances'].includes(`${op.method} ${op.path}`)) {
      assert.equal(r.body.error, 'FORBIDDEN', `${what}: the runtime plane's enum has no INSUFFICIENT_PERMISSIONS`);
    }
    forbidden += 1;
  }
  assert.ok(forbidden >= 8, `permission checks exercised: ${forbidden}`);
});

/** Routes where another tenant's key must be refused outright (the target is the victim's). */
const DENY = new Set([
  'POST /v1/reservations',
  'POST /v1/decide',
  'POST /v1/events',
  'GET /v1/reservations',
  'GET /v1/balances',
  'GET /v1/reservations/{reservation_id}',
  'POST /v1/reservations/{reservation_id}/commit',
  'POST /v1/reservations/{reservation_id}/release',
  'POST /v1/reservations/{reservation_id}/extend',
  'GET /v1/admin/budgets/lookup',
  'POST /v1/admin/budgets/fund',
]);

test("another tenant's key: 401/403/404, never the victim's data, never a change to the victim's ledger", async () => {
  const before = await fingerprint(s.client, [victim.id]);
  for (const op of operations.filter((o) => !isPublic(o))) {
    const { path, body } = request(op);
    const r = await s.client.call(op.method, path, { key: other.key, body });
    const what = `other tenant: ${op.method} ${op.path}`;
    assertNoLeak(r, what);
    if (op.auth === 'admin') assert.equal(r.status, 401, `${what}: ${show(r)}`);
    else if (DENY.has(`${op.method} ${op.path}`)) assert.ok([403, 404].includes(r.status), `${what}: ${show(r)}`);
    else assert.ok(r.status < 500 && r.status !== 429, `${what}: ${show(r)}`);
  }
  assert.equal(await fingerprint(s.client, [victim.id]), before, "the victim's ledger is untouched");
  // The victim's reservation is still theirs and still held.
  const own = await s.client.get(`/v1/reservations/${reservationId}`, { key: victim.key });
  assert.equal(own.status, 200);
  assert.equal(own.body.status, 'ACTIVE');
});

test('no credential handed out during the run appears in any log line', async () => {
  const pepper = await s.server.backend.getMeta('api_key_pepper');
  assert.ok(SECRETS.has(ADMIN_KEY) && SECRETS.has(victim.key) && SECRETS.has(keys.revoked.secret) && SECRETS.has(keys.expired.secret));
  const logs = s.logs();
  assert.ok(logs.length > 50, `captured ${logs.length} lines`);
  assert.ok(logs.some((l) => l.includes('"status":401')), 'the failures were logged (without their keys)');
  assert.deepEqual(secretLeaks(logs, pepper ? [pepper] : []), []);
});
