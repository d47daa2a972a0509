/** getAdminOverview: counts, top offenders and recent events for the dashboard home page. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, decide, decideBody, expectError, expectStatus, qs, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant } from './support.js';

let srv: TestServer;
before(async () => {
  // A fresh server: the counts below are exact.
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

test('counts, over-limit and debt scopes, recent denials with reasons, in one call', async () => {
  const empty = expectStatus(await adminCall(srv, 'GET', '/v1/admin/overview'), 200);
  assert.deepEqual(empty.tenant_counts, { total: 0, active: 0, suspended: 0, closed: 0 });
  assert.equal(empty.event_window_seconds, 3600);

  const a = await createTenant(srv);
  const b = await createTenant(srv);
  const c = await createTenant(srv);
  expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${b}`, { status: 'SUSPENDED' }), 200);
  expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${c}`, { status: 'CLOSED' }), 200);
  await createBudget(srv, a, '', 100, { overdraft_limit: { unit: 'TOKENS', amount: 50 } });
  await createBudget(srv, a, 'app:x', 10, {}, 'CREDITS');
  await createBudget(srv, a, 'app:y', 10);
  expectStatus(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${qs({ scope: `tenant:${a}/app:y`, unit: 'TOKENS' })}`, {}), 200);
  const key = (await createKey(srv, a)).secret;
  const r = await reserveOk(srv, key, reserveBody({ tenant: a }, 100, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' }));
  expectStatus(await commit(srv, key, r.reservation_id, commitBody(140)), 200);
  expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${qs({ scope: `tenant:${a}`, unit: 'TOKENS' })}`, { overdraft_limit: { unit: 'TOKENS', amount: 10 } }), 200);
  for (let i = 0; i < 2; i++) expectStatus(await decide(srv, key, decideBody({ tenant: a }, 1000)), 200);

  const o = expectStatus(await adminCall(srv, 'GET', '/v1/admin/overview'), 200);
  assert.deepEqual(o.tenant_counts, { total: 3, active: 1, suspended: 1, closed: 1 });
  assert.deepEqual(o.budget_counts, { total: 3, active: 2, frozen: 1, closed: 0, over_limit: 1, with_debt: 1, by_unit: { CREDITS: 1, TOKENS: 2 } });
  assert.deepEqual(o.over_limit_scopes, [{ scope: `tenant:${a}`, unit: 'TOKENS', allocated: 100, remaining: -40, debt: 40 }]);
  assert.deepEqual(o.debt_scopes, [{ scope: `tenant:${a}`, unit: 'TOKENS', debt: 40, overdraft_limit: 10 }]);
  assert.equal(o.recent_denials.length, 2);
  assert.ok(o.recent_denials.every((e: Json) => e.event_type === 'reservation.denied' && e.tenant_id === a));
  assert.deepEqual(o.recent_denials_by_reason, { OVERDRAFT_LIMIT_EXCEEDED: 2 });
  assert.deepEqual(o.recent_expiries, []);
  assert.ok(o.event_counts.by_category.tenant >= 5);
  assert.equal(o.event_counts.total_recent, Object.values(o.event_counts.by_category as Record<string, number>).reduce((x, y) => x + y, 0));
  assert.equal(typeof o.webhook_counts.total, 'number');
  assert.ok(Date.parse(o.as_of) <= Date.now());
  expectError(await srv.call('GET', '/v1/admin/overview', { apiKey: key }), 401, 'UNAUTHORIZED');
});
