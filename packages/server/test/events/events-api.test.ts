/**
 * Runtime events: emitted from state transitions in the same step as the change, listed by
 * the admin and tenant events APIs (every response validated against the spec).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, waitFor, type Json, type TestServer } from '../helpers/harness.js';
import { commit, commitBody, decide, decideBody, expectStatus, newTenant, reserveBody, reserveOk } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ sweepIntervalMs: 50 });
});
after(() => srv.close());

async function adminEvents(query: string): Promise<Json[]> {
  const res = await srv.call('GET', `/v1/admin/events?${query}`, { admin: true });
  return expectStatus(res, 200).events;
}

describe('events from runtime transitions', () => {
  test('budget.exhausted fires once, when remaining first reaches zero', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(100)), 200);
    const events = await adminEvents(`tenant_id=${t.tenant}&event_type=budget.exhausted`);
    assert.equal(events.length, 1, 'exactly one exhausted event across reserve and commit');
    assert.equal(events[0].scope, t.scope());
    assert.equal(events[0].data.threshold, 1);
    assert.equal(events[0].data.remaining, 0);
    assert.equal(events[0].category, 'budget');
  });

  test('threshold_crossed at 80% and 95%, each once, rising', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    for (const amount of [700, 150, 100]) await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, amount));
    const events = await adminEvents(`tenant_id=${t.tenant}&event_type=budget.threshold_crossed&sort_dir=asc`);
    assert.deepEqual(events.map((e) => e.data.threshold), [0.8, 0.95]);
    assert.ok(events.every((e) => e.data.direction === 'rising'));
  });

  test('commit overage under ALLOW_IF_AVAILABLE emits commit_overage and over_limit_entered', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 60));
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(150)), 200);
    const types = (await adminEvents(`tenant_id=${t.tenant}&sort_dir=asc&limit=100`)).map((e) => e.event_type);
    assert.ok(types.includes('reservation.commit_overage'), types.join());
    assert.ok(types.includes('budget.over_limit_entered'), types.join());
    const [overage] = await adminEvents(`tenant_id=${t.tenant}&event_type=reservation.commit_overage`);
    assert.equal(overage.data.reservation_id, r.reservation_id);
    assert.equal(overage.data.estimated_amount, 60);
    assert.equal(overage.data.actual_amount, 150);
    assert.equal(overage.data.overage, 90);
  });

  test('ALLOW_WITH_OVERDRAFT shortfall emits debt_incurred with the reservation id', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100, overdraft_limit: 500 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100, 'TOKENS', { overage_policy: 'ALLOW_WITH_OVERDRAFT' }));
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(130)), 200);
    const [debt] = await adminEvents(`tenant_id=${t.tenant}&event_type=budget.debt_incurred`);
    assert.equal(debt.data.debt_incurred, 30);
    assert.equal(debt.data.total_debt, 30);
    assert.equal(debt.data.reservation_id, r.reservation_id);
  });

  test('decide DENY emits reservation.denied carrying the request trace and request ids', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const traceId = 'ab'.repeat(16);
    const res = await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50), { 'x-cycles-trace-id': traceId });
    assert.equal(expectStatus(res, 200).decision, 'DENY');
    const [denied] = await adminEvents(`tenant_id=${t.tenant}&event_type=reservation.denied`);
    assert.equal(denied.data.reason_code, 'BUDGET_EXCEEDED');
    assert.equal(denied.data.requested_amount, 50);
    assert.equal(denied.trace_id, traceId);
    assert.equal(denied.request_id, res.requestId);
    assert.equal(denied.actor.type, 'api_key');
    // Filtering by trace id finds it.
    assert.equal((await adminEvents(`trace_id=${traceId}`)).length, 1);
  });

  test('expiry emits reservation.expired from the sweeper with a system actor', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }));
    const [expired] = await waitFor(async () => {
      const list = await adminEvents(`tenant_id=${t.tenant}&event_type=reservation.expired`);
      return list.length ? list : undefined;
    }, 5000);
    assert.equal(expired.data.reservation_id, r.reservation_id);
    assert.equal(expired.data.estimated_amount, 10);
    assert.equal(expired.actor.type, 'system');
    assert.match(expired.trace_id, /^[0-9a-f]{32}$/);
  });

  test('a replayed request emits nothing new', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const body = decideBody({ tenant: t.tenant }, 50);
    await decide(srv, t.key, body);
    await decide(srv, t.key, body);
    assert.equal((await adminEvents(`tenant_id=${t.tenant}&event_type=reservation.denied`)).length, 1);
  });
});

describe('events API', () => {
  test('admin list pages without skipping or repeating, and get returns the exact event', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    for (let i = 0; i < 7; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 5000));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const res = expectStatus(await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&event_type=reservation.denied&limit=3${cursor ? `&cursor=${cursor}` : ''}`, { admin: true }), 200);
      seen.push(...res.events.map((e: Json) => e.event_id));
      // Events added while paging (newer) must not disturb a descending walk.
      await decide(srv, t.key, decideBody({ tenant: t.tenant }, 5000));
      cursor = res.next_cursor;
      assert.equal(res.has_more, cursor !== undefined);
    } while (cursor);
    assert.equal(seen.length, 7);
    assert.equal(new Set(seen).size, 7);
    const one = expectStatus(await srv.call('GET', `/v1/admin/events/${seen[0]}`, { admin: true }), 200);
    assert.equal(one.event_id, seen[0]);
    const missing = await srv.call('GET', '/v1/admin/events/evt_nope', { admin: true });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error, 'EVENT_NOT_FOUND');
  });

  test('a cursor is bound to its filters', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1 }]);
    for (let i = 0; i < 3; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 5));
    const first = expectStatus(await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&limit=1`, { admin: true }), 200);
    const res = await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&limit=1&event_type=budget.created&cursor=${first.next_cursor}`, { admin: true });
    assert.equal(res.status, 400);
  });

  test('tenant events: own tenant only, tenant-accessible categories only, events:read required', async () => {
    const a = await newTenant(srv, [{ at: '', allocated: 10 }], { permissions: ['reservations:create', 'events:read'] });
    const b = await newTenant(srv, [{ at: '', allocated: 10 }], { permissions: ['reservations:create', 'events:read'] });
    await decide(srv, a.key, decideBody({ tenant: a.tenant }, 50));
    await decide(srv, b.key, decideBody({ tenant: b.tenant }, 50));
    const mine = expectStatus(await srv.call('GET', '/v1/events?limit=100', { apiKey: a.key }), 200).events as Json[];
    assert.ok(mine.length >= 1);
    assert.ok(mine.every((e) => e.tenant_id === a.tenant), 'no other tenant');
    assert.ok(mine.every((e) => ['budget', 'reservation', 'tenant'].includes(e.category)), 'no admin-only categories');
    const adminOnly = await srv.call('GET', '/v1/events?category=api_key', { apiKey: a.key });
    assert.equal(adminOnly.status, 400);
    const noPerm = await newTenant(srv, [], { permissions: ['reservations:create'] });
    assert.equal((await srv.call('GET', '/v1/events', { apiKey: noPerm.key })).status, 403);
    assert.equal((await srv.call('GET', '/v1/admin/events', { apiKey: a.key })).status, 401);
  });
});
