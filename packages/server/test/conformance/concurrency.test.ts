/**
 * Concurrency-safety of the core invariants: no oversubscription, no double settlement,
 * concurrency-safe extensions (extendReservation SEMANTICS), atomic events.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  commit,
  commitBody,
  eventBody,
  expectStatus,
  extend,
  extendBody,
  getReservation,
  newTenant,
  postEvent,
  release,
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

test('concurrent commit and release of one reservation: exactly one wins, the other is RESERVATION_FINALIZED', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  for (let round = 0; round < 5; round++) {
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    const [c, rel] = await Promise.all([commit(srv, t.key, r.reservation_id, commitBody(60)), release(srv, t.key, r.reservation_id)]);
    const ok = [c, rel].filter((x) => x.status === 200);
    const lost = [c, rel].filter((x) => x.status === 409);
    assert.equal(ok.length, 1, `round ${round}: ${c.status} ${rel.status}`);
    assert.equal(lost.length, 1);
    assert.equal(lost[0]!.body.error, 'RESERVATION_FINALIZED');
    const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    assert.equal(g.status, c.status === 200 ? 'COMMITTED' : 'RELEASED');
  }
  const bal = amounts(await balanceOf(srv, t, t.scope()));
  assert.equal(bal.reserved, 0);
  assert.equal(bal.spent % 60, 0);
  assert.equal(bal.remaining, 1000 - bal.spent);
});

test('concurrent extensions: exactly max_extensions succeed and each is applied once', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
  const results = await Promise.all(Array.from({ length: 14 }, () => extend(srv, t.key, r.reservation_id, extendBody(100))));
  const ok = results.filter((x) => x.status === 200);
  const refused = results.filter((x) => x.status === 409 && x.body.error === 'MAX_EXTENSIONS_EXCEEDED');
  assert.equal(ok.length, 10);
  assert.equal(refused.length, 4);
  const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
  assert.equal(g.expires_at_ms, r.expires_at_ms + 10 * 100);
  assert.deepEqual(
    ok.map((x) => x.body.expires_at_ms).sort((a: number, b: number) => a - b),
    Array.from({ length: 10 }, (_, i) => r.expires_at_ms + (i + 1) * 100),
    'every successful extension saw a distinct current expiry',
  );
});

test('concurrent REJECT events never overspend', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'agent:a', allocated: 500 },
  ]);
  const results = await Promise.all(
    Array.from({ length: 16 }, () => postEvent(srv, t.key, eventBody({ tenant: t.tenant, agent: 'a' }, 50, 'TOKENS', { overage_policy: 'REJECT' }))),
  );
  assert.equal(results.filter((x) => x.status === 201).length, 10);
  assert.equal(results.filter((x) => x.status === 409 && x.body.error === 'BUDGET_EXCEEDED').length, 6);
  assert.equal(amounts(await balanceOf(srv, t, t.scope('agent:a'))).spent, 500);
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 500);
});

test('concurrent mixed reserves across parent and child scopes keep every scope consistent', async () => {
  const t = await newTenant(srv, [
    { at: '', allocated: 600 },
    { at: 'workspace:a', allocated: 400 },
    { at: 'workspace:b', allocated: 400 },
  ]);
  const results = await Promise.all(
    Array.from({ length: 24 }, (_, i) => srv.call('POST', '/v1/reservations', { apiKey: t.key, body: reserveBody({ tenant: t.tenant, workspace: i % 2 ? 'a' : 'b' }, 50) })),
  );
  const okA = results.filter((x, i) => x.status === 200 && i % 2 === 1).length;
  const okB = results.filter((x, i) => x.status === 200 && i % 2 === 0).length;
  assert.equal(okA + okB, 12, 'the root (600) admits exactly 12 holds of 50');
  assert.ok(okA <= 8 && okB <= 8, 'no child admits more than 400');
  const root = amounts(await balanceOf(srv, t, t.scope()));
  const a = amounts(await balanceOf(srv, t, t.scope('workspace:a')));
  const b = amounts(await balanceOf(srv, t, t.scope('workspace:b')));
  assert.equal(root.reserved, 600);
  assert.equal(a.reserved, okA * 50);
  assert.equal(b.reserved, okB * 50);
});
