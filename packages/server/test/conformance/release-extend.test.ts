/**
 * releaseReservation and extendReservation.
 * Spec: ReleaseRequest/ReleaseResponse; extendReservation SEMANTICS and ERROR SEMANTICS;
 * MAX_EXTENSIONS_EXCEEDED (tenant max_reservation_extensions, default 10).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
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
  newTenant,
  release,
  releaseBody,
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

describe('release', () => {
  test('200 RELEASED with released = the full reserved amount; budget restored on every scope; detail shows RELEASED', async () => {
    const t = await newTenant(srv, [
      { at: '', allocated: 1000 },
      { at: 'agent:a', allocated: 300 },
    ]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, agent: 'a' }, 250));
    const rel = expectStatus(await release(srv, t.key, r.reservation_id, releaseBody({ reason: 'not needed' })), 200);
    assert.equal(rel.status, 'RELEASED');
    assert.deepEqual(rel.released, { unit: 'TOKENS', amount: 250 });
    const root = amounts(await balanceOf(srv, t, t.scope()));
    const leaf = amounts(await balanceOf(srv, t, t.scope('agent:a')));
    assert.deepEqual([root.reserved, root.remaining, root.spent], [0, 1000, 0]);
    assert.deepEqual([leaf.reserved, leaf.remaining, leaf.spent], [0, 300, 0]);
    const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    assert.equal(g.status, 'RELEASED');
    assert.equal(typeof g.finalized_at_ms, 'number');
    assert.equal(g.committed, undefined);
  });

  test('release, commit or extend of a RELEASED reservation under a new key: 409 RESERVATION_FINALIZED', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    expectStatus(await release(srv, t.key, r.reservation_id), 200);
    expectError(await release(srv, t.key, r.reservation_id), 409, 'RESERVATION_FINALIZED');
    expectError(await commit(srv, t.key, r.reservation_id, commitBody(1)), 409, 'RESERVATION_FINALIZED');
    expectError(await extend(srv, t.key, r.reservation_id, extendBody(1000)), 409, 'RESERVATION_FINALIZED');
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).remaining, 100, 'released exactly once');
  });

  test('unknown reservation: 404 NOT_FOUND', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    expectError(await release(srv, t.key, 'rsv_nope'), 404, 'NOT_FOUND');
  });

  test('invalid release bodies: 400 INVALID_REQUEST', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 10));
    for (const body of [{}, releaseBody({ reason: 'r'.repeat(257) }), releaseBody({ amount: 5 })]) {
      expectError(await srv.call('POST', `/v1/reservations/${r.reservation_id}/release`, { apiKey: t.key, body }), 400, 'INVALID_REQUEST');
    }
    assert.equal(expectStatus(await getReservation(srv, t.key, r.reservation_id), 200).status, 'ACTIVE');
  });
});

describe('extend', () => {
  test('new expires_at_ms = current expires_at_ms + extend_by_ms (not now + extend_by_ms); remaining_ttl_ms present; nothing else changes', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant, workspace: 'w' }, 10, 'TOKENS', { ttl_ms: 60_000 }));
    const before = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    const e = expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(5_000)), 200);
    assert.equal(e.status, 'ACTIVE');
    assert.equal(e.expires_at_ms, r.expires_at_ms + 5_000);
    assert.equal(typeof e.remaining_ttl_ms, 'number', 'remaining_ttl_ms SHOULD be emitted on extend');
    const expectedTtl = e.expires_at_ms - Date.now();
    assert.ok(Math.abs(e.remaining_ttl_ms - expectedTtl) < 2000, `remaining_ttl_ms ${e.remaining_ttl_ms} ~ ${expectedTtl}`);
    assert.ok(e.remaining_ttl_ms > 60_000, 'extension is relative to the current expiry, not to now');
    const after = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    assert.equal(after.expires_at_ms, e.expires_at_ms);
    for (const k of ['reservation_id', 'status', 'subject', 'action', 'reserved', 'created_at_ms', 'scope_path', 'affected_scopes']) {
      assert.deepEqual(after[k], before[k], `${k} must not change on extend`);
    }
    assert.equal(amounts(await balanceOf(srv, t, t.scope())).reserved, 10);
  });

  test('successive extensions accumulate', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
    const e1 = expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(1_000)), 200);
    const e2 = expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(2_000)), 200);
    assert.equal(e1.expires_at_ms, r.expires_at_ms + 1_000);
    assert.equal(e2.expires_at_ms, r.expires_at_ms + 3_000);
  });

  test('MAX_EXTENSIONS_EXCEEDED (409) after the default 10 extensions', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
    let last = r.expires_at_ms as number;
    for (let i = 0; i < 10; i++) {
      const e = expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(10)), 200);
      assert.equal(e.expires_at_ms, last + 10);
      last = e.expires_at_ms;
    }
    expectError(await extend(srv, t.key, r.reservation_id, extendBody(10)), 409, 'MAX_EXTENSIONS_EXCEEDED');
    const g = expectStatus(await getReservation(srv, t.key, r.reservation_id), 200);
    assert.equal(g.expires_at_ms, last, 'a refused extension changes nothing');
    assert.equal(g.status, 'ACTIVE');
    // The reservation is still committable.
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(1)), 200);
  });

  test('tenant max_reservation_extensions lowers the limit (GOV)', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }], { tenant: { max_reservation_extensions: 2 } });
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
    expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(10)), 200);
    expectStatus(await extend(srv, t.key, r.reservation_id, extendBody(10)), 200);
    expectError(await extend(srv, t.key, r.reservation_id, extendBody(10)), 409, 'MAX_EXTENSIONS_EXCEEDED');
  });

  test('extend of a COMMITTED reservation: 409 RESERVATION_FINALIZED', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 5));
    expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(5)), 200);
    expectError(await extend(srv, t.key, r.reservation_id, extendBody(1000)), 409, 'RESERVATION_FINALIZED');
  });

  test('unknown reservation: 404 NOT_FOUND', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    expectError(await extend(srv, t.key, 'rsv_missing', extendBody(1000)), 404, 'NOT_FOUND');
  });

  test('invalid extend bodies: 400 INVALID_REQUEST', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
    const r = await reserveOk(srv, t.key, reserveBody({ tenant: t.tenant }, 5));
    for (const body of [extendBody(0), extendBody(86_400_001), extendBody(1.5), { idempotency_key: 'k-1' }, extendBody(10, { ttl_ms: 5 })]) {
      expectError(await srv.call('POST', `/v1/reservations/${r.reservation_id}/extend`, { apiKey: t.key, body }), 400, 'INVALID_REQUEST');
    }
    assert.equal(expectStatus(await getReservation(srv, t.key, r.reservation_id), 200).expires_at_ms, r.expires_at_ms);
  });
});
