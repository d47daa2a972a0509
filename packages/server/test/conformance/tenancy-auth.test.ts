/**
 * Authentication and tenant isolation on the runtime plane.
 * Spec: AUTH & TENANCY (NORMATIVE); security of each operation (AdminKeyAuth only on
 * listReservations, getReservation, releaseReservation); listReservations TENANCY; getBalances TENANCY.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, waitFor, type Method, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  commit,
  commitBody,
  decide,
  decideBody,
  eventBody,
  expectError,
  expectStatus,
  extend,
  extendBody,
  getReservation,
  listReservations,
  newTenant,
  postEvent,
  qs,
  release,
  releaseBody,
  reserve,
  reserveBody,
  reserveOk,
  type TenantCtx,
} from '../helpers/runtime.js';

let srv: TestServer;
let a: TenantCtx;
let b: TenantCtx;
let rA: string;

before(async () => {
  srv = await startTestServer();
  a = await newTenant(srv, [{ at: '', allocated: 10_000 }]);
  b = await newTenant(srv, [{ at: '', allocated: 10_000 }]);
  rA = (await reserveOk(srv, a.key, reserveBody({ tenant: a.tenant, workspace: 'w' }, 10))).reservation_id;
});
after(async () => {
  await srv?.close();
});

/** One request per runtime operation (a fresh idempotency key each time). */
function runtimeRequests(): Array<[string, Method, string, unknown]> {
  return [
    ['decide', 'POST', '/v1/decide', decideBody({ tenant: a.tenant }, 1)],
    ['createReservation', 'POST', '/v1/reservations', reserveBody({ tenant: a.tenant }, 1)],
    ['listReservations', 'GET', `/v1/reservations?tenant=${a.tenant}`, undefined],
    ['getReservation', 'GET', `/v1/reservations/${rA}`, undefined],
    ['commitReservation', 'POST', `/v1/reservations/${rA}/commit`, commitBody(1)],
    ['releaseReservation', 'POST', `/v1/reservations/${rA}/release`, releaseBody()],
    ['extendReservation', 'POST', `/v1/reservations/${rA}/extend`, extendBody(1000)],
    ['getBalances', 'GET', `/v1/balances?tenant=${a.tenant}`, undefined],
    ['createEvent', 'POST', '/v1/events', eventBody({ tenant: a.tenant }, 1)],
  ];
}

describe('401 UNAUTHORIZED', () => {
  test('missing API key on every runtime operation', async () => {
    for (const [name, method, path, body] of runtimeRequests()) {
      const res = await srv.call(method, path, body === undefined ? {} : { body });
      assert.equal(res.status, 401, `${name}: ${res.text}`);
      expectError(res, 401, 'UNAUTHORIZED');
    }
  });

  test('unknown API key on every runtime operation', async () => {
    for (const [name, method, path, body] of runtimeRequests()) {
      const res = await srv.call(method, path, { apiKey: 'cyc_live_thisIsNotAValidKeyAtAll0000000', ...(body === undefined ? {} : { body }) });
      assert.equal(res.status, 401, `${name}: ${res.text}`);
      expectError(res, 401, 'UNAUTHORIZED');
    }
  });

  test('admin key is refused (401) on decide, create, commit, extend, balances and events', async () => {
    for (const [name, method, path, body] of runtimeRequests()) {
      if (['listReservations', 'getReservation', 'releaseReservation'].includes(name)) continue;
      const res = await srv.call(method, path, { admin: true, ...(body === undefined ? {} : { body }) });
      assert.equal(res.status, 401, `${name} must not accept the admin key: ${res.text}`);
      expectError(res, 401, 'UNAUTHORIZED');
    }
    assert.equal(expectStatus(await getReservation(srv, a.key, rA), 200).status, 'ACTIVE', 'nothing was committed or extended');
  });

  test('a wrong admin key is 401 on admin-capable operations', async () => {
    expectError(await srv.call('GET', `/v1/reservations/${rA}`, { admin: 'wrong-admin-key-0000000000' }), 401, 'UNAUTHORIZED');
    expectError(await srv.call('GET', `/v1/reservations?tenant=${a.tenant}`, { admin: 'wrong-admin-key-0000000000' }), 401, 'UNAUTHORIZED');
  });

  test('a revoked API key is 401', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const created = await srv.call('POST', '/v1/admin/api-keys', { admin: true, body: { tenant_id: t.tenant, name: 'to revoke' } });
    assert.equal(created.status, 201);
    const secret = created.body.key_secret as string;
    expectStatus(await reserve(srv, secret, reserveBody({ tenant: t.tenant }, 1)), 200);
    const revoked = await srv.call('DELETE', `/v1/admin/api-keys/${created.body.key_id as string}`, { admin: true });
    assert.equal(revoked.status, 200, revoked.text);
    expectError(await reserve(srv, secret, reserveBody({ tenant: t.tenant }, 1)), 401, 'UNAUTHORIZED');
  });
});

describe('admin key on list, get and release', () => {
  test('list without tenant: 400 INVALID_REQUEST with the documented message', async () => {
    const err = expectError(await srv.call('GET', '/v1/reservations', { admin: true }), 400, 'INVALID_REQUEST');
    assert.match(err.message, /tenant query parameter is required when using admin key authentication/);
  });

  test('list with tenant filters to that tenant', async () => {
    const rB = await reserveOk(srv, b.key, reserveBody({ tenant: b.tenant }, 1));
    const res = expectStatus(await srv.call('GET', `/v1/reservations${qs({ tenant: b.tenant })}`, { admin: true }), 200);
    const ids = (res.reservations as Array<{ reservation_id: string; subject: { tenant?: string } }>).map((r) => r.reservation_id);
    assert.ok(ids.includes(rB.reservation_id));
    assert.ok(!ids.includes(rA));
  });

  test('get any tenant\'s reservation: 200', async () => {
    const g = expectStatus(await srv.call('GET', `/v1/reservations/${rA}`, { admin: true }), 200);
    assert.equal(g.reservation_id, rA);
  });

  test('release any tenant\'s reservation: 200 RELEASED', async () => {
    const r = await reserveOk(srv, b.key, reserveBody({ tenant: b.tenant }, 25));
    const res = await srv.call('POST', `/v1/reservations/${r.reservation_id}/release`, {
      admin: true,
      body: releaseBody({ reason: '[INCIDENT_FORCE_RELEASE] stuck' }),
    });
    const rel = expectStatus(res, 200);
    assert.equal(rel.status, 'RELEASED');
    assert.deepEqual(rel.released, { unit: 'TOKENS', amount: 25 });
    assert.equal(expectStatus(await getReservation(srv, b.key, r.reservation_id), 200).status, 'RELEASED');
  });
});

describe('admin force-release audit', () => {
  test('an admin release is recorded with actor_type admin_on_behalf_of and is discoverable via GET /v1/admin/audit/logs', async () => {
    const r = await reserveOk(srv, b.key, reserveBody({ tenant: b.tenant }, 3));
    const rel = await srv.call('POST', `/v1/reservations/${r.reservation_id}/release`, {
      admin: true,
      body: releaseBody({ reason: '[INCIDENT_FORCE_RELEASE] audit check' }),
    });
    expectStatus(rel, 200);
    // The spec requires the entry to be discoverable, not synchronously: poll briefly.
    const entry = await waitFor(async () => {
      const logs = await srv.call('GET', `/v1/admin/audit/logs${qs({ request_id: rel.requestId ?? '', limit: 50 })}`, { admin: true });
      const body = expectStatus(logs, 200);
      return (body.logs as Array<Record<string, unknown>>).find((e) => e.request_id === rel.requestId || e.resource_id === r.reservation_id);
    }, 3000).catch(() => undefined);
    assert.ok(entry, `no audit entry for the admin release (request ${String(rel.requestId)}) within 3 s`);
    const meta = (entry.metadata ?? {}) as Record<string, unknown>;
    assert.equal(entry.actor_type ?? meta.actor_type, 'admin_on_behalf_of');
    assert.equal(entry.request_id, rel.requestId, 'audit entries carry the X-Request-Id');
    assert.equal(entry.trace_id, rel.traceId, 'audit entries carry the trace id');
  });
});

describe('403 FORBIDDEN: tenant isolation', () => {
  test("another tenant's reservation: get, commit, release and extend are 403 (not 404), and nothing changes", async () => {
    expectError(await getReservation(srv, b.key, rA), 403, 'FORBIDDEN');
    expectError(await commit(srv, b.key, rA, commitBody(1)), 403, 'FORBIDDEN');
    expectError(await release(srv, b.key, rA), 403, 'FORBIDDEN');
    expectError(await extend(srv, b.key, rA, extendBody(1000)), 403, 'FORBIDDEN');
    const g = expectStatus(await getReservation(srv, a.key, rA), 200);
    assert.equal(g.status, 'ACTIVE');
  });

  test('subject.tenant different from the effective tenant: 403 on create, dry-run, decide and events', async () => {
    expectError(await reserve(srv, b.key, reserveBody({ tenant: a.tenant }, 1)), 403, 'FORBIDDEN');
    expectError(await reserve(srv, b.key, reserveBody({ tenant: a.tenant }, 1, 'TOKENS', { dry_run: true })), 403, 'FORBIDDEN');
    expectError(await decide(srv, b.key, decideBody({ tenant: a.tenant }, 1)), 403, 'FORBIDDEN');
    expectError(await postEvent(srv, b.key, eventBody({ tenant: a.tenant }, 1)), 403, 'FORBIDDEN');
    const bal = amounts(await balanceOf(srv, a, a.scope()));
    assert.equal(bal.spent, 0);
  });

  test('list with another tenant in the tenant parameter: 403; own tenant: 200', async () => {
    expectError(await listReservations(srv, b.key, { tenant: a.tenant }), 403, 'FORBIDDEN');
    expectStatus(await listReservations(srv, a.key, { tenant: a.tenant }), 200);
  });

  test("list under an API key only shows the effective tenant's reservations", async () => {
    const list = expectStatus(await listReservations(srv, b.key, { limit: 200 }), 200);
    assert.ok(!(list.reservations as Array<{ reservation_id: string }>).some((r) => r.reservation_id === rA));
    for (const r of list.reservations as Array<{ subject: { tenant?: string } }>) {
      if (r.subject.tenant !== undefined) assert.equal(r.subject.tenant, b.tenant);
    }
  });

  test('balances with another tenant in the tenant parameter: 403', async () => {
    expectError(await srv.call('GET', `/v1/balances${qs({ tenant: a.tenant })}`, { apiKey: b.key }), 403, 'FORBIDDEN');
  });

  test("balances filtered below the tenant never show another tenant's scopes", async () => {
    await srv.createBudget(a.tenant, { scope: `tenant:${a.tenant}/workspace:shared`, unit: 'TOKENS', allocated: 5 });
    await srv.createBudget(b.tenant, { scope: `tenant:${b.tenant}/workspace:shared`, unit: 'TOKENS', allocated: 7 });
    const res = expectStatus(await srv.call('GET', `/v1/balances${qs({ workspace: 'shared' })}`, { apiKey: b.key }), 200);
    assert.ok(res.balances.length >= 1);
    for (const bal of res.balances as Array<{ scope_path: string }>) assert.ok(bal.scope_path.startsWith(`tenant:${b.tenant}`), bal.scope_path);
  });

  test('a key without reservations:create is refused with 403 FORBIDDEN (runtime ErrorCode)', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const limited = await srv.createApiKey(t.tenant, ['balances:read']);
    expectError(await reserve(srv, limited, reserveBody({ tenant: t.tenant }, 1)), 403, 'FORBIDDEN');
    expectStatus(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant })}`, { apiKey: limited }), 200);
  });
});
