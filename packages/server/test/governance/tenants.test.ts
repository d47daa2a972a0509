/**
 * Tenants: create (201 / 200 same name / 409 different name), get, list (filters, search, sort,
 * cursor), update (settings and the ACTIVE / SUSPENDED / CLOSED lifecycle) and their events.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, uid, type Json, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, qs, reserve, reserveBody, reserveOk, release, commit, commitBody } from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant, events, pageAll } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

describe('createTenant', () => {
  test('201 with the effective defaults filled in, then 200 for the same name, 409 DUPLICATE_RESOURCE for another', async () => {
    const id = uid('c');
    const created = expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: 'Acme', metadata: { plan: 'pro' } }), 201);
    assert.equal(created.status, 'ACTIVE');
    assert.equal(created.default_commit_overage_policy, 'ALLOW_IF_AVAILABLE');
    assert.equal(created.default_reservation_ttl_ms, 60000);
    assert.equal(created.max_reservation_ttl_ms, 3600000);
    assert.equal(created.max_reservation_extensions, 10);
    assert.deepEqual(created.metadata, { plan: 'pro' });
    const again = expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: 'Acme' }), 200);
    assert.equal(again.created_at, created.created_at);
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: 'Other' }), 409, 'DUPLICATE_RESOURCE');
    const evs = await events(srv, { tenant_id: id, event_type: 'tenant.created' });
    assert.equal(evs.length, 1, 'the idempotent 200 emits no second tenant.created');
    assert.deepEqual(evs[0].data, { tenant_id: id, new_status: 'ACTIVE', changed_fields: [] });
    assert.equal(evs[0].actor.type, 'admin');
  });

  test('invalid ids, unknown fields, unknown parent and default TTL above max are 400', async () => {
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: 'Bad_ID', name: 'x' }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: uid('c'), name: 'x', plan: 'pro' }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: uid('c'), name: 'x', parent_tenant_id: 'no-such-parent' }), 400, 'INVALID_REQUEST');
    const id = await createTenant(srv);
    const bad = await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { default_reservation_ttl_ms: 7_200_000 });
    expectError(bad, 400, 'INVALID_REQUEST');
  });
});

describe('getTenant / listTenants', () => {
  test('get of an unknown tenant is 404 TENANT_NOT_FOUND', async () => {
    expectError(await adminCall(srv, 'GET', '/v1/admin/tenants/no-such-tenant'), 404, 'TENANT_NOT_FOUND');
  });

  test('filters (status, parent, search) apply before the limit, sorting is stable, cursors resume exactly', async () => {
    const parent = await createTenant(srv);
    const tag = uid('zq');
    const kids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const id = `${tag}-${i}`;
      expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: `Kid ${i} ${tag}`, parent_tenant_id: parent }), 201);
      kids.push(id);
    }
    // Suspend two: the status filter must still fill a page from the matching rows only.
    for (const id of [kids[1]!, kids[4]!]) expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'SUSPENDED' }), 200);
    const suspended = await pageAll(srv, '/v1/admin/tenants', 'tenants', { parent_tenant_id: parent, status: 'SUSPENDED', limit: 1 });
    assert.deepEqual(suspended.map((t) => t.tenant_id).sort(), [kids[1], kids[4]].sort());

    const byName = await pageAll(srv, '/v1/admin/tenants', 'tenants', { search: tag.toUpperCase(), sort_by: 'tenant_id', sort_dir: 'asc', limit: 3 });
    assert.deepEqual(byName.map((t) => t.tenant_id), [...kids].sort());
    const desc = await pageAll(srv, '/v1/admin/tenants', 'tenants', { parent_tenant_id: parent, sort_by: 'name', sort_dir: 'desc', limit: 2 });
    assert.deepEqual(desc.map((t) => t.name), desc.map((t) => t.name as string).sort().reverse());
    assert.equal(desc.length, 7);
    // Default order is created_at desc.
    const dflt = await pageAll(srv, '/v1/admin/tenants', 'tenants', { parent_tenant_id: parent, limit: 4 });
    const times = dflt.map((t) => Date.parse(t.created_at as string));
    assert.deepEqual(times, [...times].sort((a, b) => b - a));
  });

  test('bad list parameters are 400; search over 128 characters is 400; blank search is ignored', async () => {
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ sort_by: 'nope' })}`), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ sort_dir: 'up' })}`), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ status: 'GONE' })}`), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ search: 'x'.repeat(129) })}`), 400, 'INVALID_REQUEST');
    const all = expectStatus(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ search: '   ', observe_mode: 'OBSERVE', limit: 1 })}`), 200);
    assert.equal(all.tenants.length, 1);
  });

  test('a cursor is bound to its filters and sort: reusing it with other parameters is 400', async () => {
    await createTenant(srv);
    await createTenant(srv);
    const first = expectStatus(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ limit: 1 })}`), 200);
    assert.equal(first.has_more, true);
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ limit: 1, sort_by: 'name', cursor: first.next_cursor })}`), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'GET', `/v1/admin/tenants${qs({ cursor: 'not-a-cursor' })}`), 400, 'INVALID_REQUEST');
  });
});

describe('updateTenant', () => {
  test('settings change with tenant.updated listing only the fields that changed; a no-op emits nothing', async () => {
    const id = await createTenant(srv);
    const t = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { name: 'Renamed', default_reservation_ttl_ms: 30000, max_reservation_extensions: 10 }), 200);
    assert.equal(t.name, 'Renamed');
    assert.equal(t.default_reservation_ttl_ms, 30000);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { name: 'Renamed' }), 200);
    const evs = await events(srv, { tenant_id: id, event_type: 'tenant.updated' });
    assert.equal(evs.length, 1);
    assert.deepEqual(evs[0].data.changed_fields, ['name', 'default_reservation_ttl_ms']);
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { reservation_expiry_policy: 'MANUAL_CLEANUP' }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', '/v1/admin/tenants/no-such-tenant', { name: 'x' }), 404, 'TENANT_NOT_FOUND');
  });

  test('tenant defaults govern new reservations: TTL and the default overage policy', async () => {
    const id = await createTenant(srv, { default_reservation_ttl_ms: 5000, default_commit_overage_policy: 'REJECT' });
    await createBudget(srv, id, '', 1000);
    const key = (await createKey(srv, id)).secret;
    const r = await reserveOk(srv, key, reserveBody({ tenant: id }, 10));
    assert.equal(r.expires_at_ms - Date.now() <= 5000, true);
    expectError(await commit(srv, key, r.reservation_id, commitBody(11)), 409, 'BUDGET_EXCEEDED');
  });

  test('ACTIVE -> SUSPENDED blocks new reservations while open ones still settle; SUSPENDED -> ACTIVE resumes', async () => {
    const id = await createTenant(srv);
    await createBudget(srv, id, '', 1000);
    const key = (await createKey(srv, id)).secret;
    const open = await reserveOk(srv, key, reserveBody({ tenant: id }, 10));
    const s = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'SUSPENDED' }), 200);
    assert.equal(s.status, 'SUSPENDED');
    assert.equal(typeof s.suspended_at, 'string');
    const blocked = await reserve(srv, key, reserveBody({ tenant: id }, 1));
    assert.equal(blocked.status, 403);
    expectStatus(await release(srv, key, open.reservation_id), 200);
    const a = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'ACTIVE' }), 200);
    assert.equal(a.status, 'ACTIVE');
    assert.equal(a.suspended_at, undefined);
    await reserveOk(srv, key, reserveBody({ tenant: id }, 1));
    const types = (await events(srv, { tenant_id: id, category: 'tenant' })).map((e: Json) => [e.event_type, e.data.previous_status, e.data.new_status]);
    assert.deepEqual(types, [
      ['tenant.created', undefined, 'ACTIVE'],
      ['tenant.suspended', 'ACTIVE', 'SUSPENDED'],
      ['tenant.reactivated', 'SUSPENDED', 'ACTIVE'],
    ]);
  });

  test('CLOSED is terminal: CLOSED -> ACTIVE and settings changes are 400; re-closing is a 200 no-op', async () => {
    const id = await createTenant(srv);
    const c = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'CLOSED' }), 200);
    assert.equal(c.status, 'CLOSED');
    assert.equal(typeof c.closed_at, 'string');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'ACTIVE' }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { name: 'zombie' }), 400, 'INVALID_REQUEST');
    const again = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${id}`, { status: 'CLOSED' }), 200);
    assert.equal(again.closed_at, c.closed_at);
    assert.equal((await events(srv, { tenant_id: id, event_type: 'tenant.closed' })).length, 1);
    // Reads stay available.
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/tenants/${id}`), 200);
  });
});
