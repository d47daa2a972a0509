/**
 * Closed tenants (runtime half of the governance close cascade).
 * Spec: ERROR SEMANTICS, closed-tenant binding: 409 TENANT_CLOSED on the persisting surface,
 * taking precedence over RESERVATION_FINALIZED / RESERVATION_EXPIRED; same-key replays of
 * pre-close successes return the stored response; reads are never blocked; closing revokes keys (401).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, startTestServer, waitFor, type TestServer } from '../helpers/harness.js';
import {
  commit,
  commitBody,
  decide,
  decideBody,
  eventBody,
  expectError,
  expectStatus,
  newTenant,
  postEvent,
  qs,
  reserve,
  reserveBody,
  reserveOk,
  type TenantCtx,
} from '../helpers/runtime.js';

let srv: TestServer;
let t: TenantCtx;
let active: string;
let committed: string;
let releasedByAdmin: string;
let expired: string;
const adminReleaseBody = { idempotency_key: idem('adm-rel'), reason: '[INCIDENT_FORCE_RELEASE]' };
let adminReleaseResponse: unknown;

before(async () => {
  srv = await startTestServer({ sweepIntervalMs: 100 });
  t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  expired = (await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }))).reservation_id;
  active = (await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10))).reservation_id;
  committed = (await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10))).reservation_id;
  expectStatus(await commit(srv, t.key, committed, commitBody(5)), 200);
  releasedByAdmin = (await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10))).reservation_id;
  const rel = await srv.call('POST', `/v1/reservations/${releasedByAdmin}/release`, { admin: true, body: adminReleaseBody });
  adminReleaseResponse = expectStatus(rel, 200);
  await waitFor(async () => (await srv.call('GET', `/v1/reservations/${expired}`, { apiKey: t.key })).status === 410, 5000);
  const closed = await srv.call('PATCH', `/v1/admin/tenants/${t.tenant}`, { admin: true, body: { status: 'CLOSED' } });
  assert.equal(closed.status, 200, closed.text);
  assert.equal(closed.body.status, 'CLOSED');
});
after(async () => {
  await srv?.close();
});

test('fresh admin release on a closed tenant is 409 TENANT_CLOSED, also over RESERVATION_FINALIZED and RESERVATION_EXPIRED', async () => {
  for (const id of [active, committed, expired]) {
    const res = await srv.call('POST', `/v1/reservations/${id}/release`, { admin: true, body: { idempotency_key: idem('rel') } });
    expectError(res, 409, 'TENANT_CLOSED');
  }
});

test('a same-key replay of a release that succeeded before the close returns the stored response', async () => {
  const res = await srv.call('POST', `/v1/reservations/${releasedByAdmin}/release`, { admin: true, body: adminReleaseBody });
  assert.deepEqual(expectStatus(res, 200), adminReleaseResponse);
});

test('reads are never blocked: admin get and list of a closed tenant work', async () => {
  const g = expectStatus(await srv.call('GET', `/v1/reservations/${committed}`, { admin: true }), 200);
  assert.equal(g.status, 'COMMITTED');
  const list = expectStatus(await srv.call('GET', `/v1/reservations${qs({ tenant: t.tenant })}`, { admin: true }), 200);
  assert.equal(list.reservations.length, 4);
  for (const r of list.reservations as Array<{ status: string }>) assert.notEqual(r.status, 'ACTIVE', 'the close cascade leaves no open reservation');
});

test("the tenant's keys no longer authenticate mutations (401), or the guard answers TENANT_CLOSED; never success", async () => {
  const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
  if (res.status === 401) expectError(res, 401, 'UNAUTHORIZED');
  else expectError(res, 409, 'TENANT_CLOSED');
  const ev = await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 1));
  if (ev.status === 401) expectError(ev, 401, 'UNAUTHORIZED');
  else expectError(ev, 409, 'TENANT_CLOSED');
  const dry = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1, 'TOKENS', { dry_run: true }));
  if (dry.status === 401) expectError(dry, 401, 'UNAUTHORIZED');
  else assert.deepEqual([dry.status, dry.body.decision, dry.body.reason_code], [200, 'DENY', 'TENANT_CLOSED']);
  const dec = await decide(srv, t.key, decideBody({ tenant: t.tenant }, 1));
  if (dec.status === 401) expectError(dec, 401, 'UNAUTHORIZED');
  else assert.deepEqual([dec.status, dec.body.decision, dec.body.reason_code], [200, 'DENY', 'TENANT_CLOSED']);
});
