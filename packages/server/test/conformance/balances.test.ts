/**
 * GET /v1/balances: subject filter required, tenant validation, Balance shape and the
 * ledger invariant (checked by the harness on every Balance of every response).
 * Spec: getBalances (SUBJECT FILTER REQUIREMENT, TENANCY), Balance (UNIT CONSISTENCY, LEDGER INVARIANT).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balances,
  commit,
  commitBody,
  expectError,
  expectStatus,
  newTenant,
  postEvent,
  eventBody,
  qs,
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

test('no subject filter: 400 INVALID_REQUEST (include_children/limit alone do not count)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
  expectError(await srv.call('GET', '/v1/balances', { apiKey: t.key }), 400, 'INVALID_REQUEST');
  expectError(await srv.call('GET', `/v1/balances${qs({ include_children: true, limit: 5 })}`, { apiKey: t.key }), 400, 'INVALID_REQUEST');
});

test('tenant filter for the own tenant returns its balances; each Balance has one unit and a consistent ledger', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: '', allocated: 500, unit: 'USD_MICROCENTS' },
    { at: 'workspace:prod', allocated: 300 },
  ]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'prod' }, 100));
  expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(40)), 200);
  const res = expectStatus(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant })}`, { apiKey: t.key }), 200);
  const byKey = new Map<string, Json>((res.balances as Json[]).map((b) => [`${b.scope_path}|${b.remaining.unit}`, b]));
  const root = byKey.get(`tenant:${t.tenant}|TOKENS`);
  const rootUsd = byKey.get(`tenant:${t.tenant}|USD_MICROCENTS`);
  assert.ok(root, 'root TOKENS balance present');
  assert.ok(rootUsd, 'root USD_MICROCENTS balance present as a separate Balance');
  assert.deepEqual(amounts(root), { remaining: 960, reserved: 0, spent: 40, debt: 0, allocated: 1000, over: false });
  assert.equal(rootUsd.remaining.amount, 500);
  for (const b of res.balances as Json[]) {
    assert.ok(b.scope_path.startsWith(`tenant:${t.tenant}`));
    assert.equal(typeof b.scope, 'string');
  }
});

test('a filter below the tenant returns that scope\'s balance', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:prod', allocated: 300 },
    { at: 'workspace:dev', allocated: 200 },
  ]);
  const map = await balances(srv, t.key, { tenant: t.tenant, workspace: 'prod' });
  const ws = map.get(`tenant:${t.tenant}/workspace:prod|TOKENS`);
  assert.ok(ws);
  assert.equal(ws.remaining.amount, 300);
  assert.ok(!map.has(`tenant:${t.tenant}/workspace:dev|TOKENS`), 'a sibling scope does not match the workspace filter');
});

test('tenant of another tenant: 403 FORBIDDEN', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
  const other = await newTenant(srv, [{ at: '', allocated: 10 }]);
  expectError(await srv.call('GET', `/v1/balances${qs({ tenant: other.tenant })}`, { apiKey: t.key }), 403, 'FORBIDDEN');
});

test('negative remaining (overdraft) is reported as a SignedAmount with the invariant intact', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100, overdraft_limit: 1000 }]);
  expectStatus(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 250, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' })), 201);
  const b = (await balances(srv, t.key, { tenant: t.tenant })).get(`tenant:${t.tenant}|TOKENS`);
  assert.ok(b);
  assert.equal(b.remaining.amount, -150);
  assert.ok(b.debt.amount > 0);
  assert.equal(b.spent.amount + b.debt.amount, 250);
});

test('pagination with limit=1 visits every balance once', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1 },
    { at: 'workspace:a', allocated: 2 },
    { at: 'workspace:b', allocated: 3 },
    { at: 'workspace:a/agent:x', allocated: 4 },
  ]);
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 20; i++) {
    const res = expectStatus(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant, include_children: true, limit: 1, cursor })}`, { apiKey: t.key }), 200);
    assert.ok(res.balances.length <= 1);
    seen.push(...(res.balances as Json[]).map((b) => b.scope_path as string));
    if (!res.next_cursor) break;
    if (res.has_more !== undefined) assert.equal(res.has_more, true);
    cursor = res.next_cursor;
  }
  assert.equal(new Set(seen).size, seen.length, 'no repeats');
  assert.ok(seen.includes(`tenant:${t.tenant}`));
  const full = expectStatus(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant, include_children: true, limit: 200 })}`, { apiKey: t.key }), 200);
  assert.deepEqual([...seen].sort(), (full.balances as Json[]).map((b) => b.scope_path as string).sort());
});
