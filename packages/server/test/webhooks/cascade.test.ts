/** Closing a tenant disables its webhook subscriptions in the same step, once. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { expectStatus, newTenant } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ webhookAllowedHosts: '127.0.0.1', role: 'api' });
});
after(() => srv.close());

test('tenant close disables its subscriptions with one cascade event each; re-closing adds nothing', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
  const mk = async (status?: 'PAUSED') => {
    const id = expectStatus(await srv.call('POST', `/v1/admin/webhooks?tenant_id=${t.tenant}`, { admin: true, body: { url: 'http://127.0.0.1:9/h', event_types: ['budget.exhausted'] } }), 201).subscription.subscription_id as string;
    if (status) expectStatus(await srv.call('PATCH', `/v1/admin/webhooks/${id}`, { admin: true, body: { status } }), 200);
    return id;
  };
  const active = await mk();
  const paused = await mk('PAUSED');
  const other = await newTenant(srv, []);
  const untouched = expectStatus(await srv.call('POST', `/v1/admin/webhooks?tenant_id=${other.tenant}`, { admin: true, body: { url: 'http://127.0.0.1:9/h', event_types: ['budget.exhausted'] } }), 201).subscription.subscription_id;

  expectStatus(await srv.call('PATCH', `/v1/admin/tenants/${t.tenant}`, { admin: true, body: { status: 'CLOSED' } }), 200);
  for (const id of [active, paused]) {
    const w = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${id}`, { admin: true }), 200);
    assert.equal(w.status, 'DISABLED', id);
  }
  assert.equal(expectStatus(await srv.call('GET', `/v1/admin/webhooks/${untouched}`, { admin: true }), 200).status, 'ACTIVE');
  const events = async () =>
    expectStatus(await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&event_type=webhook.disabled_via_tenant_cascade`, { admin: true }), 200).events as Json[];
  const first = await events();
  assert.deepEqual(first.map((e) => e.data.subscription_id).sort(), [active, paused].sort());
  assert.ok(first.every((e) => e.data.cascade_reason === 'tenant_closed' && e.data.new_status === 'DISABLED'));
  assert.ok(first.every((e) => String(e.correlation_id).startsWith(`tenant_close_cascade:${t.tenant}:`)));

  // Re-closing duplicates nothing, and a closed tenant's subscriptions cannot be revived.
  expectStatus(await srv.call('PATCH', `/v1/admin/tenants/${t.tenant}`, { admin: true, body: { status: 'CLOSED' } }), 200);
  assert.equal((await events()).length, 2);
  const revive = await srv.call('PATCH', `/v1/admin/webhooks/${active}`, { admin: true, body: { status: 'ACTIVE' } });
  assert.equal(revive.status, 409);
  assert.equal(revive.body.error, 'TENANT_CLOSED');
  assert.equal((await srv.call('POST', `/v1/admin/webhooks?tenant_id=${t.tenant}`, { admin: true, body: { url: 'http://127.0.0.1:9/h', event_types: ['budget.exhausted'] } })).status, 409);
});
