/**
 * The tenant close cascade (spec CASCADE SEMANTICS Rule 1) and the closed-owner guard (Rule 2):
 * closing releases open reservations, drains and closes budgets, revokes keys, in one step, with
 * one *_via_tenant_cascade event and audit row per child under one correlation id; re-closing
 * duplicates nothing; afterwards every mutation of the tenant's objects is 409 TENANT_CLOSED
 * (before any state error of the object itself) while reads keep working.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, qs, release, releaseBody, reserve, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, auditLogs, createBudget, createKey, createTenant, events, fund, lookup } from './support.js';

let srv: TestServer;
let tenant: string;
let key: string;
let keyId: string;
let otherKeyId: string;
let policyId: string;
let openId: string;
let closeRequestId: string;

before(async () => {
  srv = await startTestServer();
  tenant = await createTenant(srv);
  await createBudget(srv, tenant, '', 10_000);
  await createBudget(srv, tenant, 'workspace:prod', 1_000);
  await createBudget(srv, tenant, '', 500, {}, 'CREDITS');
  const k = await createKey(srv, tenant);
  key = k.secret;
  keyId = k.key_id;
  otherKeyId = (await createKey(srv, tenant)).key_id;
  policyId = expectStatus(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: tenant, name: 'p', scope_pattern: `tenant:${tenant}/*` }), 201).policy_id;
  // A frozen budget must close too, and two open reservations hold 30 + 5 on the root.
  expectStatus(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${qs({ scope: `tenant:${tenant}`, unit: 'CREDITS' })}`, {}), 200);
  openId = (await reserveOk(srv, key, reserveBody({ tenant, workspace: 'prod' }, 30))).reservation_id;
  await reserveOk(srv, key, reserveBody({ tenant }, 5));
  const closed = await adminCall(srv, 'PATCH', `/v1/admin/tenants/${tenant}`, { status: 'CLOSED' });
  expectStatus(closed, 200);
  closeRequestId = closed.requestId!;
});
after(async () => {
  await srv?.close();
});

describe('Rule 1: the cascade', () => {
  test('open reservations are released and their holds drained; every budget is CLOSED', async () => {
    const root = await lookup(srv, `tenant:${tenant}`);
    const prod = await lookup(srv, `tenant:${tenant}/workspace:prod`);
    const credits = await lookup(srv, `tenant:${tenant}`, 'CREDITS');
    for (const b of [root, prod, credits]) assert.equal(b.status, 'CLOSED');
    assert.deepEqual([root.reserved.amount, root.remaining.amount], [0, 10_000]);
    assert.deepEqual([prod.reserved.amount, prod.remaining.amount], [0, 1_000]);
    const r = expectStatus(await adminCall(srv, 'GET', `/v1/reservations/${openId}`), 200);
    assert.equal(r.status, 'RELEASED');
  });

  test('every key is revoked (401 on its next request)', async () => {
    const keys = expectStatus(await adminCall(srv, 'GET', `/v1/admin/api-keys${qs({ tenant_id: tenant })}`), 200).keys as Json[];
    assert.equal(keys.length, 2);
    for (const k of keys) {
      assert.equal(k.status, 'REVOKED');
      assert.equal(k.revoked_reason, 'tenant_closed');
    }
    expectError(await reserve(srv, key, reserveBody({ tenant }, 1)), 401, 'UNAUTHORIZED');
  });

  test('one event per mutated child (and the parent) under tenant_close_cascade:<tenant>:<request_id>', async () => {
    const correlation = `tenant_close_cascade:${tenant}:${closeRequestId}`;
    const evs = await events(srv, { correlation_id: correlation });
    const kinds = evs.map((e) => e.event_type);
    assert.equal(kinds.filter((k) => k === 'budget.closed_via_tenant_cascade').length, 3);
    assert.equal(kinds.filter((k) => k === 'api_key.revoked_via_tenant_cascade').length, 2);
    // Aggregates per budget with reserved > 0: the root (35) and the workspace (30).
    const released = evs.filter((e) => e.event_type === 'reservation.released_via_tenant_cascade');
    assert.deepEqual(released.map((e) => [e.data.scope, e.data.released_amount]).sort(), [
      [`tenant:${tenant}`, 35],
      [`tenant:${tenant}/workspace:prod`, 30],
    ]);
    assert.equal(kinds.filter((k) => k === 'tenant.closed').length, 1, 'the parent tenant.closed shares the correlation id');
    const frozen = evs.find((e) => e.event_type === 'budget.closed_via_tenant_cascade' && e.data.unit === 'CREDITS');
    assert.deepEqual(
      { ...frozen!.data, ledger_id: undefined },
      { ledger_id: undefined, scope: `tenant:${tenant}`, unit: 'CREDITS', prior_status: 'FROZEN', new_status: 'CLOSED', cascade_reason: 'tenant_closed' },
    );
    for (const e of evs) {
      assert.equal(e.request_id, closeRequestId);
      assert.equal(e.tenant_id, tenant);
    }
    const keyEvent = evs.find((e) => e.event_type === 'api_key.revoked_via_tenant_cascade' && e.data.key_id === keyId);
    assert.equal(keyEvent?.data.new_status, 'REVOKED');
  });

  test('one audit row per mutated child, sharing the correlation id of the close', async () => {
    const rows = await auditLogs(srv, { tenant_id: tenant, operation: 'tenant_close_cascade' });
    const kinds = rows.map((r) => r.metadata.event_kind as string).sort();
    assert.deepEqual(kinds, [
      'api_key.revoked_via_tenant_cascade',
      'api_key.revoked_via_tenant_cascade',
      'budget.closed_via_tenant_cascade',
      'budget.closed_via_tenant_cascade',
      'budget.closed_via_tenant_cascade',
      'reservation.released_via_tenant_cascade',
      'reservation.released_via_tenant_cascade',
    ]);
    for (const r of rows) {
      assert.equal(r.metadata.correlation_id, `tenant_close_cascade:${tenant}:${closeRequestId}`);
      assert.equal(r.request_id, closeRequestId);
    }
    const parent = await auditLogs(srv, { request_id: closeRequestId, operation: 'updateTenant' });
    assert.equal(parent.length, 1);
    assert.equal(parent[0].metadata.correlation_id, `tenant_close_cascade:${tenant}:${closeRequestId}`);
  });

  test('re-closing duplicates no event and no audit row', async () => {
    const before = (await events(srv, { tenant_id: tenant })).length;
    const beforeAudit = (await auditLogs(srv, { tenant_id: tenant, operation: 'tenant_close_cascade' })).length;
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${tenant}`, { status: 'CLOSED' }), 200);
    assert.equal((await events(srv, { tenant_id: tenant })).length, before);
    assert.equal((await auditLogs(srv, { tenant_id: tenant, operation: 'tenant_close_cascade' })).length, beforeAudit);
  });
});

describe('Rule 2: 409 TENANT_CLOSED on every mutation of a closed tenant\'s objects; reads stay open', () => {
  const scope = () => qs({ scope: `tenant:${tenant}`, unit: 'TOKENS' });

  test('budgets: update, freeze, unfreeze, fund, create', async () => {
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/budgets${scope()}`, { commit_overage_policy: 'REJECT' }), 409, 'TENANT_CLOSED');
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${scope()}`, {}), 409, 'TENANT_CLOSED');
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/unfreeze${scope()}`, {}), 409, 'TENANT_CLOSED');
    expectError(await fund(srv, tenant, `tenant:${tenant}`, { operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 } }), 409, 'TENANT_CLOSED');
    expectError(
      await adminCall(srv, 'POST', '/v1/admin/budgets', { tenant_id: tenant, scope: `tenant:${tenant}/app:new`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 1 } }),
      409,
      'TENANT_CLOSED',
    );
  });

  test('API keys: create, update, revoke (TENANT_CLOSED wins over KEY_REVOKED)', async () => {
    expectError(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: tenant, name: 'late' }), 409, 'TENANT_CLOSED');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/api-keys/${otherKeyId}`, { name: 'x' }), 409, 'TENANT_CLOSED');
    expectError(await adminCall(srv, 'DELETE', `/v1/admin/api-keys/${otherKeyId}`), 409, 'TENANT_CLOSED');
  });

  test('policies: create and update', async () => {
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: tenant, name: 'late', scope_pattern: `tenant:${tenant}` }), 409, 'TENANT_CLOSED');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/policies/${policyId}`, { priority: 3 }), 409, 'TENANT_CLOSED');
  });

  test('runtime: an admin release of a released reservation is TENANT_CLOSED, not RESERVATION_FINALIZED', async () => {
    expectError(await srv.call('POST', `/v1/reservations/${openId}/release`, { admin: true, body: releaseBody() }), 409, 'TENANT_CLOSED');
    expectError(await release(srv, key, openId), 401, 'UNAUTHORIZED');
  });

  test('reads: tenant, budgets, keys, policies, reservations, balances lookups', async () => {
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/tenants/${tenant}`), 200);
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/budgets${qs({ tenant_id: tenant })}`), 200);
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/budgets/lookup${scope()}`), 200);
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/api-keys${qs({ tenant_id: tenant })}`), 200);
    expectStatus(await adminCall(srv, 'GET', `/v1/admin/policies${qs({ tenant_id: tenant })}`), 200);
    expectStatus(await adminCall(srv, 'GET', `/v1/reservations${qs({ tenant })}`), 200);
  });
});

describe('the close is atomic with concurrent mutations', () => {
  test('a burst of fundings racing a close: each either lands before the close or is refused with TENANT_CLOSED', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 0);
    const credits = Array.from({ length: 20 }, () => fund(srv, t, `tenant:${t}`, { operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 } }));
    const close = adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'CLOSED' });
    const results = await Promise.all([...credits, close]);
    const funded = results.slice(0, 20).filter((r) => r.status === 200).length;
    for (const r of results.slice(0, 20)) if (r.status !== 200) expectError(r, 409, 'TENANT_CLOSED');
    const b = await lookup(srv, `tenant:${t}`);
    assert.equal(b.status, 'CLOSED');
    assert.equal(b.allocated.amount, funded, 'exactly the accepted credits are in the ledger');
  });
});
