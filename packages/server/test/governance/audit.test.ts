/**
 * The audit log: every authenticated mutation and every failed authentication is recorded with
 * actor, tenant (or the __admin__ / __unauth__ sentinel), operation, status, error code, and
 * request and trace ids; the spec's filters (exact, IN-lists with their null rules, status
 * ranges, time window, search), sorting and cursor pagination. The main server runs with
 * AUDIT_RUNTIME_REQUESTS on, so tenant-key runtime calls are recorded too; the last suite checks
 * the default, where they are not.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, decideBody, expectError, expectStatus, qs, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, auditLogs, createBudget, createKey, createTenant, fund, iso } from './support.js';

let srv: TestServer;
let t: string;
let key: string;
let keyId: string;
let started: number;
before(async () => {
  srv = await startTestServer({ auditRuntimeRequests: true });
  started = Date.now() - 1;
  t = await createTenant(srv);
  await createBudget(srv, t, '', 1000);
  const k = await createKey(srv, t);
  key = k.secret;
  keyId = k.key_id;
});
after(async () => {
  await srv?.close();
});

const one = async (params: Record<string, string | number | undefined>): Promise<Json> => {
  const rows = await auditLogs(srv, params);
  assert.equal(rows.length, 1, `expected exactly one audit row for ${JSON.stringify(params)}, got ${rows.length}`);
  return rows[0];
};

describe('what is recorded', () => {
  test('an admin mutation: operation id, resource, target tenant, actor admin, request and trace ids', async () => {
    const res = await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { name: 'Audited' });
    expectStatus(res, 200);
    const row = await one({ request_id: res.requestId! });
    assert.deepEqual(
      [row.operation, row.resource_type, row.resource_id, row.tenant_id, row.status, row.trace_id, row.metadata.actor_type],
      ['updateTenant', 'tenant', t, t, 200, res.traceId, 'admin'],
    );
    assert.equal(row.error_code, undefined);
  });

  test('a runtime mutation under a tenant key: key_id, subject, action and amount from the request', async () => {
    const r = await srv.call('POST', '/v1/reservations', { apiKey: key, body: reserveBody({ tenant: t, agent: 'bot' }, 7) });
    const body = expectStatus(r, 200);
    const row = await one({ request_id: r.requestId! });
    assert.deepEqual([row.operation, row.tenant_id, row.key_id, row.resource_id, row.metadata.actor_type], ['createReservation', t, keyId, body.reservation_id, 'api_key']);
    assert.deepEqual(row.subject, { tenant: t, agent: 'bot' });
    assert.deepEqual(row.amount, { unit: 'TOKENS', amount: 7 });
    assert.equal(row.action.kind, 'llm.completion');
    const c = await commit(srv, key, body.reservation_id, commitBody(5));
    expectStatus(c, 200);
    assert.equal((await one({ request_id: c.requestId! })).operation, 'commitReservation');
  });

  test('admin-on-behalf-of (dual-auth) calls are marked admin_on_behalf_of and attributed to the tenant', async () => {
    const f = await fund(srv, t, `tenant:${t}`, { operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 }, reason: 'goodwill' });
    expectStatus(f, 200);
    const row = await one({ request_id: f.requestId! });
    assert.deepEqual([row.operation, row.tenant_id, row.metadata.actor_type, row.metadata.reason], ['fundBudget', t, 'admin_on_behalf_of', 'goodwill']);
    const r = await reserveOk(srv, key, reserveBody({ tenant: t }, 3));
    const rel = await srv.call('POST', `/v1/reservations/${r.reservation_id}/release`, { admin: true, body: { idempotency_key: `rel-${r.reservation_id}` } });
    expectStatus(rel, 200);
    const relRow = await one({ request_id: rel.requestId! });
    assert.deepEqual([relRow.operation, relRow.tenant_id, relRow.resource_id, relRow.metadata.actor_type], ['releaseReservation', t, r.reservation_id, 'admin_on_behalf_of']);
  });

  test('failures: admin-plane errors under __admin__ with the error code; failed auth under __unauth__', async () => {
    const bad = await adminCall(srv, 'PATCH', '/v1/admin/tenants/no-such-tenant', { name: 'x' });
    expectError(bad, 404, 'TENANT_NOT_FOUND');
    const row = await one({ request_id: bad.requestId! });
    assert.deepEqual([row.tenant_id, row.status, row.error_code, row.metadata.path, row.metadata.method], ['__admin__', 404, 'TENANT_NOT_FOUND', '/v1/admin/tenants/no-such-tenant', 'PATCH']);
    assert.match(row.metadata.error_message, /not found/);
    const unauth = await srv.call('POST', '/v1/admin/tenants', { admin: 'wrong-admin-key-000000', body: { tenant_id: 'zzz', name: 'x' } });
    expectError(unauth, 401, 'UNAUTHORIZED');
    const u = await one({ request_id: unauth.requestId! });
    assert.deepEqual([u.tenant_id, u.status, u.error_code, u.metadata.actor_type], ['__unauth__', 401, 'UNAUTHORIZED', undefined]);
    // A GET with a bad key is recorded too (it is a failed authentication), a good GET is not.
    const g = await srv.call('GET', '/v1/balances?tenant=x', { apiKey: 'cyc_live_not-a-key' });
    expectError(g, 401, 'UNAUTHORIZED');
    assert.equal((await one({ request_id: g.requestId! })).tenant_id, '__unauth__');
    const ok = await adminCall(srv, 'GET', `/v1/admin/tenants/${t}`);
    assert.equal((await auditLogs(srv, { request_id: ok.requestId! })).length, 0);
    // Bodies are never stored: a validated key secret does not appear anywhere in the row.
    const v = await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: key });
    assert.equal(JSON.stringify(await one({ request_id: v.requestId! })).includes(key), false);
  });
});

describe('filters, sorting and pages', () => {
  test('sentinels and exact filters', async () => {
    const admins = await auditLogs(srv, { tenant_id: '__admin__' });
    assert.ok(admins.length > 0 && admins.every((r) => r.tenant_id === '__admin__'));
    const byKey = await auditLogs(srv, { key_id: keyId });
    assert.ok(byKey.length >= 2 && byKey.every((r) => r.key_id === keyId));
    const byResource = await auditLogs(srv, { resource_id: t });
    assert.ok(byResource.every((r) => r.resource_id === t));
  });

  test('IN-lists (comma and repeated forms); error_code never matches a success, error_code_exclude always keeps it', async () => {
    const ops = await auditLogs(srv, { operation: 'updateTenant,fundBudget' });
    assert.ok(ops.length >= 2);
    assert.ok(ops.every((r) => ['updateTenant', 'fundBudget'].includes(r.operation)));
    const repeated = expectStatus(await adminCall(srv, 'GET', '/v1/admin/audit/logs?operation=updateTenant&operation=fundBudget&limit=100'), 200);
    assert.equal(repeated.logs.length, ops.length);
    const errs = await auditLogs(srv, { error_code: 'TENANT_NOT_FOUND,UNAUTHORIZED' });
    assert.ok(errs.length >= 2 && errs.every((r) => r.error_code === 'TENANT_NOT_FOUND' || r.error_code === 'UNAUTHORIZED'));
    const all = await auditLogs(srv, {});
    const excl = await auditLogs(srv, { error_code_exclude: 'UNAUTHORIZED' });
    assert.equal(excl.length, all.filter((r) => r.error_code !== 'UNAUTHORIZED').length);
    assert.ok(excl.some((r) => r.error_code === undefined), 'successes pass an exclusion');
    assert.equal((await auditLogs(srv, { error_code: 'SOME_FUTURE_CODE' })).length, 0, 'unknown codes match nothing (no 400)');
    const types = await auditLogs(srv, { resource_type: 'tenant,api_key' });
    assert.ok(types.every((r) => r.resource_type === 'tenant' || r.resource_type === 'api_key'));
    const tooMany = Array.from({ length: 26 }, (_, i) => `op${i}`).join(',');
    expectError(await adminCall(srv, 'GET', `/v1/admin/audit/logs${qs({ operation: tooMany })}`), 400, 'INVALID_REQUEST');
  });

  test('status exact or range; invalid combinations are 400', async () => {
    const failures = await auditLogs(srv, { status_min: 400, status_max: 499 });
    assert.ok(failures.length >= 3 && failures.every((r) => r.status >= 400 && r.status <= 499));
    assert.ok((await auditLogs(srv, { status: 404 })).every((r) => r.status === 404));
    for (const bad of [{ status: 200, status_min: 100 }, { status_min: 500, status_max: 400 }, { status_min: 99 }, { status_max: 600 }, { status: 'ok' }, { trace_id: 'XYZ' }, { search: 's'.repeat(129) }, { sort_by: 'log_id' }]) {
      expectError(await adminCall(srv, 'GET', `/v1/admin/audit/logs${qs(bad)}`), 400, 'INVALID_REQUEST');
    }
  });

  test('time window, search, trace_id, and sorting by every key with a stable order', async () => {
    const now = Date.now();
    assert.equal((await auditLogs(srv, { from: iso(now + 60_000) })).length, 0);
    const inWindow = await auditLogs(srv, { from: iso(started), to: iso(now + 1000) });
    assert.equal(inWindow.length, (await auditLogs(srv, {})).length);
    const s = await auditLogs(srv, { search: 'FUNDBUDGET' });
    assert.ok(s.length >= 1 && s.every((r) => r.operation === 'fundBudget' || String(r.resource_id ?? '').toLowerCase().includes('fundbudget')));
    const anyRow = inWindow[0]!;
    assert.ok((await auditLogs(srv, { trace_id: anyRow.trace_id })).some((r) => r.log_id === anyRow.log_id));
    for (const sort_by of ['timestamp', 'operation', 'resource_type', 'tenant_id', 'key_id', 'status']) {
      const asc = await auditLogs(srv, { sort_by, sort_dir: 'asc', limit: 3 });
      const desc = await auditLogs(srv, { sort_by, sort_dir: 'desc', limit: 4 });
      assert.deepEqual(desc.map((r) => r.log_id), asc.map((r) => r.log_id).reverse(), sort_by);
    }
    const dflt = await auditLogs(srv, { limit: 2 });
    const times = dflt.map((r) => Date.parse(r.timestamp));
    assert.deepEqual(times, [...times].sort((a, b) => b - a), 'default order is timestamp desc');
  });

  test('the endpoint is admin-only', async () => {
    const k = (await createKey(srv, t, { permissions: ['admin:audit:read', 'admin:read'] })).secret;
    expectError(await srv.call('GET', '/v1/admin/audit/logs', { apiKey: k }), 401, 'UNAUTHORIZED');
  });
});

describe('by default (AUDIT_RUNTIME_REQUESTS off)', () => {
  let plain: TestServer;
  before(async () => {
    plain = await startTestServer();
  });
  after(async () => {
    await plain?.close();
  });

  test('tenant-key runtime calls write no audit row; admin runtime calls, governance calls and failed auth do', async () => {
    const tenant = await createTenant(plain);
    await createBudget(plain, tenant, '', 1000);
    const k = await createKey(plain, tenant);
    const r = await plain.call('POST', '/v1/reservations', { apiKey: k.secret, body: reserveBody({ tenant, agent: 'bot' }, 7) });
    const body = expectStatus(r, 200);
    const c = await commit(plain, k.secret, body.reservation_id, commitBody(5));
    expectStatus(c, 200);
    const d = await plain.call('POST', '/v1/decide', { apiKey: k.secret, body: decideBody({ tenant }, 1) });
    expectStatus(d, 200);
    for (const res of [r, c, d]) assert.equal((await auditLogs(plain, { request_id: res.requestId! })).length, 0, `no audit row for ${res.requestId}`);
    assert.equal((await auditLogs(plain, { key_id: k.key_id })).length, 0);

    // An admin forced release is governance activity: recorded, on behalf of the tenant.
    const held = await reserveOk(plain, k.secret, reserveBody({ tenant }, 3));
    const rel = await plain.call('POST', `/v1/reservations/${held.reservation_id}/release`, { admin: true, body: { idempotency_key: `rel-${held.reservation_id}` } });
    expectStatus(rel, 200);
    const relRows = await auditLogs(plain, { request_id: rel.requestId! });
    assert.equal(relRows.length, 1);
    assert.deepEqual([relRows[0].operation, relRows[0].tenant_id, relRows[0].metadata.actor_type], ['releaseReservation', tenant, 'admin_on_behalf_of']);

    // A runtime call with a bad key is a failed authentication: recorded under __unauth__.
    const bad = await plain.call('POST', '/v1/reservations', { apiKey: 'cyc_live_not-a-key', body: reserveBody({ tenant }, 1) });
    expectError(bad, 401, 'UNAUTHORIZED');
    assert.equal((await auditLogs(plain, { request_id: bad.requestId! }))[0]?.tenant_id, '__unauth__');

    // Governance mutations still are.
    const patch = await adminCall(plain, 'PATCH', `/v1/admin/tenants/${tenant}`, { name: 'Still audited' });
    expectStatus(patch, 200);
    assert.equal((await auditLogs(plain, { request_id: patch.requestId! }))[0]?.operation, 'updateTenant');
  });
});
