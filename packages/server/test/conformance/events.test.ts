/**
 * POST /v1/events: post-only accounting, 201 APPLIED, applied atomically on every budgeted
 * derived scope, with event-specific overage semantics.
 * Spec: createEvent, EventCreateRequest.overage_policy, EventCreateResponse.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import { amounts, balanceOf, eventBody, expectError, expectStatus, newTenant, postEvent } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

test('201 (never 200) APPLIED with a server-generated event_id; spent rises on every budgeted scope', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:prod', allocated: 300 },
  ]);
  const res = await postEvent(srv, t.key, eventBody({ tenant: t.tenant, workspace: 'prod', agent: 'z' }, 120, 'TOKENS', { client_time_ms: 1, metrics: { latency_ms: 5 }, metadata: { a: 1 } }));
  const b = expectStatus(res, 201);
  assert.equal(b.status, 'APPLIED');
  assert.equal(typeof b.event_id, 'string');
  assert.ok(b.event_id.length > 0);
  const root = amounts(await balanceOf(srv, t, t.scope()));
  const ws = amounts(await balanceOf(srv, t, t.scope('workspace:prod')));
  assert.deepEqual([root.spent, root.remaining], [120, 880]);
  assert.deepEqual([ws.spent, ws.remaining], [120, 180]);
  const second = expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 1)), 201);
  assert.notEqual(second.event_id, b.event_id);
});

test('no budget at any derived scope: 404 NOT_FOUND', async () => {
  const t = await newTenant(srv, []);
  const err = expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 1)), 404, 'NOT_FOUND');
  assert.match(err.message, /budget not found/i);
});

test('budget only in another unit: 400 UNIT_MISMATCH', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100, unit: 'TOKENS' }]);
  const err = expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 1, 'RISK_POINTS')), 400, 'UNIT_MISMATCH');
  assert.equal(err.details?.requested_unit, 'RISK_POINTS');
});

test('REJECT compares actual with remaining (not with any estimate): within remaining 201, beyond it 409 BUDGET_EXCEEDED', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 60, 'TOKENS', { overage_policy: 'REJECT' })), 201);
  expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 41, 'TOKENS', { overage_policy: 'REJECT' })), 409, 'BUDGET_EXCEEDED');
  expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 40, 'TOKENS', { overage_policy: 'REJECT' })), 201);
  const bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.deepEqual([bal.spent, bal.remaining], [100, 0]);
});

test('REJECT is atomic across scopes: a short child rejects and the parent is untouched', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'agent:a', allocated: 10 },
  ]);
  expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant, agent: 'a' }, 11, 'TOKENS', { overage_policy: 'REJECT' })), 409, 'BUDGET_EXCEEDED');
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 0);
});

test('ALLOW_IF_AVAILABLE (default) caps the charge at remaining, reports charged, and sets is_over_limit', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50 }]);
  const b = expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 80)), 201);
  assert.deepEqual(b.charged, { unit: 'TOKENS', amount: 50 });
  const bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.deepEqual([bal.spent, bal.remaining, bal.debt, bal.over], [50, 0, 0, true]);
});

test('ALLOW_IF_AVAILABLE within remaining: charged (if present) equals actual', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50 }]);
  const b = expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 20)), 201);
  if (b.charged !== undefined) assert.deepEqual(b.charged, { unit: 'TOKENS', amount: 20 });
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).over, false);
});

test('ALLOW_WITH_OVERDRAFT: within the limit the shortfall becomes debt; beyond it 409 OVERDRAFT_LIMIT_EXCEEDED', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50, overdraft_limit: 200 }]);
  expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 120, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' })), 201);
  let bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.equal(bal.remaining, -70);
  assert.equal(bal.spent + bal.debt, 120, 'the overdraft is counted once');
  assert.ok(bal.debt >= 70 && bal.debt <= 200);
  expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 200, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' })), 409, 'OVERDRAFT_LIMIT_EXCEEDED');
  bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.equal(bal.remaining, -70, 'a refused event changes nothing');
});

test('subject.tenant of another tenant: 403 FORBIDDEN', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50 }]);
  expectError(await postEvent(srv, t.key, eventBody({ tenant: `${t.tenant}x` }, 1)), 403, 'FORBIDDEN');
});

test('invalid event bodies: 400 INVALID_REQUEST', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 50 }]);
  const { actual: _a, ...noActual } = eventBody({ tenant: t.tenant }, 1);
  for (const body of [noActual, eventBody({ tenant: t.tenant }, -5), eventBody({ tenant: t.tenant }, 1, 'TOKENS', { client_time_ms: -1 }), eventBody({ tenant: t.tenant }, 1, 'TOKENS', { estimate: { unit: 'TOKENS', amount: 1 } })]) {
    expectError(await postEvent(srv, t.key, body), 400, 'INVALID_REQUEST');
  }
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 0);
});
