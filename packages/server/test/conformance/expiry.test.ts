/**
 * TTL, grace and expiry. The server sweeps every 100 ms; reservations use ttl_ms=1000.
 * Spec: ERROR SEMANTICS (410 RESERVATION_EXPIRED), createReservation (commits accepted through
 * expires_at_ms + grace_period_ms), extendReservation (server time <= expires_at_ms only),
 * getReservation EXPIRY, remaining_ttl_ms (0 when no longer ACTIVE).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, startTestServer, waitFor, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  commit,
  commitBody,
  expectError,
  expectStatus,
  extend,
  extendBody,
  getReservation,
  listReservations,
  newTenant,
  release,
  reserve,
  reserveBody,
  reserveOk,
  without,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ sweepIntervalMs: 100 });
});
after(async () => {
  await srv?.close();
});

/** Waits (bounded) until the local clock is past `ms` (same host as the server). */
async function waitUntilPast(ms: number): Promise<void> {
  const delay = ms - Date.now() + 30;
  assert.ok(delay < 5000, 'bounded wait');
  if (delay > 0) await sleep(delay);
}

test('within grace: commit succeeds after expires_at_ms, but extend is refused with 410 (grace never applies to extend)', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 4000 }));
  await waitUntilPast(r.expires_at_ms);
  expectError(await extend(srv, t.key, r.reservation_id, extendBody(10_000)), 410, 'RESERVATION_EXPIRED');
  const c = expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(7)), 200);
  assert.equal(c.status, 'COMMITTED');
  assert.deepEqual(c.charged, { unit: 'TOKENS', amount: 7 });
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 7);
});

test('within grace: release succeeds after expires_at_ms', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 4000 }));
  await waitUntilPast(r.expires_at_ms);
  const rel = expectStatus(await release(srv, t.key, r.reservation_id), 200);
  assert.equal(rel.status, 'RELEASED');
});

test('the sweeper does not expire a reservation before expires_at_ms + grace', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 3000 }));
  await waitUntilPast(r.expires_at_ms + 500);
  const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
  assert.equal(g.status, 'ACTIVE');
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 10);
});

test('past expires_at_ms + grace: commit and release are 410 RESERVATION_EXPIRED', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r1 = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }));
  const r2 = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }));
  await waitUntilPast(r2.expires_at_ms + 50);
  expectError(await commit(srv, t.key, r1.reservation_id, commitBody(5)), 410, 'RESERVATION_EXPIRED');
  expectError(await release(srv, t.key, r2.reservation_id), 410, 'RESERVATION_EXPIRED');
  expectError(await extend(srv, t.key, r2.reservation_id, extendBody(1000)), 410, 'RESERVATION_EXPIRED');
  const bal = await waitFor(async () => {
    const b = amounts(await balanceOf(srv, t, t.scope()));
    return b.reserved === 0 ? b : undefined;
  });
  assert.deepEqual([bal.spent, bal.remaining], [0, 100], 'expiry returns the held budget and charges nothing');
});

test('an EXPIRED reservation: GET is 410 RESERVATION_EXPIRED, while the list returns it with 200 and status EXPIRED', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }));
  const row = await waitFor(async () => {
    const list = expectStatus(await listReservations(srv, t.key, { status: 'EXPIRED' }), 200);
    return (list.reservations as Array<{ reservation_id: string }>).find((x) => x.reservation_id === r.reservation_id);
  }, 6000);
  const expired = row as Record<string, unknown>;
  assert.equal(expired.status, 'EXPIRED');
  assert.equal(expired.finalized_at_ms, undefined, 'EXPIRED rows have no finalized_at_ms');
  assert.equal(expired.committed, undefined);
  expectError(await getReservation(srv, t.key, r.reservation_id), 410, 'RESERVATION_EXPIRED');
  // Mutations on an EXPIRED reservation are 410 too.
  expectError(await commit(srv, t.key, r.reservation_id, commitBody(1)), 410, 'RESERVATION_EXPIRED');
  expectError(await release(srv, t.key, r.reservation_id), 410, 'RESERVATION_EXPIRED');
  // Unfiltered list shows it as a normal row.
  const all = expectStatus(await listReservations(srv, t.key), 200);
  assert.ok((all.reservations as Array<{ reservation_id: string; status: string }>).some((x) => x.reservation_id === r.reservation_id && x.status === 'EXPIRED'));
  // finalized_* windows exclude EXPIRED rows; expires_* windows include them.
  const fin = expectStatus(await listReservations(srv, t.key, { finalized_from: new Date(0).toISOString() }), 200);
  assert.ok(!(fin.reservations as Array<{ reservation_id: string }>).some((x) => x.reservation_id === r.reservation_id));
  const exp = expectStatus(
    await listReservations(srv, t.key, {
      expires_from: new Date(r.expires_at_ms - 1).toISOString(),
      expires_to: new Date(r.expires_at_ms + 1).toISOString(),
    }),
    200,
  );
  assert.ok((exp.reservations as Array<{ reservation_id: string }>).some((x) => x.reservation_id === r.reservation_id));
  assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 0);
});

test('create replay after expiry returns the original payload with remaining_ttl_ms recomputed to 0', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const body = reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 });
  const first = expectStatus(await reserve(srv, t.key, body), 200);
  await waitFor(async () => (await getReservation(srv, t.key, first.reservation_id)).status === 410, 6000);
  const replay = expectStatus(await reserve(srv, t.key, body), 200);
  assert.deepEqual(without(replay, 'remaining_ttl_ms'), without(first, 'remaining_ttl_ms'));
  assert.equal(replay.remaining_ttl_ms, 0, 'MUST be 0 if the reservation is no longer ACTIVE');
});

test('extend keeps a reservation alive past its original expiry', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { ttl_ms: 1000, grace_period_ms: 0 }));
  const e = expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(3000)), 200);
  assert.equal(e.expires_at_ms, r.expires_at_ms + 3000);
  await waitUntilPast(r.expires_at_ms + 300);
  assert.equal(expectStatus(await getReservation(srv, t.key, r.reservation_id), 200).status, 'ACTIVE');
  expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(10)), 200);
});
