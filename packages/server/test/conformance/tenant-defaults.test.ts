/**
 * Tenant-level reservation defaults from the governance Tenant record (GOV, reference):
 * default_reservation_ttl_ms, max_reservation_ttl_ms (requests over the cap are capped, not
 * rejected) and default_commit_overage_policy. An explicit request field always wins.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, expectError, expectStatus, newTenant, reserveBody, reserveOk } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

test('default_reservation_ttl_ms applies when ttl_ms is omitted; an explicit ttl_ms wins', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }], { tenant: { default_reservation_ttl_ms: 5000 } });
  const before = Date.now();
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
  assert.ok(Math.abs(r.expires_at_ms - (before + 5000)) < 1500, `expires in ${r.expires_at_ms - before} ms, expected ~5000`);
  assert.ok(r.remaining_ttl_ms <= 5000);
  const r2 = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1, 'TOKENS', { ttl_ms: 20_000 }));
  assert.ok(Math.abs(r2.expires_at_ms - (before + 20_000)) < 1500);
});

test('ttl_ms above max_reservation_ttl_ms is capped (200), not rejected', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }], { tenant: { max_reservation_ttl_ms: 10_000 } });
  const before = Date.now();
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1, 'TOKENS', { ttl_ms: 60_000 }));
  assert.ok(r.expires_at_ms <= Date.now() + 10_000 + 50, 'capped to the tenant maximum');
  assert.ok(r.expires_at_ms >= before + 10_000 - 1500);
  assert.ok(r.remaining_ttl_ms <= 10_000);
});

test('default_commit_overage_policy REJECT applies when the request omits overage_policy', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000 }], { tenant: { default_commit_overage_policy: 'REJECT' } });
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
  expectError(await commit(srv, t.key, r.reservation_id, commitBody(11)), 409, 'BUDGET_EXCEEDED');
  const r2 = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { overage_policy: 'ALLOW_IF_AVAILABLE' }));
  const c = expectStatus(await commit(srv, t.key, r2.reservation_id, commitBody(11)), 200);
  assert.deepEqual(c.charged, { unit: 'TOKENS', amount: 11 });
});
