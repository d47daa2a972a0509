/**
 * Budgets: create (ledger fields, overdraft settings), lookup, list (cross-tenant filters over
 * limit / debt / utilization, search, sorting), update, freeze / unfreeze and funding (CREDIT,
 * DEBIT, RESET, RESET_SPENT, REPAY_DEBT) with their budget.* events.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, decide, decideBody, expectError, expectStatus, qs, reserve, reserveBody, reserveOk } from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant, events, fund, lookup, pageAll } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

const T = (amount: number) => ({ unit: 'TOKENS', amount });

describe('createBudget', () => {
  test('201 with remaining = allocated and zero reserved/spent/debt; budget.created carries the new state', async () => {
    const t = await createTenant(srv);
    const b = await createBudget(srv, t, 'workspace:Prod', 500, { overdraft_limit: T(50), commit_overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    assert.equal(b.scope, `tenant:${t}/workspace:prod`, 'scopes are stored lower-cased');
    assert.equal(b.tenant_id, t);
    assert.deepEqual([b.allocated.amount, b.remaining.amount, b.reserved.amount, b.spent.amount, b.debt.amount], [500, 500, 0, 0, 0]);
    assert.deepEqual(b.overdraft_limit, T(50));
    assert.equal(b.commit_overage_policy, 'ALLOW_WITH_OVERDRAFT');
    assert.equal(b.is_over_limit, false);
    assert.equal(b.rollover_policy, 'NONE');
    const [e] = await events(srv, { tenant_id: t, event_type: 'budget.created' });
    assert.deepEqual(e.data, {
      ledger_id: b.ledger_id,
      scope: b.scope,
      unit: 'TOKENS',
      operation: 'CREATE',
      new_state: { allocated: 500, remaining: 500, debt: 0, spent: 0, reserved: 0, status: 'ACTIVE' },
    });
    assert.equal(e.actor.type, 'admin_on_behalf_of');
  });

  test('errors: duplicate 409, unit mismatch 400, foreign scope 400, unknown tenant 400, suspended tenant 400', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 1);
    const body = (over: Record<string, unknown>) => ({ tenant_id: t, scope: `tenant:${t}`, unit: 'TOKENS', allocated: T(1), ...over });
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({})), 409, 'DUPLICATE_RESOURCE');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({ unit: 'CREDITS' })), 400, 'UNIT_MISMATCH');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({ scope: 'tenant:someone-else' })), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({ scope: `tenant:${t}/agent:a/workspace:w` })), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({ tenant_id: 'no-such-tenant', scope: 'tenant:no-such-tenant' })), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', { scope: `tenant:${t}/app:x`, unit: 'TOKENS', allocated: T(1) }), 400, 'INVALID_REQUEST');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { status: 'SUSPENDED' }), 200);
    expectError(await adminCall(srv, 'POST', '/v1/admin/budgets', body({ scope: `tenant:${t}/app:x` })), 400, 'INVALID_REQUEST');
  });

  test('a tenant key creates budgets for its own tenant only (another tenant\'s scope is 403); sending tenant_id is 400', async () => {
    const t = await createTenant(srv);
    const { secret } = await createKey(srv, t);
    const created = expectStatus(await srv.call('POST', '/v1/admin/budgets', { apiKey: secret, body: { scope: `tenant:${t}`, unit: 'TOKENS', allocated: T(10) } }), 201);
    assert.equal(created.tenant_id, t);
    expectError(await srv.call('POST', '/v1/admin/budgets', { apiKey: secret, body: { tenant_id: t, scope: `tenant:${t}/app:a`, unit: 'TOKENS', allocated: T(10) } }), 400, 'INVALID_REQUEST');
    expectError(await srv.call('POST', '/v1/admin/budgets', { apiKey: secret, body: { scope: 'tenant:other-tenant', unit: 'TOKENS', allocated: T(10) } }), 403, 'FORBIDDEN');
  });
});

describe('listBudgets', () => {
  let t: string;
  let key: string;
  before(async () => {
    t = await createTenant(srv);
    // a: 10% used, b: 60% used, c: in debt and over limit, d: untouched, e: allocated 0.
    await createBudget(srv, t, 'workspace:a', 100);
    await createBudget(srv, t, 'workspace:b', 100);
    await createBudget(srv, t, 'workspace:c', 100, { overdraft_limit: T(20) });
    await createBudget(srv, t, 'workspace:d', 100);
    await createBudget(srv, t, 'workspace:e', 0);
    await createBudget(srv, t, 'workspace:a', 7, {}, 'CREDITS');
    key = (await createKey(srv, t)).secret;
    const spend = async (ws: string, estimate: number, actual: number, overage?: string) => {
      const r = await reserveOk(srv, key, reserveBody({ tenant: t, workspace: ws }, estimate, 'TOKENS', overage ? { overage_policy: overage } : {}));
      expectStatus(await commit(srv, key, r.reservation_id, commitBody(actual)), 200);
    };
    await spend('a', 10, 10);
    await spend('b', 60, 60);
    await spend('c', 100, 110, 'ALLOW_WITH_OVERDRAFT');
    // Lower the limit below the debt: c is now over limit.
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${qs({ scope: `tenant:${t}/workspace:c`, unit: 'TOKENS' })}`, { overdraft_limit: T(5) }), 200);
  });

  const list = (params: Record<string, string | number | boolean | undefined>) => pageAll(srv, '/v1/admin/budgets', 'ledgers', { tenant_id: t, ...params });
  const scopes = (rows: Json[]) => rows.map((r) => (r.scope as string).split('/')[1]! + (r.unit === 'CREDITS' ? '$' : ''));

  test('default order is utilization desc, with every ledger field', async () => {
    const rows = await list({ unit: 'TOKENS' });
    assert.deepEqual(scopes(rows), ['workspace:c', 'workspace:b', 'workspace:a', ...scopes(rows).slice(3)]);
    assert.deepEqual(scopes(rows).slice(3).sort(), ['workspace:d', 'workspace:e']);
    const c = rows[0]!;
    assert.deepEqual([c.spent.amount, c.debt.amount, c.is_over_limit, c.remaining.amount], [100, 10, true, -10]);
  });

  test('over_limit, has_debt and utilization bounds filter before paging', async () => {
    assert.deepEqual(scopes(await list({ over_limit: true, limit: 1 })), ['workspace:c']);
    assert.deepEqual(scopes(await list({ over_limit: false, unit: 'TOKENS', sort_by: 'scope', sort_dir: 'asc', limit: 1 })), ['workspace:a', 'workspace:b', 'workspace:d', 'workspace:e']);
    assert.deepEqual(scopes(await list({ has_debt: true, limit: 1 })), ['workspace:c']);
    assert.equal((await list({ has_debt: false })).length, 5);
    assert.deepEqual(scopes(await list({ utilization_min: 0.5, sort_by: 'scope', sort_dir: 'asc', limit: 1 })), ['workspace:b', 'workspace:c']);
    assert.deepEqual(scopes(await list({ utilization_min: 0.05, utilization_max: 0.6, sort_by: 'scope', sort_dir: 'asc' })), ['workspace:a', 'workspace:b']);
    // allocated 0 counts as utilization 0.
    assert.ok(scopes(await list({ utilization_max: 0 })).includes('workspace:e'));
  });

  test('scope_prefix is segment-aware; search matches tenant or scope case-insensitively; unit and status filter', async () => {
    const other = await createTenant(srv, {});
    await createBudget(srv, other, '', 1);
    assert.equal((await list({ scope_prefix: `tenant:${t}/workspace:a` })).length, 2);
    assert.equal((await pageAll(srv, '/v1/admin/budgets', 'ledgers', { scope_prefix: `tenant:${t.slice(0, -1)}` })).length, 0, 'tenant:ab is not under tenant:a');
    assert.deepEqual(scopes(await list({ search: 'WORKSPACE:B' })), ['workspace:b']);
    assert.deepEqual(scopes(await list({ unit: 'CREDITS' })), ['workspace:a$']);
    assert.equal((await pageAll(srv, '/v1/admin/budgets', 'ledgers', { search: other })).length, 1, 'without tenant_id the admin lists across tenants');
  });

  test('sorting by each key is stable and total (ties broken by id), ascending and descending', async () => {
    for (const sort_by of ['tenant_id', 'scope', 'unit', 'status', 'commit_overage_policy', 'utilization', 'debt']) {
      const asc = await list({ sort_by, sort_dir: 'asc', limit: 2 });
      const desc = await list({ sort_by, sort_dir: 'DESC', limit: 2 });
      assert.equal(asc.length, 6, sort_by);
      assert.deepEqual(desc.map((r) => r.ledger_id), asc.map((r) => r.ledger_id).reverse(), `${sort_by}: desc is asc reversed`);
    }
  });

  test('bad parameters are 400', async () => {
    for (const bad of [{ utilization_min: 1.5 }, { utilization_min: 0.8, utilization_max: 0.2 }, { over_limit: 'yes' }, { sort_by: 'allocated' }, { unit: 'EUR' }, { scope_prefix: 'workspace:a' }]) {
      expectError(await adminCall(srv, 'GET', `/v1/admin/budgets${qs({ tenant_id: t, ...bad })}`), 400, 'INVALID_REQUEST');
    }
  });

  test('a tenant key lists its own tenant only (tenant_id ignored) and its scope_filter is applied before the limit', async () => {
    const own = await pageAll(srv, '/v1/admin/budgets', 'ledgers', { tenant_id: 'someone-else', limit: 1 }, { apiKey: key });
    assert.equal(own.length, 6);
    const narrow = (await createKey(srv, t, { scope_filter: ['workspace:b', 'workspace:c'] })).secret;
    const seen = await pageAll(srv, '/v1/admin/budgets', 'ledgers', { limit: 1 }, { apiKey: narrow });
    assert.deepEqual(scopes(seen).sort(), ['workspace:b', 'workspace:c']);
  });
});

describe('lookupBudget / updateBudget / freeze / unfreeze', () => {
  test('lookup by exact (scope, unit): 404 when missing, 400 without scope or unit', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, 'app:x', 5);
    const b = await lookup(srv, `tenant:${t}/app:X`);
    assert.equal(b.allocated.amount, 5);
    expectError(await adminCall(srv, 'GET', `/v1/admin/budgets/lookup${qs({ scope: `tenant:${t}`, unit: 'TOKENS' })}`), 404, 'BUDGET_NOT_FOUND');
    expectError(await adminCall(srv, 'GET', `/v1/admin/budgets/lookup${qs({ scope: `tenant:${t}/app:x` })}`), 400, 'INVALID_REQUEST');
  });

  test('update recomputes is_over_limit and emits budget.updated with both states; no-op emits nothing', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 100, { overdraft_limit: T(100) });
    const key = (await createKey(srv, t)).secret;
    const r = await reserveOk(srv, key, reserveBody({ tenant: t }, 100, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' }));
    expectStatus(await commit(srv, key, r.reservation_id, commitBody(130)), 200);
    const where = qs({ scope: `tenant:${t}`, unit: 'TOKENS' });
    const u = expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${where}`, { overdraft_limit: T(10), commit_overage_policy: 'REJECT' }), 200);
    assert.deepEqual([u.is_over_limit, u.commit_overage_policy, u.debt.amount], [true, 'REJECT', 30]);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${where}`, { commit_overage_policy: 'REJECT' }), 200);
    const evs = await events(srv, { tenant_id: t, event_type: 'budget.updated' });
    assert.equal(evs.length, 1);
    assert.equal(evs[0].data.operation, 'UPDATE');
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.over_limit_entered' })).length, 1);
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/budgets${where}`, { overdraft_limit: { unit: 'CREDITS', amount: 1 } }), 400, 'UNIT_MISMATCH');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/budgets${where}`, {}), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/budgets${qs({ scope: `tenant:${t}/app:none`, unit: 'TOKENS' })}`, { commit_overage_policy: 'REJECT' }), 404, 'BUDGET_NOT_FOUND');
  });

  test('freeze / unfreeze: transitions, 409 when already there, FROZEN blocks reserve and funding but not update', async () => {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', 100);
    const key = (await createKey(srv, t)).secret;
    const where = qs({ scope: `tenant:${t}`, unit: 'TOKENS' });
    const f = expectStatus(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${where}`, { reason: 'incident 42' }), 200);
    assert.equal(f.status, 'FROZEN');
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${where}`, {}), 409, 'INVALID_REQUEST');
    expectError(await reserve(srv, key, reserveBody({ tenant: t }, 1)), 409, 'BUDGET_FROZEN');
    expectError(await fund(srv, t, `tenant:${t}`, { operation: 'CREDIT', amount: T(1) }), 409, 'BUDGET_FROZEN');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${where}`, { overdraft_limit: T(7) }), 200);
    // No body at all is valid too.
    const u = await srv.call('POST', `/v1/admin/budgets/unfreeze${where}`, { admin: true });
    assert.equal(expectStatus(u, 200).status, 'ACTIVE');
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/unfreeze${where}`, {}), 409, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${where}`, { reason: 'x'.repeat(513) }), 400, 'INVALID_REQUEST');
    const evs = await events(srv, { tenant_id: t, category: 'budget' });
    const frozen = evs.find((e) => e.event_type === 'budget.frozen');
    assert.deepEqual([frozen?.data.operation, frozen?.data.reason, frozen?.data.previous_state.status, frozen?.data.new_state.status], ['STATUS_CHANGE', 'incident 42', 'ACTIVE', 'FROZEN']);
    assert.ok(evs.some((e) => e.event_type === 'budget.unfrozen'));
    const dec = expectStatus(await decide(srv, key, decideBody({ tenant: t }, 1)), 200);
    assert.equal(dec.decision, 'ALLOW');
  });
});

describe('fundBudget', () => {
  async function funded(allocated: number, spend = 0, reserveHold = 0): Promise<{ t: string; scope: string; key: string }> {
    const t = await createTenant(srv);
    await createBudget(srv, t, '', allocated, { overdraft_limit: T(1000) });
    const key = (await createKey(srv, t)).secret;
    if (spend > 0) {
      const r = await reserveOk(srv, key, reserveBody({ tenant: t }, Math.min(spend, allocated), 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' }));
      expectStatus(await commit(srv, key, r.reservation_id, commitBody(spend)), 200);
    }
    if (reserveHold > 0) await reserveOk(srv, key, reserveBody({ tenant: t }, reserveHold));
    return { t, scope: `tenant:${t}`, key };
  }
  const op = async (t: string, scope: string, body: Record<string, unknown>) => expectStatus(await fund(srv, t, scope, body), 200);
  const state = async (scope: string) => {
    const b = await lookup(srv, scope);
    return { allocated: b.allocated.amount, remaining: b.remaining.amount, spent: b.spent.amount, reserved: b.reserved.amount, debt: b.debt.amount };
  };

  test('CREDIT and DEBIT move allocated and remaining; DEBIT never overdraws (409 BUDGET_EXCEEDED)', async () => {
    const { t, scope } = await funded(100, 30);
    const c = await op(t, scope, { operation: 'CREDIT', amount: T(50), reason: 'top-up' });
    assert.deepEqual([c.previous_allocated.amount, c.new_allocated.amount, c.previous_remaining.amount, c.new_remaining.amount], [100, 150, 70, 120]);
    await op(t, scope, { operation: 'DEBIT', amount: T(120) });
    assert.deepEqual(await state(scope), { allocated: 30, remaining: 0, spent: 30, reserved: 0, debt: 0 });
    expectError(await fund(srv, t, scope, { operation: 'DEBIT', amount: T(1) }), 409, 'BUDGET_EXCEEDED');
    const [e] = await events(srv, { tenant_id: t, event_type: 'budget.funded' });
    assert.deepEqual([e.data.operation, e.data.reason, e.data.previous_state.allocated, e.data.new_state.allocated], ['CREDIT', 'top-up', 100, 150]);
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.debited' })).length, 1);
  });

  test('RESET resizes allocated keeping spent, reserved and debt (remaining may go negative)', async () => {
    const { t, scope } = await funded(100, 80, 10);
    await op(t, scope, { operation: 'RESET', amount: T(50) });
    assert.deepEqual(await state(scope), { allocated: 50, remaining: -40, spent: 80, reserved: 10, debt: 0 });
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.reset' })).length, 1);
  });

  test('RESET_SPENT starts a period: spent = given (default 0), reserved and debt kept; spent_override_provided tells which', async () => {
    const { t, scope } = await funded(100, 120, 0);
    assert.deepEqual(await state(scope), { allocated: 100, remaining: -20, spent: 100, reserved: 0, debt: 20 });
    await op(t, scope, { operation: 'RESET_SPENT', amount: T(200) });
    assert.deepEqual(await state(scope), { allocated: 200, remaining: 180, spent: 0, reserved: 0, debt: 20 });
    const r = await op(t, scope, { operation: 'RESET_SPENT', amount: T(200), spent: T(15) });
    assert.deepEqual([r.previous_spent.amount, r.new_spent.amount], [0, 15]);
    const evs = await events(srv, { tenant_id: t, event_type: 'budget.reset_spent' });
    assert.deepEqual(evs.map((e) => e.data.spent_override_provided), [false, true]);
    expectError(await fund(srv, t, scope, { operation: 'CREDIT', amount: T(1), spent: T(1) }), 400, 'INVALID_REQUEST');
  });

  test('REPAY_DEBT reduces debt first and credits any excess; it clears is_over_limit', async () => {
    const { t, scope } = await funded(100, 150, 0);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/budgets${qs({ scope, unit: 'TOKENS' })}`, { overdraft_limit: T(10) }), 200);
    const r = await op(t, scope, { operation: 'REPAY_DEBT', amount: T(70) });
    assert.deepEqual([r.previous_debt.amount, r.new_debt.amount], [50, 0]);
    assert.deepEqual(await state(scope), { allocated: 120, remaining: 20, spent: 100, reserved: 0, debt: 0 });
    assert.equal((await lookup(srv, scope)).is_over_limit, false);
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.debt_repaid' })).length, 1);
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.over_limit_exited' })).length, 1);
  });

  test('idempotency: a replay returns the original reply and changes nothing; another payload is 409', async () => {
    const { t, scope } = await funded(100);
    const key = idem('fund');
    const first = await op(t, scope, { operation: 'CREDIT', amount: T(5), idempotency_key: key });
    const again = await op(t, scope, { operation: 'CREDIT', amount: T(5), idempotency_key: key });
    assert.deepEqual(again, first);
    assert.equal((await state(scope)).allocated, 105);
    expectError(await fund(srv, t, scope, { operation: 'CREDIT', amount: T(6), idempotency_key: key }), 409, 'IDEMPOTENCY_MISMATCH');
    assert.equal((await events(srv, { tenant_id: t, event_type: 'budget.funded' })).length, 1, 'a replay emits no second event');
  });

  test('routing: admin needs tenant_id; the ledger must belong to it (403); unit mismatch 400; unknown 404', async () => {
    const { t, scope, key } = await funded(100);
    expectError(await adminCall(srv, 'POST', `/v1/admin/budgets/fund${qs({ scope, unit: 'TOKENS' })}`, { operation: 'CREDIT', amount: T(1) }), 400, 'INVALID_REQUEST');
    expectError(await fund(srv, 'other-tenant', scope, { operation: 'CREDIT', amount: T(1) }), 403, 'FORBIDDEN');
    expectError(await fund(srv, t, scope, { operation: 'CREDIT', amount: { unit: 'CREDITS', amount: 1 } }), 400, 'UNIT_MISMATCH');
    expectError(await fund(srv, t, `${scope}/app:none`, { operation: 'CREDIT', amount: T(1) }), 404, 'BUDGET_NOT_FOUND');
    const viaKey = await srv.call('POST', `/v1/admin/budgets/fund${qs({ scope, unit: 'TOKENS' })}`, { apiKey: key, body: { operation: 'CREDIT', amount: T(2) } });
    expectStatus(viaKey, 200);
    const [e] = (await events(srv, { tenant_id: t, event_type: 'budget.funded' })).slice(-1);
    assert.equal(e.actor.type, 'api_key');
  });
});
