/**
 * Idempotency on every mutating endpoint: replay returns the original payload (only
 * remaining_ttl_ms is recomputed), a different payload is 409 IDEMPOTENCY_MISMATCH, a
 * header/body key mismatch is 400, and a new key on a finalized reservation is 409
 * RESERVATION_FINALIZED. Keys are scoped per (tenant, endpoint).
 * Spec: IDEMPOTENCY (NORMATIVE), IdempotencyKeyHeader.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, startTestServer, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  commit,
  commitBody,
  decide,
  decideBody,
  eventBody,
  expectError,
  expectStatus,
  extend,
  extendBody,
  getReservation,
  listReservations,
  newTenant,
  postEvent,
  release,
  releaseBody,
  reserve,
  reserveBody,
  reserveOk,
  without,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

describe('replay returns the original payload', () => {
  test('create: same reservation_id and body (remaining_ttl_ms recomputed, never larger); budget held once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = reserveBody({ tenant: t.tenant, workspace: 'w' }, 100);
    const first = expectStatus(await reserve(srv, t.key, body), 200);
    await new Promise((r) => setTimeout(r, 30));
    const again = expectStatus(await reserve(srv, t.key, body), 200);
    assert.deepEqual(without(again, 'remaining_ttl_ms'), without(first, 'remaining_ttl_ms'));
    assert.equal(typeof again.remaining_ttl_ms, 'number');
    assert.ok(again.remaining_ttl_ms <= first.remaining_ttl_ms, 'recomputed from the original expires_at_ms');
    assert.ok(Math.abs(again.remaining_ttl_ms - (first.expires_at_ms - Date.now())) < 1500);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 100);
    const list = expectStatus(await listReservations(srv, t.key, { idempotency_key: body.idempotency_key as string }), 200);
    assert.equal(list.reservations.length, 1, 'idempotency_key lookup finds exactly the one reservation');
    assert.equal(list.reservations[0].reservation_id, first.reservation_id);
  });

  test('create: the replay reflects the original outcome even after the budget changed', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const body = reserveBody({ tenant: t.tenant }, 100);
    const first = expectStatus(await reserve(srv, t.key, body), 200);
    expectStatus(await commit(srv, t.key, first.reservation_id, commitBody(100)), 200);
    const again = expectStatus(await reserve(srv, t.key, body), 200);
    assert.deepEqual(without(again, 'remaining_ttl_ms'), without(first, 'remaining_ttl_ms'));
    assert.equal(again.remaining_ttl_ms, 0, 'MUST be 0 once the reservation is no longer ACTIVE');
  });

  test('commit: identical body, charged once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    const body = commitBody(60);
    const first = expectStatus(await commit(srv, t.key, r.reservation_id, body), 200);
    const again = expectStatus(await commit(srv, t.key, r.reservation_id, body), 200);
    assert.deepEqual(again, first);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 60);
  });

  test('commit: concurrent same-key commits all return the same body and charge once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    const body = commitBody(70);
    const results = await Promise.all(Array.from({ length: 6 }, () => commit(srv, t.key, r.reservation_id, body)));
    for (const res of results) assert.equal(res.status, 200, res.text);
    for (const res of results) assert.deepEqual(res.body, results[0]!.body);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 70);
  });

  test('release: identical body, released once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    const body = releaseBody();
    const first = expectStatus(await release(srv, t.key, r.reservation_id, body), 200);
    const again = expectStatus(await release(srv, t.key, r.reservation_id, body), 200);
    assert.deepEqual(again, first);
    const bal = amounts(await balanceOf(srv, t, t.scope()));
    assert.deepEqual([bal.reserved, bal.remaining], [0, 1000]);
  });

  test('extend: identical body except remaining_ttl_ms; applied once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 100));
    const body = extendBody(5000);
    const first = expectStatus(await extend(srv, t.key, r.reservation_id, body), 200);
    const again = expectStatus(await extend(srv, t.key, r.reservation_id, body), 200);
    assert.deepEqual(without(again, 'remaining_ttl_ms'), without(first, 'remaining_ttl_ms'));
    assert.equal(typeof again.remaining_ttl_ms, 'number');
    assert.ok(again.remaining_ttl_ms <= first.remaining_ttl_ms);
    assert.equal(expectStatus(await getReservation(srv, t.key, r.reservation_id), 200).expires_at_ms, r.expires_at_ms + 5000);
    // After the reservation is finalized, the extend replay reports remaining_ttl_ms 0.
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(1)), 200);
    const late = expectStatus(await extend(srv, t.key, r.reservation_id, body), 200);
    assert.deepEqual(without(late, 'remaining_ttl_ms'), without(first, 'remaining_ttl_ms'));
    assert.equal(late.remaining_ttl_ms, 0);
  });

  test('events: identical body (same event_id), applied once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = eventBody({ tenant: t.tenant }, 40);
    const first = expectStatus(await postEvent(srv, t.key, body), 201);
    const again = expectStatus(await postEvent(srv, t.key, body), 201);
    assert.deepEqual(again, first);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 40);
  });

  test('decide: identical body', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = decideBody({ tenant: t.tenant }, 40);
    const first = expectStatus(await decide(srv, t.key, body), 200);
    assert.deepEqual(expectStatus(await decide(srv, t.key, body), 200), first);
  });
});

describe('409 IDEMPOTENCY_MISMATCH on a different payload', () => {
  test('create', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = reserveBody({ tenant: t.tenant }, 10);
    expectStatus(await reserve(srv, t.key, body), 200);
    expectError(await reserve(srv, t.key, { ...body, estimate: { unit: 'TOKENS', amount: 11 } }), 409, 'IDEMPOTENCY_MISMATCH');
    expectError(await reserve(srv, t.key, { ...body, subject: { tenant: t.tenant, agent: 'x' } }), 409, 'IDEMPOTENCY_MISMATCH');
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 10);
  });

  test('commit', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    const body = commitBody(5);
    expectStatus(await commit(srv, t.key, r.reservation_id, body), 200);
    expectError(await commit(srv, t.key, r.reservation_id, { ...body, actual: { unit: 'TOKENS', amount: 6 } }), 409, 'IDEMPOTENCY_MISMATCH');
  });

  test('release', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    const body = releaseBody({ reason: 'a' });
    expectStatus(await release(srv, t.key, r.reservation_id, body), 200);
    expectError(await release(srv, t.key, r.reservation_id, { ...body, reason: 'b' }), 409, 'IDEMPOTENCY_MISMATCH');
  });

  test('extend', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    const body = extendBody(1000);
    expectStatus(await extend(srv, t.key, r.reservation_id, body), 200);
    expectError(await extend(srv, t.key, r.reservation_id, { ...body, extend_by_ms: 2000 }), 409, 'IDEMPOTENCY_MISMATCH');
    assert.equal(expectStatus(await getReservation(srv, t.key, r.reservation_id), 200).expires_at_ms, r.expires_at_ms + 1000);
  });

  test('events', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = eventBody({ tenant: t.tenant }, 10);
    expectStatus(await postEvent(srv, t.key, body), 201);
    expectError(await postEvent(srv, t.key, { ...body, actual: { unit: 'TOKENS', amount: 11 } }), 409, 'IDEMPOTENCY_MISMATCH');
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 10);
  });

  test('decide', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = decideBody({ tenant: t.tenant }, 10);
    expectStatus(await decide(srv, t.key, body), 200);
    expectError(await decide(srv, t.key, { ...body, estimate: { unit: 'TOKENS', amount: 9 } }), 409, 'IDEMPOTENCY_MISMATCH');
  });

  test('create: dry_run and live under the same key are different payloads', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const body = reserveBody({ tenant: t.tenant }, 10, 'TOKENS', { dry_run: true });
    expectStatus(await reserve(srv, t.key, body), 200);
    expectError(await reserve(srv, t.key, { ...body, dry_run: false }), 409, 'IDEMPOTENCY_MISMATCH');
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 0);
  });
});

describe('X-Idempotency-Key header', () => {
  test('a header equal to the body key is accepted on every mutating endpoint', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const h = (b: Record<string, unknown>): Record<string, string> => ({ 'X-Idempotency-Key': b.idempotency_key as string });
    const rb = reserveBody({ tenant: t.tenant }, 10);
    const r = expectStatus(await reserve(srv, t.key, rb, h(rb)), 200);
    const eb = extendBody(100);
    expectStatus(await extend(srv, t.key, r.reservation_id, eb, h(eb)), 200);
    const cb = commitBody(5);
    expectStatus(await commit(srv, t.key, r.reservation_id, cb, h(cb)), 200);
    const r2 = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    const lb = releaseBody();
    expectStatus(await release(srv, t.key, r2.reservation_id, lb, h(lb)), 200);
    const db = decideBody({ tenant: t.tenant }, 1);
    expectStatus(await decide(srv, t.key, db, h(db)), 200);
    const evb = eventBody({ tenant: t.tenant }, 1);
    expectStatus(await postEvent(srv, t.key, evb, h(evb)), 201);
  });

  test('a header different from the body key is 400 INVALID_REQUEST on every mutating endpoint, with no side effect', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const bad = { 'X-Idempotency-Key': idem('other') };
    expectError(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 10), bad), 400, 'INVALID_REQUEST');
    expectError(await decide(srv, t.key, decideBody({ tenant: t.tenant }, 10), bad), 400, 'INVALID_REQUEST');
    expectError(await postEvent(srv, t.key, eventBody({ tenant: t.tenant }, 10), bad), 400, 'INVALID_REQUEST');
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    expectError(await commit(srv, t.key, r.reservation_id, commitBody(5), bad), 400, 'INVALID_REQUEST');
    expectError(await release(srv, t.key, r.reservation_id, releaseBody(), bad), 400, 'INVALID_REQUEST');
    expectError(await extend(srv, t.key, r.reservation_id, extendBody(100), bad), 400, 'INVALID_REQUEST');
    const bal = amounts(await balanceOf(srv, t, t.scope()));
    assert.deepEqual([bal.reserved, bal.spent], [10, 0]);
    const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    assert.deepEqual([g.status, g.expires_at_ms], ['ACTIVE', r.expires_at_ms]);
  });
});

describe('key scoping and finalized reservations', () => {
  test('a different key on a finalized reservation is RESERVATION_FINALIZED (not IDEMPOTENCY_MISMATCH)', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(10)), 200);
    expectError(await commit(srv, t.key, r.reservation_id, commitBody(10)), 409, 'RESERVATION_FINALIZED');
    expectError(await commit(srv, t.key, r.reservation_id, commitBody(3)), 409, 'RESERVATION_FINALIZED');
  });

  test('keys are scoped per endpoint: the commit key may be reused on /v1/events (client recovery)', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const key = idem('shared');
    const r = await reserveOk(srv, t.key, { ...reserveBody({ tenant: t.tenant }, 10), idempotency_key: key });
    expectStatus(await commit(srv, t.key, r.reservation_id, { ...commitBody(10), idempotency_key: key }), 200);
    expectStatus(await postEvent(srv, t.key, { ...eventBody({ tenant: t.tenant }, 7), idempotency_key: key }), 201);
    expectStatus(await decide(srv, t.key, { ...decideBody({ tenant: t.tenant }, 7), idempotency_key: key }), 200);
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).spent, 17);
  });

  test('keys are scoped per tenant: two tenants using one key get two reservations', async () => {
    const a = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const b = await newTenant(srv, [{ at: '', allocated: 1000 }]);
    const key = idem('cross');
    const ra = expectStatus(await reserve(srv, a.key, { ...reserveBody({ tenant: a.tenant }, 10), idempotency_key: key }), 200);
    const rb = expectStatus(await reserve(srv, b.key, { ...reserveBody({ tenant: b.tenant }, 20), idempotency_key: key }), 200);
    assert.notEqual(ra.reservation_id, rb.reservation_id);
    assert.equal(amounts(await balanceOf(srv, b, b.scope())).reserved, 20);
  });

  test('a failed request is not stored: retrying the same key after fixing the budget succeeds', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const body = reserveBody({ tenant: t.tenant }, 20);
    expectError(await reserve(srv, t.key, body), 409, 'BUDGET_EXCEEDED');
    await srv.fund(t.tenant, t.scope(), 'TOKENS', 'CREDIT', 100);
    expectStatus(await reserve(srv, t.key, body), 200);
  });
});
