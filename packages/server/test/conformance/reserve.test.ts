/**
 * createReservation (POST /v1/reservations): status codes, response shape, scope
 * derivation, hierarchical enforcement, NOT_FOUND vs UNIT_MISMATCH and request validation.
 * Spec: cycles-protocol-v0.yaml createReservation, SCOPE DERIVATION, ERROR SEMANTICS.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import {
  ACTION,
  amounts,
  balanceOf,
  expectError,
  expectStatus,
  getReservation,
  newTenant,
  reserve,
  reserveBody,
  reserveOk,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

describe('createReservation: success shape', () => {
  test('create returns 200 (never 201) with reservation_id, reserved, expires_at_ms, remaining_ttl_ms, scope_path, affected_scopes', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const before = Date.now();
    const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod', agent: 'bot' }, 100, 'TOKENS', { ttl_ms: 30_000 }));
    const after = Date.now();
    const b = expectStatus(res, 200);
    assert.equal(b.decision, 'ALLOW');
    assert.equal(typeof b.reservation_id, 'string');
    assert.ok(b.reservation_id.length > 0);
    assert.deepEqual(b.reserved, { unit: 'TOKENS', amount: 100 });
    assert.ok(b.expires_at_ms >= before + 30_000 - 1000 && b.expires_at_ms <= after + 30_000 + 1000, `expires_at_ms ${b.expires_at_ms} ~ now + ttl`);
    assert.equal(typeof b.remaining_ttl_ms, 'number', 'remaining_ttl_ms SHOULD be emitted on create');
    assert.ok(b.remaining_ttl_ms > 25_000 && b.remaining_ttl_ms <= 30_000, `remaining_ttl_ms ${b.remaining_ttl_ms}`);
    assert.equal(b.scope_path, `tenant:${t.tenant}/workspace:prod/agent:bot`);
    assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/workspace:prod`, `tenant:${t.tenant}/workspace:prod/agent:bot`]);
    assert.equal(b.caps, undefined, 'caps MUST be absent unless ALLOW_WITH_CAPS');
  });

  test('ttl_ms defaults to 60000', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const before = Date.now();
    const b = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
    assert.ok(Math.abs(b.expires_at_ms - (before + 60_000)) < 2000, `expires_at_ms ${b.expires_at_ms - before} ms after request, expected ~60000`);
  });

  test('GET returns the ACTIVE reservation with the same subject (dimensions round-tripped), action, amounts and scopes', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const subject = { tenant: t.tenant, workspace: 'prod', dimensions: { cost_center: 'cc-42', run_id: 'run-1' } };
    const body = reserveBody(subject, 10, 'TOKENS', { metadata: { note: 'x' } });
    const b = await reserveOk(srv, t.key, body);
    const g = expectStatus(await getReservation(srv, t.key, b.reservation_id), 200);
    assert.equal(g.reservation_id, b.reservation_id);
    assert.equal(g.status, 'ACTIVE');
    assert.deepEqual(g.subject, subject);
    assert.deepEqual(g.action, ACTION);
    assert.deepEqual(g.reserved, { unit: 'TOKENS', amount: 10 });
    assert.equal(g.expires_at_ms, b.expires_at_ms);
    assert.equal(g.scope_path, b.scope_path);
    assert.deepEqual(g.affected_scopes, b.affected_scopes);
    assert.equal(g.finalized_at_ms, undefined, 'finalized_at_ms is absent on ACTIVE reservations');
    assert.equal(g.committed, undefined);
    assert.deepEqual(g.metadata, { note: 'x' }, 'reserve-time metadata is returned on the detail');
    if (g.idempotency_key !== undefined) assert.equal(g.idempotency_key, body.idempotency_key);
  });

  test('the estimate is held on every budgeted derived scope and only there', async () => {
    const t = await newTenant(srv, [
      { at: '', allocated: 1000 },
      { at: 'workspace:prod/agent:bot', allocated: 500 },
    ]);
    const b = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod', agent: 'bot' }, 120));
    assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/workspace:prod`, `tenant:${t.tenant}/workspace:prod/agent:bot`]);
    const root = amounts(await balanceOf(srv, t, t.scope()));
    const leaf = amounts(await balanceOf(srv, t, t.scope('workspace:prod/agent:bot')));
    assert.deepEqual([root.reserved, root.remaining], [120, 880]);
    assert.deepEqual([leaf.reserved, leaf.remaining], [120, 380]);
  });
});

describe('createReservation: scope derivation', () => {
  test('gaps are skipped, never filled: tenant + agent gives tenant:X/agent:Y', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const b = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, agent: 'bot' }, 1));
    assert.equal(b.scope_path, `tenant:${t.tenant}/agent:bot`);
    assert.deepEqual(b.affected_scopes, [`tenant:${t.tenant}`, `tenant:${t.tenant}/agent:bot`]);
  });

  test('canonical order tenant > workspace > app > workflow > agent > toolset regardless of JSON key order', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const subject = { toolset: 'ts', agent: 'ag', workflow: 'wf', app: 'ap', workspace: 'ws', tenant: t.tenant };
    const b = await reserveOk(srv, t.key, reserveBody(subject, 1));
    const root = `tenant:${t.tenant}`;
    assert.equal(b.scope_path, `${root}/workspace:ws/app:ap/workflow:wf/agent:ag/toolset:ts`);
    assert.deepEqual(b.affected_scopes, [
      root,
      `${root}/workspace:ws`,
      `${root}/workspace:ws/app:ap`,
      `${root}/workspace:ws/app:ap/workflow:wf`,
      `${root}/workspace:ws/app:ap/workflow:wf/agent:ag`,
      `${root}/workspace:ws/app:ap/workflow:wf/agent:ag/toolset:ts`,
    ]);
  });

  test('a budget only at a deep scope is enough (unbudgeted ancestors are skipped)', async () => {
    const t = await newTenant(srv, [{ at: 'workflow:wf1', allocated: 50 }]);
    const b = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, workflow: 'wf1', agent: 'a1' }, 50));
    assert.equal(b.scope_path, `tenant:${t.tenant}/workflow:wf1/agent:a1`);
    assert.equal(amounts(await balanceOf(srv, t, t.scope('workflow:wf1'))).reserved, 50);
  });
});

describe('createReservation: enforcement', () => {
  test('live reserve never returns DENY: insufficient budget is 409 BUDGET_EXCEEDED; an exact fit succeeds', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 101));
    const err = expectError(res, 409, 'BUDGET_EXCEEDED');
    assert.equal(err.decision, undefined);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 0);
    await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1)), 409, 'BUDGET_EXCEEDED');
  });

  test('hierarchical: a child budget smaller than its parent denies, atomically (parent untouched)', async () => {
    const t = await newTenant(srv, [
      { at: '', allocated: 1000 },
      { at: 'workspace:prod', allocated: 50 },
    ]);
    expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod', agent: 'x' }, 100)), 409, 'BUDGET_EXCEEDED');
    const root = amounts(await balanceOf(srv, t, t.scope()));
    const ws = amounts(await balanceOf(srv, t, t.scope('workspace:prod')));
    assert.deepEqual([root.reserved, root.remaining], [0, 1000], 'no partial lock on the parent');
    assert.deepEqual([ws.reserved, ws.remaining], [0, 50]);
    // A sibling workspace without its own budget is governed by the root only.
    await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'dev' }, 100));
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 100);
  });

  test('a parent budget smaller than the child also denies', async () => {
    const t = await newTenant(srv, [
      { at: '', allocated: 30 },
      { at: 'workspace:prod', allocated: 500 },
    ]);
    expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod' }, 40)), 409, 'BUDGET_EXCEEDED');
    assert.equal(amounts(await balanceOf(srv, t, t.scope('workspace:prod'))).reserved, 0);
  });

  test('no budget at any derived scope in any unit is 404 NOT_FOUND (not BUDGET_NOT_FOUND)', async () => {
    const t = await newTenant(srv, []);
    const err = expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod' }, 1)), 404, 'NOT_FOUND');
    assert.match(err.message, /budget not found/i, 'message carries "Budget not found for provided scope: ..."');
  });

  test('a budget only in another unit is 400 UNIT_MISMATCH with details.scope, requested_unit, expected_units', async () => {
    const t = await newTenant(srv, [
      { at: '', allocated: 1000, unit: 'TOKENS' },
      { at: '', allocated: 1000, unit: 'CREDITS' },
    ]);
    const err = expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1, 'USD_MICROCENTS')), 400, 'UNIT_MISMATCH');
    assert.ok(err.details, 'details SHOULD be populated on UNIT_MISMATCH');
    assert.equal(err.details.scope, `tenant:${t.tenant}`);
    assert.equal(err.details.requested_unit, 'USD_MICROCENTS');
    assert.deepEqual([...err.details.expected_units].sort(), ['CREDITS', 'TOKENS']);
  });

  test('concurrent reserves never oversubscribe: exactly allocated/estimate succeed', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const results = await Promise.all(Array.from({ length: 30 }, () => reserve(srv, t.key, reserveBody({ tenant: t.tenant, agent: 'c' }, 50))));
    const ok = results.filter((r) => r.status === 200).length;
    const denied = results.filter((r) => r.status === 409 && r.body.error === 'BUDGET_EXCEEDED').length;
    assert.equal(ok, 20);
    assert.equal(denied, 10);
    const bal = amounts(await balanceOf(srv, t, t.scope()));
    assert.deepEqual([bal.reserved, bal.remaining], [1000, 0]);
  });
});

describe('createReservation: request validation', () => {
  const invalidBodies: Array<[string, (tenant: string) => unknown]> = [
    ['missing idempotency_key', (tenant) => ({ subject: { tenant }, action: ACTION, estimate: { unit: 'TOKENS', amount: 1 } })],
    ['missing subject', () => ({ idempotency_key: 'k-1', action: ACTION, estimate: { unit: 'TOKENS', amount: 1 } })],
    ['missing action', (tenant) => ({ idempotency_key: 'k-1', subject: { tenant }, estimate: { unit: 'TOKENS', amount: 1 } })],
    ['missing estimate', (tenant) => ({ idempotency_key: 'k-1', subject: { tenant }, action: ACTION })],
    ['subject with only dimensions', () => reserveBody({ dimensions: { a: 'b' } }, 1)],
    ['empty subject', () => reserveBody({}, 1)],
    ['negative estimate', (tenant) => reserveBody({ tenant }, -1)],
    ['fractional estimate', (tenant) => reserveBody({ tenant }, 1.5)],
    ['unknown unit', (tenant) => ({ ...reserveBody({ tenant }, 1), estimate: { unit: 'DOLLARS', amount: 1 } })],
    ['estimate beyond the exactly representable range (2^53)', (tenant) => reserveBody({ tenant }, 2 ** 53)],
    ['ttl_ms below 1000', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { ttl_ms: 999 })],
    ['ttl_ms above 86400000', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { ttl_ms: 86_400_001 })],
    ['grace_period_ms above 60000', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { grace_period_ms: 60_001 })],
    ['negative grace_period_ms', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { grace_period_ms: -1 })],
    ['unknown overage_policy', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { overage_policy: 'YOLO' })],
    ['non-boolean dry_run', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { dry_run: 'yes' })],
    ['unknown top-level property', (tenant) => reserveBody({ tenant }, 1, 'TOKENS', { bogus: 1 })],
    ['empty idempotency_key', (tenant) => ({ ...reserveBody({ tenant }, 1), idempotency_key: '' })],
    ['idempotency_key over 256 chars', (tenant) => ({ ...reserveBody({ tenant }, 1), idempotency_key: 'k'.repeat(257) })],
    ['action.kind over 64 chars', (tenant) => ({ ...reserveBody({ tenant }, 1), action: { kind: 'k'.repeat(65), name: 'n' } })],
    ['more than 10 action tags', (tenant) => ({ ...reserveBody({ tenant }, 1), action: { ...ACTION, tags: Array.from({ length: 11 }, (_, i) => `t${i}`) } })],
    ['subject value with a scope delimiter (MAY reject; this server does)', (tenant) => reserveBody({ tenant, workspace: 'a/b' }, 1)],
    ['subject field over 128 chars', (tenant) => reserveBody({ tenant, agent: 'a'.repeat(129) }, 1)],
    ['more than 16 dimensions', (tenant) => reserveBody({ tenant, dimensions: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`d${i}`, 'v'])) }, 1)],
  ];
  for (const [name, make] of invalidBodies) {
    test(`400 INVALID_REQUEST: ${name}`, async () => {
      const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
      expectError(await srv.call('POST', '/v1/reservations', { apiKey: t.key, body: make(t.tenant) }), 400, 'INVALID_REQUEST');
      assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 0);
    });
  }

  test('400 INVALID_REQUEST: malformed JSON body', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    expectError(await srv.call('POST', '/v1/reservations', { apiKey: t.key, rawBody: '{"idempotency_key": "x", ' }), 400, 'INVALID_REQUEST');
  });

  test('400 INVALID_REQUEST: empty body', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    expectError(await srv.call('POST', '/v1/reservations', { apiKey: t.key, rawBody: '' }), 400, 'INVALID_REQUEST');
  });

  test('400 INVALID_REQUEST (a declared status, not 415): non-JSON content type', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const res = await srv.call('POST', '/v1/reservations', {
      apiKey: t.key,
      rawBody: JSON.stringify(reserveBody({ tenant: t.tenant }, 1)),
      headers: { 'content-type': 'text/plain' },
    });
    expectError(res, 400, 'INVALID_REQUEST');
  });

  test('400 INVALID_REQUEST (a declared status, not 413): oversized body', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const res = await srv.call('POST', '/v1/reservations', { apiKey: t.key, body: reserveBody({ tenant: t.tenant }, 1, 'TOKENS', { metadata: { blob: 'x'.repeat(2_000_000) } }) });
    expectError(res, 400, 'INVALID_REQUEST');
  });

  test('v0.1.26 action.policy_keys is accepted and ignored by a non-implementing server (EXT)', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = { ...reserveBody({ tenant: t.tenant }, 5), action: { ...ACTION, policy_keys: { host: 'api.example.com' } } };
    await reserveOk(srv, t.key, body);
  });

  test('subject.tenant may be omitted: budgets still resolve under the effective tenant', async () => {
    const t = await newTenant(srv, [{ at: 'workspace:prod', allocated: 100 }]);
    // Without subject.tenant the path starts at the first provided level; it must not reach
    // another tenant's budgets. Either a success bound to this tenant or a 404 is acceptable.
    const res = await reserve(srv, t.key, reserveBody({ workspace: 'prod' }, 5));
    assert.ok(res.status === 200 || res.status === 404, `unexpected ${res.status} ${res.text}`);
    if (res.status === 200) {
      const g = expectStatus(await getReservation(srv, t.key, res.body.reservation_id), 200);
      assert.equal(g.status, 'ACTIVE');
    } else {
      expectError(res, 404, 'NOT_FOUND');
    }
  });
});
