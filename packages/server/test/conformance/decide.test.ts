/**
 * POST /v1/decide: budget-state conditions are 200 DENY with a reason code; only
 * UNIT_MISMATCH (400), FORBIDDEN (403) and IDEMPOTENCY_MISMATCH (409) are errors.
 * Spec: decide (DEBT/OVERDRAFT STATE, CLOSED TENANT, IDEMPOTENCY); ERROR SEMANTICS (d).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, startTestServer, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  decide,
  decideBody,
  expectError,
  expectStatus,
  listReservations,
  newTenant,
  reserve,
  reserveBody,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

test('ALLOW: 200 with affected_scopes in canonical order, no caps, nothing reserved', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const b = expectStatus(await decide(srv, t.key, decideBody({ tenant: t.tenant, app: 'web', agent: 'x' }, 100)), 200);
  assert.equal(b.decision, 'ALLOW');
  assert.equal(b.caps, undefined, 'caps MUST be absent unless ALLOW_WITH_CAPS');
  assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/app:web`, `tenant:${t.tenant}/app:web/agent:x`]);
  const bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.deepEqual([bal.reserved, bal.remaining], [0, 100]);
  assert.equal(expectStatus(await listReservations(srv, t.key), 200).reservations.length, 0);
});

test('insufficient budget: 200 DENY reason_code BUDGET_EXCEEDED (never 409)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const b = expectStatus(await decide(srv, t.key, decideBody({ tenant: t.tenant }, 101)), 200);
  assert.equal(b.decision, 'DENY');
  assert.equal(b.reason_code, 'BUDGET_EXCEEDED');
  assert.equal(b.caps, undefined);
});

test('child budget smaller than the parent: DENY BUDGET_EXCEEDED', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:prod', allocated: 5 },
  ]);
  const b = expectStatus(await decide(srv, t.key, decideBody({ tenant: t.tenant, workspace: 'prod' }, 6)), 200);
  assert.equal(b.decision, 'DENY');
  assert.equal(b.reason_code, 'BUDGET_EXCEEDED');
});

test('no budget in any unit: 200 DENY reason_code BUDGET_NOT_FOUND (decide declares no 404)', async () => {
  const t = await newTenant(srv, []);
  const b = expectStatus(await decide(srv, t.key, decideBody({ tenant: t.tenant }, 1)), 200);
  assert.equal(b.decision, 'DENY');
  assert.equal(b.reason_code, 'BUDGET_NOT_FOUND');
});

test('budget only in another unit: 400 UNIT_MISMATCH with details', async () => {
  const t = await newTenant(srv, [{ at: 'workspace:prod', allocated: 10, unit: 'USD_MICROCENTS' }]);
  const err = expectError(await decide(srv, t.key, decideBody({ tenant: t.tenant, workspace: 'prod' }, 1, 'TOKENS')), 400, 'UNIT_MISMATCH');
  assert.equal(err.details?.scope, `tenant:${t.tenant}/workspace:prod`);
  assert.equal(err.details?.requested_unit, 'TOKENS');
  assert.deepEqual(err.details?.expected_units, ['USD_MICROCENTS']);
});

test('subject.tenant of another tenant: 403 FORBIDDEN', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  expectError(await decide(srv, t.key, decideBody({ tenant: `${t.tenant}-other` }, 1)), 403, 'FORBIDDEN');
});

test('invalid request: 400 INVALID_REQUEST (missing estimate, dry_run is not a decide field)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const { estimate: _estimate, ...noEstimate } = decideBody({ tenant: t.tenant }, 1);
  expectError(await decide(srv, t.key, noEstimate), 400, 'INVALID_REQUEST');
  expectError(await decide(srv, t.key, decideBody({ tenant: t.tenant }, 1, 'TOKENS', { dry_run: true })), 400, 'INVALID_REQUEST');
});

test('same-key replay returns the original decision even after the budget changed; a new key re-evaluates', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const body = decideBody({ tenant: t.tenant }, 80);
  const first = expectStatus(await decide(srv, t.key, body), 200);
  assert.equal(first.decision, 'ALLOW');
  expectStatus(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 50)), 200);
  const replay = expectStatus(await decide(srv, t.key, body), 200);
  assert.deepEqual(replay, first);
  const fresh = expectStatus(await decide(srv, t.key, { ...body, idempotency_key: idem('dec') }), 200);
  assert.equal(fresh.decision, 'DENY');
  assert.equal(fresh.reason_code, 'BUDGET_EXCEEDED');
});

test('same key with a different payload: 409 IDEMPOTENCY_MISMATCH (the only decide 409)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const body = decideBody({ tenant: t.tenant }, 10);
  expectStatus(await decide(srv, t.key, body), 200);
  expectError(await decide(srv, t.key, { ...body, estimate: { unit: 'TOKENS', amount: 11 } }), 409, 'IDEMPOTENCY_MISMATCH');
});

test('ALLOW_WITH_CAPS carries caps from a matching policy (skipped when policies are not implemented)', async (t) => {
  const ctx = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  const caps = { max_tokens: 256, tool_denylist: ['shell.exec'] };
  const res = await srv.call('POST', '/v1/admin/policies', {
    admin: true,
    body: { tenant_id: ctx.tenant, name: 'caps', scope_pattern: `tenant:${ctx.tenant}/*`, caps },
    skipSpec: true,
  });
  if (res.status === 404 || res.status === 405) {
    t.skip('createPolicy not implemented');
    return;
  }
  assert.equal(res.status, 201, res.text);
  const b = expectStatus(await decide(srv, ctx.key, decideBody({ tenant: ctx.tenant, workspace: 'w' }, 1)), 200);
  assert.equal(b.decision, 'ALLOW_WITH_CAPS');
  assert.deepEqual(b.caps, caps);
  const r = expectStatus(await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant, workspace: 'w' }, 1)), 200);
  assert.equal(r.decision, 'ALLOW_WITH_CAPS');
  assert.deepEqual(r.caps, caps);
  const dry = expectStatus(await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant, workspace: 'w' }, 1, 'TOKENS', { dry_run: true })), 200);
  assert.equal(dry.decision, 'ALLOW_WITH_CAPS');
  assert.deepEqual(dry.caps, caps);
});
