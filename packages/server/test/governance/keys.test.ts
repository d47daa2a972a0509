/**
 * API keys: the permission enum and defaults, scope filters, expiry, update, revocation effective
 * on the next request, rotation (create new + revoke old), validateApiKey, last_used_at, and
 * introspection.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, startTestServer, waitFor, type Json, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, qs, reserve, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant, events, iso, pageAll } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

const DEFAULTS = [
  'reservations:create',
  'reservations:commit',
  'reservations:release',
  'reservations:extend',
  'reservations:list',
  'balances:read',
  'budgets:read',
  'budgets:write',
  'policies:read',
  'policies:write',
];

async function keyRecord(keyId: string): Promise<Json> {
  const rows = await pageAll(srv, '/v1/admin/api-keys', 'keys', { search: keyId });
  const k = rows.find((r) => r.key_id === keyId);
  assert.ok(k, `key ${keyId} is listed`);
  return k;
}

describe('createApiKey', () => {
  test('secret shown once with its prefix; the spec\'s ten default permissions; 90-day default expiry; api_key.created', async () => {
    const t = await createTenant(srv);
    const res = expectStatus(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'agents' }), 201);
    assert.match(res.key_secret, /^cyc_live_[A-Za-z0-9]{32}$/);
    assert.equal(res.key_prefix, res.key_secret.slice(0, 14));
    assert.deepEqual(res.permissions, DEFAULTS);
    const days = (Date.parse(res.expires_at) - Date.parse(res.created_at)) / 86_400_000;
    assert.ok(Math.abs(days - 90) < 0.01);
    const listed = await keyRecord(res.key_id);
    assert.equal(listed.key_secret, undefined, 'the secret is never listed');
    assert.equal(JSON.stringify(listed).includes(res.key_secret), false);
    const [e] = await events(srv, { tenant_id: t, event_type: 'api_key.created' });
    assert.deepEqual(e.data, { key_id: res.key_id, key_name: 'agents', new_status: 'ACTIVE', permissions: DEFAULTS });
    assert.equal(JSON.stringify(e).includes(res.key_secret), false, 'events never carry the secret');
  });

  test('every permission of the enum is accepted; unknown ones, bad scope filters and past expiry are 400', async () => {
    const t = await createTenant(srv);
    const all = [
      ...DEFAULTS,
      'webhooks:read',
      'webhooks:write',
      'events:read',
      'admin:read',
      'admin:write',
      'admin:tenants:read',
      'admin:tenants:write',
      'admin:budgets:read',
      'admin:budgets:write',
      'admin:policies:read',
      'admin:policies:write',
      'admin:apikeys:read',
      'admin:apikeys:write',
      'admin:webhooks:read',
      'admin:webhooks:write',
      'admin:events:read',
      'admin:audit:read',
    ];
    assert.equal(all.length, 27);
    const k = expectStatus(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'all', permissions: all }), 201);
    assert.deepEqual(k.permissions, all);
    const bad = expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'x', permissions: ['budgets:delete'] }), 400, 'INVALID_REQUEST');
    assert.match(bad.message, /Unrecognized permission: budgets:delete/);
    for (const scope_filter of [['*'], ['eng'], ['planet:mars'], ['workspace:']]) {
      expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'x', scope_filter }), 400, 'INVALID_REQUEST');
    }
    expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'x', expires_at: iso(Date.now() - 1000) }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: 'no-such-tenant', name: 'x' }), 400, 'INVALID_REQUEST');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'SUSPENDED' }), 200);
    expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: t, name: 'x' }), 400, 'INVALID_REQUEST');
  });
});

describe('scope_filter', () => {
  test('a filtered key reaches only budgets whose scope has a matching segment (403 otherwise)', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, 'workspace:eng', 10);
    await createBudget(srv, t, 'workspace:ops', 10);
    await createBudget(srv, t, 'workspace:ops/agent:bot', 10);
    const { secret } = await createKey(srv, t, { scope_filter: ['workspace:ENG', 'agent:*'] });
    const look = (scope: string) => srv.call('GET', `/v1/admin/budgets/lookup${qs({ scope, unit: 'TOKENS' })}`, { apiKey: secret });
    expectStatus(await look(`tenant:${t}/workspace:eng`), 200);
    expectStatus(await look(`tenant:${t}/workspace:ops/agent:bot`), 200);
    expectError(await look(`tenant:${t}/workspace:ops`), 403, 'FORBIDDEN');
    expectError(await srv.call('POST', '/v1/admin/budgets', { apiKey: secret, body: { scope: `tenant:${t}/app:x`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 1 } } }), 403, 'FORBIDDEN');
    const listed = await pageAll(srv, '/v1/admin/budgets', 'ledgers', {}, { apiKey: secret });
    assert.deepEqual(listed.map((b) => b.scope).sort(), [`tenant:${t}/workspace:eng`, `tenant:${t}/workspace:ops/agent:bot`]);
    const intro = expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 200);
    assert.deepEqual(intro.scope_filter, ['workspace:eng', 'agent:*']);
  });
});

describe('updateApiKey / revokeApiKey / rotation', () => {
  test('update replaces permissions and scope filter (api_key.permissions_changed only on a real change)', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 100);
    const { key_id, secret } = await createKey(srv, t);
    const u = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { permissions: ['balances:read'], name: 'reader' }), 200);
    assert.deepEqual([u.permissions, u.name, u.status], [['balances:read'], 'reader', 'ACTIVE']);
    // Effective on the next request: the key can no longer reserve.
    expectError(await reserve(srv, secret, reserveBody({ tenant: t }, 1)), 403, 'FORBIDDEN');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { description: 'desc only' }), 200);
    const evs = await events(srv, { tenant_id: t, event_type: 'api_key.permissions_changed' });
    assert.equal(evs.length, 1);
    assert.deepEqual(evs[0].data.permissions, ['balances:read']);
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { permissions: ['nope'] }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { tenant_id: 'x' }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', '/v1/admin/api-keys/key_missing', { name: 'x' }), 404, 'NOT_FOUND');
  });

  test('revocation is effective on the very next request; revoking again is 409 KEY_REVOKED; revoked keys cannot change', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 100);
    const { key_id, secret } = await createKey(srv, t);
    const open = await reserveOk(srv, secret, reserveBody({ tenant: t }, 1));
    const r = expectStatus(await adminCall(srv, 'DELETE', `/v1/admin/api-keys/${key_id}${qs({ reason: 'leaked' })}`), 200);
    assert.deepEqual([r.status, r.revoked_reason], ['REVOKED', 'leaked']);
    assert.equal(typeof r.revoked_at, 'string');
    expectError(await reserve(srv, secret, reserveBody({ tenant: t }, 1)), 401, 'UNAUTHORIZED');
    expectError(await adminCall(srv, 'DELETE', `/v1/admin/api-keys/${key_id}`), 409, 'KEY_REVOKED');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { name: 'x' }), 409, 'KEY_REVOKED');
    // Work in flight is not stranded: the admin can still release it.
    expectStatus(await srv.call('POST', `/v1/reservations/${open.reservation_id}/release`, { admin: true, body: { idempotency_key: `rel-${key_id}` } }), 200);
    const [e] = await events(srv, { tenant_id: t, event_type: 'api_key.revoked' });
    assert.deepEqual([e.data.previous_status, e.data.new_status], ['ACTIVE', 'REVOKED']);
  });

  test('rotation = create a replacement + revoke the old key; both keys work until the revoke', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 100);
    const old = await createKey(srv, t, { permissions: ['reservations:create', 'balances:read'], scope_filter: ['workspace:w'] });
    const fresh = await createKey(srv, t, { permissions: ['reservations:create', 'balances:read'], scope_filter: ['workspace:w'] });
    for (const s of [old.secret, fresh.secret]) expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: s }), 200);
    expectStatus(await adminCall(srv, 'DELETE', `/v1/admin/api-keys/${old.key_id}${qs({ reason: 'rotated' })}`), 200);
    expectError(await srv.call('GET', '/v1/auth/introspect', { apiKey: old.secret }), 401, 'UNAUTHORIZED');
    expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: fresh.secret }), 200);
  });

  test('an expired key is EXPIRED in lists, refused with 401, invalid on validate, and cannot be changed (409)', async () => {
    const t = await createTenant(srv);
    const { key_id, secret } = await createKey(srv, t, { expires_at: iso(Date.now() + 1200) });
    expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 200);
    await sleep(1300);
    expectError(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 401, 'UNAUTHORIZED');
    assert.equal((await keyRecord(key_id)).status, 'EXPIRED');
    const expired = await pageAll(srv, '/v1/admin/api-keys', 'keys', { tenant_id: t, status: 'EXPIRED' });
    assert.deepEqual(expired.map((k) => k.key_id), [key_id]);
    assert.equal((await pageAll(srv, '/v1/admin/api-keys', 'keys', { tenant_id: t, status: 'ACTIVE' })).length, 0);
    const v = expectStatus(await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: secret }), 200);
    assert.deepEqual([v.valid, v.reason, v.tenant_id], [false, 'KEY_EXPIRED', '']);
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${key_id}`, { name: 'x' }), 409, 'INVALID_REQUEST');
  });
});

describe('validateApiKey', () => {
  test('always 200: valid with tenant, permissions and scope filter; invalid with a reason, auth_failed recorded', async () => {
    const t = await createTenant(srv);
    const { key_id, secret } = await createKey(srv, t, { permissions: ['balances:read'], scope_filter: ['agent:*'] });
    const ok = expectStatus(await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: secret }), 200);
    assert.deepEqual([ok.valid, ok.tenant_id, ok.key_id, ok.permissions, ok.scope_filter, ok.reason], [true, t, key_id, ['balances:read'], ['agent:*'], undefined]);
    const none = expectStatus(await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: 'cyc_live_nope' }), 200);
    assert.deepEqual([none.valid, none.reason], [false, 'KEY_NOT_FOUND']);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'SUSPENDED' }), 200);
    assert.equal(expectStatus(await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: secret }), 200).reason, 'TENANT_SUSPENDED');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'CLOSED' }), 200);
    // Closing revoked the key; the key check comes before the tenant check.
    assert.equal(expectStatus(await adminCall(srv, 'POST', '/v1/auth/validate', { key_secret: secret }), 200).reason, 'KEY_REVOKED');
    const failed = await events(srv, { tenant_id: t, event_type: 'api_key.auth_failed' });
    assert.deepEqual(failed.map((e) => e.data.failure_reason), ['tenant_suspended', 'key_revoked']);
    expectError(await adminCall(srv, 'POST', '/v1/auth/validate', {}), 400, 'INVALID_REQUEST');
    expectError(await srv.call('POST', '/v1/auth/validate', { apiKey: secret, body: { key_secret: secret } }), 401, 'UNAUTHORIZED');
  });
});

describe('last_used_at', () => {
  test('is stamped on use, at most once a minute, and never on a revoked key', async () => {
    const t = await createTenant(srv);
    const { key_id, secret } = await createKey(srv, t);
    assert.equal((await keyRecord(key_id)).last_used_at, undefined);
    expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 200);
    const first = await waitFor(async () => (await keyRecord(key_id)).last_used_at as string | undefined);
    await sleep(20);
    expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 200);
    await sleep(50);
    assert.equal((await keyRecord(key_id)).last_used_at, first, 'a second use within the minute writes nothing');
  });
});

describe('introspectAuth', () => {
  test('admin: all capabilities, permissions ["*"], no tenant_id; tenant: the normative derivation', async () => {
    const a = expectStatus(await adminCall(srv, 'GET', '/v1/auth/introspect'), 200);
    assert.deepEqual([a.auth_type, a.permissions, a.tenant_id], ['admin', ['*'], undefined]);
    assert.ok(Object.values(a.capabilities).every((v) => v === true));
    const t = await createTenant(srv);
    const { secret } = await createKey(srv, t, { permissions: ['admin:read', 'reservations:list'] });
    const k = expectStatus(await srv.call('GET', '/v1/auth/introspect', { apiKey: secret }), 200);
    assert.deepEqual([k.auth_type, k.tenant_id, k.scope_filter], ['tenant', t, undefined]);
    const c = k.capabilities;
    assert.deepEqual(
      [c.view_budgets, c.view_policies, c.view_events, c.view_webhooks, c.view_reservations, c.manage_budgets, c.manage_reservations],
      [true, true, true, true, true, false, false],
    );
    assert.deepEqual([c.view_overview, c.view_audit, c.view_tenants, c.view_api_keys, c.manage_tenants, c.manage_api_keys], [false, false, false, false, false, false]);
    expectError(await srv.call('GET', '/v1/auth/introspect'), 401, 'UNAUTHORIZED');
  });
});
