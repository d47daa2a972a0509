/**
 * Abuse limits: per-address and per-key rate limits and repeated authentication failures are
 * answered 429 LIMIT_EXCEEDED (the protocol ErrorResponse) with Retry-After in delta-seconds and
 * X-RateLimit-Reset in Unix seconds; probes and metrics are never limited; a throttled request
 * touches no ledger. Also the body size limit, the request timeout, and list/TTL bounds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_TRACKED_CLIENTS, RequestWindows } from '../../src/ops/limits.js';
import { fingerprint, idem, metric, NO_LIMITS, provision, reserveBody, scrape, show, startOps, type Res } from './support.js';

function assertLimitExceeded(r: Res, max: number): void {
  assert.equal(r.status, 429, show(r));
  assert.equal(r.body.error, 'LIMIT_EXCEEDED');
  assert.equal(typeof r.body.message, 'string');
  assert.equal(r.body.request_id, r.headers.get('x-request-id'));
  assert.equal(r.body.trace_id, r.headers.get('x-cycles-trace-id'));
  assert.match(r.body.trace_id, /^[0-9a-f]{32}$/);
  const retryAfter = r.headers.get('retry-after') ?? '';
  assert.match(retryAfter, /^\d+$/, 'Retry-After is delta-seconds, never an HTTP date');
  assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, `Retry-After ${retryAfter}`);
  const reset = Number(r.headers.get('x-ratelimit-reset'));
  const now = Date.now() / 1000;
  assert.ok(reset >= now - 1 && reset <= now + 61, `X-RateLimit-Reset ${reset} is Unix seconds within the window`);
  assert.equal(r.headers.get('x-ratelimit-remaining'), '0');
  assert.equal(r.headers.get('x-ratelimit-limit'), String(max));
}

describe('rate limits', () => {
  test('per client address: 429 once the window is used up; probes and metrics exempt; ledger untouched', async () => {
    const s = await startOps({ rateLimitPerIp: 40, rateLimitPerKey: 0, authFailureLimit: 0 });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]); // 4 requests
      const ledger = await fingerprint(s.client, [t.id]); // uses a few more
      let last: Res | undefined;
      for (let i = 0; i < 60 && last?.status !== 429; i++) last = await s.client.post('/v1/reservations', reserveBody(t.id, 1, { dry_run: true }), { key: t.key });
      assertLimitExceeded(last!, 40);
      const live = await s.client.post('/v1/reservations', reserveBody(t.id, 10), { key: t.key });
      assertLimitExceeded(live, 40);
      // Unauthenticated garbage from the same address is refused the same way, before auth.
      assertLimitExceeded(await s.client.get('/v1/balances?tenant=x'), 40);
      for (const p of ['/healthz', '/readyz', '/actuator/health/liveness', '/actuator/health/readiness', '/metrics', '/actuator/prometheus', '/openapi.json']) {
        assert.equal((await s.client.get(p)).status, 200, p);
      }
      const m = await scrape(s.client);
      assert.ok(metric(m, 'cycles_rate_limited_total', { limit: 'ip' }) >= 3);
      // The refused live reservation held nothing (checked through the store, not the limited API).
      const budgets = await s.server.store.listBudgets({ tenantId: t.id, limit: 10 });
      assert.equal(budgets.rows[0]!.reserved, 0);
      assert.equal(budgets.rows[0]!.spent, 0);
      assert.ok(ledger.length > 0);
    } finally {
      await s.close();
    }
  });

  test('per API key: one key is throttled, another key and the admin key are not', async () => {
    const s = await startOps({ rateLimitPerIp: 0, rateLimitPerKey: 15, authFailureLimit: 0 });
    try {
      const a = await provision(s.client, [{ at: '', allocated: 1000 }]);
      const b = await provision(s.client, [{ at: '', allocated: 1000 }]);
      let last: Res | undefined;
      for (let i = 0; i < 30 && last?.status !== 429; i++) last = await s.client.get(`/v1/balances?tenant=${a.id}`, { key: a.key });
      assertLimitExceeded(last!, 15);
      const other = await s.client.get(`/v1/balances?tenant=${b.id}`, { key: b.key });
      assert.equal(other.status, 200, show(other));
      assert.equal(other.headers.get('x-ratelimit-limit'), '15');
      assert.equal(other.headers.get('x-ratelimit-remaining'), '14');
      const m = await scrape(s.client);
      assert.ok(metric(m, 'cycles_rate_limited_total', { limit: 'key' }) >= 1);
    } finally {
      await s.close();
    }
  });

  test('repeated authentication failures throttle the address, even for a valid key, until the window ends', async () => {
    const s = await startOps({ rateLimitPerIp: 0, rateLimitPerKey: 0, authFailureLimit: 5, rateLimitWindowMs: 2000 });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
      for (let i = 0; i < 5; i++) {
        const r = await s.client.get(`/v1/balances?tenant=${t.id}`, { key: `cyc_live_guess${i}` });
        assert.equal(r.status, 401, show(r));
      }
      const guess = await s.client.get(`/v1/balances?tenant=${t.id}`, { key: 'cyc_live_guess_more' });
      assertLimitExceeded(guess, 5);
      assert.match(guess.body.message, /failed authentications/);
      const valid = await s.client.get(`/v1/balances?tenant=${t.id}`, { key: t.key });
      assert.equal(valid.status, 429, 'a throttled address learns nothing, not even with the right key');
      const admin = await s.client.get(`/v1/admin/tenants/${t.id}`, { headers: { 'x-admin-api-key': 'admin-guess-0123456789' } });
      assert.equal(admin.status, 429);
      assert.equal((await s.client.get('/healthz')).status, 200);
      await new Promise((r) => setTimeout(r, 2100));
      const later = await s.client.get(`/v1/balances?tenant=${t.id}`, { key: t.key });
      assert.equal(later.status, 200, show(later));
    } finally {
      await s.close();
    }
  });
});

describe('request windows', () => {
  test('fixed windows per client, from its first request; a new window after it ends', () => {
    const w = new RequestWindows(3, 1000);
    const t0 = 1_000_000;
    assert.deepEqual([1, 2, 3, 4].map((i) => w.hit('a', t0 + i).count), [1, 2, 3, 4]);
    assert.equal(w.hit('b', t0 + 5).count, 1, 'another client has its own window');
    const late = w.hit('a', t0 + 999);
    assert.deepEqual(late, { count: 5, startedAt: t0 + 1 }, 'still the window that began at the first request');
    assert.deepEqual(w.hit('a', t0 + 1001), { count: 1, startedAt: t0 + 1001 }, 'the next window starts at the request after the end');
    assert.equal(w.maxHeader, '3');
  });

  test(`at most ${MAX_TRACKED_CLIENTS} clients are tracked; the least recently seen is forgotten first`, () => {
    const w = new RequestWindows(100, 60_000);
    const now = 5_000_000;
    w.hit('first', now);
    w.hit('kept', now);
    for (let i = 0; i < MAX_TRACKED_CLIENTS - 2; i++) w.hit(`c${i}`, now);
    w.hit('kept', now); // seen again: now the most recent
    w.hit('one-more', now);
    assert.equal(w.hit('first', now).count, 1, 'forgotten: counts from 1 again');
    assert.equal(w.hit('kept', now).count, 3, 'recently seen: still counted');
  });
});

describe('request bounds', () => {
  test('body size limit, list sizes and TTL bounds are explicit 400s', async () => {
    const s = await startOps({ ...NO_LIMITS, bodyLimitBytes: 2048 });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
      const big = reserveBody(t.id, 1, { metadata: { blob: 'x'.repeat(4096) } });
      const r = await s.client.post('/v1/reservations', big, { key: t.key });
      assert.equal(r.status, 400, show(r));
      assert.equal(r.body.error, 'INVALID_REQUEST');
      assert.match(r.body.message, /2048 bytes/);
      const list = await s.client.get('/v1/reservations?limit=201', { key: t.key });
      assert.equal(list.status, 400);
      assert.match(list.body.message, /limit/);
      for (const ttl of [999, 86_400_001]) {
        const x = await s.client.post('/v1/reservations', reserveBody(t.id, 1, { ttl_ms: ttl }), { key: t.key });
        assert.equal(x.status, 400, `ttl_ms ${ttl}: ${show(x)}`);
        assert.match(x.body.message, /ttl_ms/);
      }
      const budgets = await s.server.store.listBudgets({ tenantId: t.id, limit: 10 });
      assert.equal(budgets.rows[0]!.reserved, 0);
    } finally {
      await s.close();
    }
  });

  test('a request not answered within CYCLES_REQUEST_TIMEOUT_MS gets 503 with the protocol envelope', async () => {
    const s = await startOps({ ...NO_LIMITS, requestTimeoutMs: 300 });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
      // A stalled store read: the handler waits far longer than the timeout.
      const backend = s.server.backend as unknown as { listReservations: (...a: unknown[]) => Promise<unknown> };
      const original = backend.listReservations.bind(backend);
      backend.listReservations = async (...a: unknown[]) => {
        await new Promise((r) => setTimeout(r, 1500));
        return original(...a);
      };
      const started = Date.now();
      const r = await s.client.get('/v1/reservations', { key: t.key });
      const took = Date.now() - started;
      assert.equal(r.status, 503, show(r));
      assert.equal(r.body.error, 'INTERNAL_ERROR');
      assert.match(r.body.message, /timed out/);
      assert.equal(r.body.request_id, r.headers.get('x-request-id'));
      assert.match(r.headers.get('retry-after') ?? '', /^\d+$/);
      assert.ok(took < 1400, `answered after ${took} ms, before the stalled call returned`);
      // Everything else keeps working.
      const ok = await s.client.post('/v1/reservations', reserveBody(t.id, 1, { idempotency_key: idem() }), { key: t.key });
      assert.equal(ok.status, 200, show(ok));
    } finally {
      await s.close();
    }
  });
});
