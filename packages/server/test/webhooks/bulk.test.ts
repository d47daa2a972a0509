/** bulkActionWebhooks: same filter as the list, preview counts, expected_count, replay, per-row outcomes. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { idem, startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { expectStatus, newTenant } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ webhookAllowedHosts: '127.0.0.1', role: 'api' });
});
after(() => srv.close());

async function sub(tenant: string, status?: 'PAUSED'): Promise<string> {
  const id = expectStatus(await srv.call('POST', `/v1/admin/webhooks?tenant_id=${tenant}`, { admin: true, body: { url: 'http://127.0.0.1:9/h', event_types: ['budget.exhausted'] } }), 201).subscription.subscription_id as string;
  if (status) expectStatus(await srv.call('PATCH', `/v1/admin/webhooks/${id}`, { admin: true, body: { status } }), 200);
  return id;
}
const bulk = (body: Record<string, unknown>) => srv.call('POST', '/v1/admin/webhooks/bulk-action', { admin: true, body });
const statusOf = async (id: string) => expectStatus(await srv.call('GET', `/v1/admin/webhooks/${id}`, { admin: true }), 200).status;

test('PAUSE applies to matching rows, skips those already paused, replays byte for byte', async () => {
  const t = await newTenant(srv, []);
  const [a, b, c] = [await sub(t.tenant), await sub(t.tenant), await sub(t.tenant, 'PAUSED')];
  const preview = expectStatus(await srv.call('GET', `/v1/admin/webhooks?tenant_id=${t.tenant}`, { admin: true }), 200).subscriptions.length;
  const key = idem('bulk');
  const body = { filter: { tenant_id: t.tenant }, action: 'PAUSE', idempotency_key: key, expected_count: preview };
  const first = expectStatus(await bulk(body), 200);
  assert.equal(first.total_matched, 3);
  assert.deepEqual(first.succeeded.map((r: Json) => r.id).sort(), [a, b].sort());
  assert.deepEqual(first.skipped, [{ id: c, reason: 'ALREADY_IN_TARGET_STATE' }]);
  assert.deepEqual(first.failed, []);
  for (const id of [a, b, c]) assert.equal(await statusOf(id), 'PAUSED');
  const again = await bulk(body);
  assert.equal(again.status, 200);
  assert.equal(again.text, JSON.stringify(first), 'replay is the original reply');
  const all = expectStatus(await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&event_type=webhook.paused`, { admin: true }), 200).events as Json[];
  const paused = all.filter((e) => String(e.correlation_id).startsWith('webhook_bulk_action:pause:'));
  assert.equal(paused.length, 2, 'one event per mutated row, none for skipped rows or replays');
  assert.deepEqual(paused.map((e) => e.data.subscription_id).sort(), [a, b].sort());
  const mismatch = await bulk({ ...body, action: 'DELETE' });
  assert.equal(mismatch.status, 409);
  assert.equal(mismatch.body.error, 'IDEMPOTENCY_MISMATCH');
});

test('expected_count and empty filters refuse without changing anything; RESUME and DELETE', async () => {
  const t = await newTenant(srv, []);
  const [a, b] = [await sub(t.tenant, 'PAUSED'), await sub(t.tenant)];
  const wrong = await bulk({ filter: { tenant_id: t.tenant }, action: 'DELETE', idempotency_key: idem('bulk'), expected_count: 5 });
  assert.equal(wrong.status, 409);
  assert.equal(wrong.body.error, 'COUNT_MISMATCH');
  assert.equal(wrong.body.details.total_matched, 2);
  assert.equal(await statusOf(a), 'PAUSED');
  assert.equal((await bulk({ filter: {}, action: 'PAUSE', idempotency_key: idem('bulk') })).status, 400);
  // A refused request leaves its key free to use.
  const key = idem('bulk');
  assert.equal((await bulk({ filter: { tenant_id: t.tenant }, action: 'RESUME', idempotency_key: key, expected_count: 9 })).status, 409);
  const resumed = expectStatus(await bulk({ filter: { tenant_id: t.tenant }, action: 'RESUME', idempotency_key: key }), 200);
  assert.deepEqual(resumed.succeeded, [{ id: a }]);
  assert.deepEqual(resumed.skipped, [{ id: b, reason: 'ALREADY_IN_TARGET_STATE' }]);
  const deleted = expectStatus(await bulk({ filter: { tenant_id: t.tenant, status: 'ACTIVE' }, action: 'DELETE', idempotency_key: idem('bulk') }), 200);
  assert.equal(deleted.succeeded.length, 2);
  assert.equal((await srv.call('GET', `/v1/admin/webhooks/${a}`, { admin: true })).status, 404);
});

test('bulk RESUME never revives a disabled subscription', async () => {
  const t = await newTenant(srv, []);
  const id = await sub(t.tenant);
  expectStatus(await srv.call('PATCH', `/v1/admin/tenants/${t.tenant}`, { admin: true, body: { status: 'CLOSED' } }), 200);
  assert.equal(await statusOf(id), 'DISABLED');
  const res = expectStatus(await bulk({ filter: { tenant_id: t.tenant }, action: 'RESUME', idempotency_key: idem('bulk') }), 200);
  assert.equal(res.failed.length, 1);
  assert.ok(['TENANT_CLOSED', 'INVALID_TRANSITION'].includes(res.failed[0].error_code));
  assert.equal(await statusOf(id), 'DISABLED');
});
