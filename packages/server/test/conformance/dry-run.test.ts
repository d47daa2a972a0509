/**
 * createReservation with dry_run=true: a full evaluation that persists nothing.
 * Spec: createReservation DRY-RUN RESPONSE RULES; DecisionReasonCode; ReservationCreateResponse.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { amounts, balanceOf, expectError, expectStatus, listReservations, newTenant, reserve, reserveBody } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

function assertNoLiveFields(b: Record<string, unknown>): void {
  assert.equal(b.reservation_id, undefined, 'reservation_id MUST be absent on dry_run');
  assert.equal(b.expires_at_ms, undefined, 'expires_at_ms MUST be absent on dry_run');
  assert.equal(b.remaining_ttl_ms, undefined, 'remaining_ttl_ms MUST be absent on dry_run');
}

test('dry_run ALLOW: 200, no reservation_id/expires_at_ms/remaining_ttl_ms, affected_scopes present, nothing persisted', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  const body = reserveBody({ tenant: t.tenant, workspace: 'prod' }, 100, 'TOKENS', { dry_run: true });
  const b = expectStatus(await reserve(srv, t.key, body), 200);
  assert.equal(b.decision, 'ALLOW');
  assertNoLiveFields(b);
  assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/workspace:prod`]);
  assert.equal(b.caps, undefined, 'caps MUST be absent unless ALLOW_WITH_CAPS');
  if (b.balances !== undefined) {
    // Balances MAY be present but must reflect a non-mutating evaluation.
    const root = (b.balances as Json[]).find((x) => x.scope_path === `tenant:${t.tenant}`);
    if (root?.reserved) assert.equal(root.reserved.amount, 0);
  }
  const bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.deepEqual([bal.reserved, bal.remaining], [0, 1000]);
  const list = expectStatus(await listReservations(srv, t.key, { idempotency_key: body.idempotency_key as string }), 200);
  assert.equal(list.reservations.length, 0, 'dry_run must not persist a reservation');
  const all = expectStatus(await listReservations(srv, t.key), 200);
  assert.equal(all.reservations.length, 0);
});

test('dry_run insufficient budget: 200 DENY with reason_code BUDGET_EXCEEDED (not 409)', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:prod', allocated: 10 },
  ]);
  const b = expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod' }, 11, 'TOKENS', { dry_run: true })), 200);
  assert.equal(b.decision, 'DENY');
  assert.equal(b.reason_code, 'BUDGET_EXCEEDED');
  assertNoLiveFields(b);
  assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/workspace:prod`]);
  assert.equal(b.caps, undefined);
});

test('dry_run with no budget in any unit: 200 DENY BUDGET_NOT_FOUND (not 404)', async () => {
  const t = await newTenant(srv, []);
  const b = expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant, agent: 'a' }, 1, 'TOKENS', { dry_run: true })), 200);
  assert.equal(b.decision, 'DENY');
  assert.equal(b.reason_code, 'BUDGET_NOT_FOUND');
  assertNoLiveFields(b);
  assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/agent:a`]);
});

test('dry_run with a budget only in another unit: 400 UNIT_MISMATCH (request-validity errors stay errors)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000, unit: 'TOKENS' }]);
  const err = expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1, 'CREDITS', { dry_run: true })), 400, 'UNIT_MISMATCH');
  assert.equal(err.details?.requested_unit, 'CREDITS');
  assert.deepEqual(err.details?.expected_units, ['TOKENS']);
});

test('dry_run with another tenant in subject: 403 FORBIDDEN', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  const other = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  expectError(await reserve(srv, t.key, reserveBody({ tenant: other.tenant }, 1, 'TOKENS', { dry_run: true })), 403, 'FORBIDDEN');
});

test('dry_run does not consume budget: repeated evaluations at the full remaining all ALLOW', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50 }]);
  for (let i = 0; i < 3; i++) {
    const b = expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 50, 'TOKENS', { dry_run: true })), 200);
    assert.equal(b.decision, 'ALLOW');
  }
  const live = expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 50)), 200);
  assert.equal(typeof live.reservation_id, 'string');
});

test('dry_run same-key replay returns the identical body', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const body = reserveBody({ tenant: t.tenant }, 60, 'TOKENS', { dry_run: true });
  const first = expectStatus(await reserve(srv, t.key, body), 200);
  assert.equal(first.decision, 'ALLOW');
  // Change the budget state: a fresh evaluation would now DENY, the replay must not.
  expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 60)), 200);
  const again = expectStatus(await reserve(srv, t.key, body), 200);
  assert.deepEqual(again, first);
  const fresh = expectStatus(await reserve(srv, t.key, { ...body, idempotency_key: `${body.idempotency_key as string}-2` }), 200);
  assert.equal(fresh.decision, 'DENY');
});
