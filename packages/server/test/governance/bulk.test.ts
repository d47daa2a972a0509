/**
 * Bulk actions on tenants and budgets: the filter is the list filter (so a preview count equals
 * the bulk count), validate -> replay -> count -> 500 cap -> expected_count -> apply, rows land
 * in succeeded / skipped / failed (200 even when rows fail), one event per mutated row, one audit
 * row per invocation, and a replay within 15 minutes returns the identical body.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, startTestServer, uid, type Json, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, expectError, expectStatus, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, auditLogs, createBudget, createKey, createTenant, events, lookup, pageAll } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

const ids = (rows: Json[]) => rows.map((r) => r.id as string).sort();

describe('bulkActionTenants', () => {
  test('preview count = expected_count; SUSPEND applies, skips and fails row by row; events per mutated row', async () => {
    const tag = uid('bk');
    const mk = async (i: number) => {
      const id = `${tag}-${i}`;
      expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: `Bulk ${tag}` }), 201);
      return id;
    };
    const [a, b, c, d] = [await mk(1), await mk(2), await mk(3), await mk(4)];
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${b}`, { status: 'SUSPENDED' }), 200);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${c}`, { status: 'CLOSED' }), 200);
    const preview = await pageAll(srv, '/v1/admin/tenants', 'tenants', { search: tag });
    assert.equal(preview.length, 4);
    const body = { filter: { search: tag }, action: 'SUSPEND', expected_count: preview.length, idempotency_key: idem('bulk') };
    const res = await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', body);
    const out = expectStatus(res, 200);
    assert.deepEqual([out.action, out.total_matched, out.idempotency_key], ['SUSPEND', 4, body.idempotency_key]);
    assert.deepEqual(ids(out.succeeded), [a, d].sort());
    assert.deepEqual(out.skipped, [{ id: b, reason: 'ALREADY_IN_TARGET_STATE' }]);
    assert.equal(out.failed.length, 1);
    assert.deepEqual([out.failed[0].id, out.failed[0].error_code], [c, 'INVALID_TRANSITION']);
    for (const id of [a, d]) assert.equal(expectStatus(await adminCall(srv, 'GET', `/v1/admin/tenants/${id}`), 200).status, 'SUSPENDED');
    const correlation = `tenant_bulk_action:suspend:${res.requestId}`;
    const evs = await events(srv, { correlation_id: correlation });
    assert.deepEqual(evs.map((e) => e.tenant_id).sort(), [a, d].sort(), 'no event for skipped or failed rows');
    assert.ok(evs.every((e) => e.event_type === 'tenant.suspended' && e.actor.type === 'admin_on_behalf_of'));
    const audit = await auditLogs(srv, { request_id: res.requestId! });
    assert.equal(audit.length, 1, 'one audit row per invocation');
    assert.deepEqual([audit[0].operation, audit[0].metadata.actor_type], ['bulkActionTenants', 'admin_on_behalf_of']);
    assert.deepEqual([...audit[0].metadata.succeeded].sort(), [a, d].sort());
    assert.deepEqual(audit[0].metadata.failed, [c]);

    // A replay returns the identical body and changes nothing; another payload under the key is 409.
    const replay = await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', body);
    assert.equal(replay.text, res.text);
    assert.equal((await events(srv, { correlation_id: `tenant_bulk_action:suspend:${replay.requestId}` })).length, 0);
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { ...body, action: 'REACTIVATE' }), 409, 'IDEMPOTENCY_MISMATCH');
  });

  test('CLOSE runs the full cascade per tenant: parent under the bulk id, children under their cascade id', async () => {
    const tag = uid('bc');
    const t1 = `${tag}-1`;
    expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: t1, name: tag }), 201);
    await createBudget(srv, t1, '', 100);
    const key = (await createKey(srv, t1)).secret;
    await reserveOk(srv, key, reserveBody({ tenant: t1 }, 10));
    const res = await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'CLOSE', expected_count: 1, idempotency_key: idem('close') });
    assert.deepEqual(ids(expectStatus(res, 200).succeeded), [t1]);
    const b = await lookup(srv, `tenant:${t1}`);
    assert.deepEqual([b.status, b.reserved.amount], ['CLOSED', 0]);
    const parent = await events(srv, { correlation_id: `tenant_bulk_action:close:${res.requestId}` });
    assert.deepEqual(parent.map((e) => e.event_type), ['tenant.closed']);
    const children = await events(srv, { correlation_id: `tenant_close_cascade:${t1}:${res.requestId}` });
    assert.deepEqual(children.map((e) => e.event_type).sort(), ['api_key.revoked_via_tenant_cascade', 'budget.closed_via_tenant_cascade', 'reservation.released_via_tenant_cascade']);
  });

  test('gates: empty filter 400; expected_count mismatch 409 COUNT_MISMATCH; more than 500 matches 400 LIMIT_EXCEEDED; nothing written', async () => {
    const tag = uid('gt');
    for (let i = 0; i < 3; i++) expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: `${tag}-${i}`, name: tag }), 201);
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { filter: {}, action: 'SUSPEND', idempotency_key: idem() }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'DELETE', idempotency_key: idem() }), 400, 'INVALID_REQUEST');
    const mismatch = expectError(
      await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { filter: { search: tag }, action: 'SUSPEND', expected_count: 2, idempotency_key: idem() }),
      409,
      'COUNT_MISMATCH',
    );
    assert.equal(mismatch.details.total_matched, 3);
    const still = await pageAll(srv, '/v1/admin/tenants', 'tenants', { search: tag, status: 'ACTIVE' });
    assert.equal(still.length, 3, 'a rejected bulk action writes nothing');
    // 501 ACTIVE tenants exist by now? Make sure: create enough under one parent to cross the cap.
    const parent = await createTenant(srv);
    for (let i = 0; i < 501; i++) {
      const r = await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: `${tag}-p-${i}`, name: 'x', parent_tenant_id: parent });
      assert.equal(r.status, 201);
    }
    const cap = expectError(await adminCall(srv, 'POST', '/v1/admin/tenants/bulk-action', { filter: { parent_tenant_id: parent }, action: 'SUSPEND', idempotency_key: idem() }), 400, 'LIMIT_EXCEEDED');
    assert.equal(cap.details.total_matched, 501);
    assert.equal((await pageAll(srv, '/v1/admin/tenants', 'tenants', { parent_tenant_id: parent, status: 'SUSPENDED', limit: 100 })).length, 0);
  });
});

describe('bulkActionBudgets', () => {
  test('RESET_SPENT across a scope subtree (segment-aware): frozen, closed-unit and foreign rows fail or are left out', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, 'workspace:eng', 100);
    await createBudget(srv, t, 'workspace:eng/agent:a', 50);
    await createBudget(srv, t, 'workspace:eng/agent:b', 50);
    await createBudget(srv, t, 'workspace:eng', 10, {}, 'CREDITS');
    await createBudget(srv, t, 'workspace:engine', 100);
    const key = (await createKey(srv, t)).secret;
    const r = await reserveOk(srv, key, reserveBody({ tenant: t, workspace: 'eng', agent: 'a' }, 40));
    expectStatus(await commit(srv, key, r.reservation_id, commitBody(40)), 200);
    expectStatus(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze?scope=tenant:${t}/workspace:eng/agent:b&unit=TOKENS`, {}), 200);
    const filter = { tenant_id: t, scope_prefix: `tenant:${t}/workspace:eng` };
    const preview = await pageAll(srv, '/v1/admin/budgets', 'ledgers', filter);
    assert.equal(preview.length, 4, 'workspace:engine is not under workspace:eng');
    const res = await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', {
      filter,
      action: 'RESET_SPENT',
      amount: { unit: 'TOKENS', amount: 200 },
      expected_count: preview.length,
      reason: 'period 2026-12',
      idempotency_key: idem('rs'),
    });
    const out = expectStatus(res, 200);
    const byScope = new Map(preview.map((b) => [b.ledger_id as string, `${(b.scope as string).split('/').slice(1).join('/')}|${b.unit}`]));
    assert.deepEqual(out.succeeded.map((x: Json) => byScope.get(x.id)).sort(), ['workspace:eng/agent:a|TOKENS', 'workspace:eng|TOKENS']);
    assert.deepEqual(out.failed.map((x: Json) => [byScope.get(x.id), x.error_code]).sort(), [
      ['workspace:eng/agent:b|TOKENS', 'INVALID_TRANSITION'],
      ['workspace:eng|CREDITS', 'INVALID_TRANSITION'],
    ]);
    const a = await lookup(srv, `tenant:${t}/workspace:eng/agent:a`);
    assert.deepEqual([a.allocated.amount, a.spent.amount, a.remaining.amount], [200, 0, 200]);
    assert.equal((await lookup(srv, `tenant:${t}/workspace:engine`)).allocated.amount, 100);
    const evs = await events(srv, { correlation_id: `budget_bulk_action:reset_spent:${res.requestId}` });
    assert.equal(evs.length, 2);
    assert.ok(evs.every((e) => e.event_type === 'budget.reset_spent' && e.data.reason === 'period 2026-12'));
  });

  test('DEBIT below zero fails the row with BUDGET_EXCEEDED; REPAY_DEBT without debt is skipped; the batch never aborts', async () => {
    const t = await createTenant(srv);
    const rich = await createBudget(srv, t, 'app:rich', 100);
    const poor = await createBudget(srv, t, 'app:poor', 5);
    const debit = expectStatus(
      await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'DEBIT', amount: { unit: 'TOKENS', amount: 10 }, idempotency_key: idem() }),
      200,
    );
    assert.deepEqual(ids(debit.succeeded), [rich.ledger_id]);
    assert.deepEqual(debit.failed.map((f: Json) => [f.id, f.error_code]), [[poor.ledger_id, 'BUDGET_EXCEEDED']]);
    const repay = expectStatus(
      await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'REPAY_DEBT', amount: { unit: 'TOKENS', amount: 10 }, idempotency_key: idem() }),
      200,
    );
    assert.deepEqual(ids(repay.skipped), [poor.ledger_id, rich.ledger_id].sort());
    assert.deepEqual([repay.succeeded, repay.failed], [[], []]);
  });

  test('validation: tenant_id required, unknown tenant 404, missing amount 400, spent only with RESET_SPENT, utilization bounds', async () => {
    const t = await createTenant(srv);
    const amount = { unit: 'TOKENS', amount: 1 };
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { scope_prefix: 'tenant:x' }, action: 'CREDIT', amount, idempotency_key: idem() }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: 'no-such-tenant' }, action: 'CREDIT', amount, idempotency_key: idem() }), 404, 'TENANT_NOT_FOUND');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'CREDIT', idempotency_key: idem() }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'CREDIT', amount, spent: amount, idempotency_key: idem() }), 400, 'INVALID_REQUEST');
    expectError(
      await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t, utilization_min: 0.9, utilization_max: 0.1 }, action: 'CREDIT', amount, idempotency_key: idem() }),
      400,
      'INVALID_REQUEST',
    );
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'CREDIT', amount, idempotency_key: 'k'.repeat(129) }), 400, 'INVALID_REQUEST');
  });

  test('the rows of a closed tenant fail with TENANT_CLOSED', async () => {
    const t = await createTenant(srv);
    const b = await createBudget(srv, t, '', 10);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'CLOSED' }), 200);
    const out = expectStatus(
      await adminCall(srv, 'POST', '/v1/admin/budgets/bulk-action', { filter: { tenant_id: t }, action: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 }, idempotency_key: idem() }),
      200,
    );
    assert.deepEqual(out.failed.map((f: Json) => [f.id, f.error_code]), [[b.ledger_id, 'TENANT_CLOSED']]);
  });
});
