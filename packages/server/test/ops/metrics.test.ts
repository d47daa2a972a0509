/**
 * Metrics and health: /metrics and /actuator/prometheus serve the Prometheus text format with
 * request histograms by route and status, process metrics, and domain counters that move with
 * the protocol outcomes (decision and reason, commits, releases, extends, events, replays,
 * over-limit entries, debt incidents, expirations, sweeper lag). Probes are unauthenticated.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Config } from '../../src/config.js';
import { ADMIN_KEY, idem, metric, NO_LIMITS, parseMetrics, provision, reserveBody, scrape, show, sleep, startOps, type OpsServer, type Tenant } from './support.js';

let s: OpsServer;
let t: Tenant;

before(async () => {
  s = await startOps({ ...NO_LIMITS });
  t = await provision(s.client, [{ at: '', allocated: 1_000_000 }, { at: 'workspace:w1', allocated: 10_000, overdraft: 5_000 }]);
});
after(() => s.close());

const reserve = (amount: number, extra: Record<string, unknown> = {}) => s.client.post('/v1/reservations', reserveBody(t.id, amount, extra), { key: t.key });

describe('exposition', () => {
  test('/metrics and /actuator/prometheus serve the same text format without credentials', async () => {
    for (const path of ['/metrics', '/actuator/prometheus']) {
      const r = await s.client.get(path);
      assert.equal(r.status, 200, show(r));
      assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      assert.match(r.text, /# TYPE http_request_duration_seconds histogram/);
      assert.match(r.text, /# TYPE cycles_reservations_reserve_total counter/);
      assert.match(r.text, /# TYPE cycles_webhook_deliveries_total counter/);
      // Process metrics from prom-client's default collectors.
      assert.match(r.text, /^process_cpu_user_seconds_total /m);
      assert.match(r.text, /^nodejs_eventloop_lag_seconds /m);
    }
  });

  test('request histogram is labelled by route template, method and status', async () => {
    const before = await scrape(s.client);
    const missing = `/v1/reservations/rsv_${'0'.repeat(32)}`;
    assert.equal((await s.client.get(missing, { key: t.key })).status, 404);
    assert.equal((await s.client.get(missing, { key: t.key })).status, 404);
    const afterS = await scrape(s.client);
    const labels = { method: 'GET', route: '/v1/reservations/:reservation_id', status_code: '404' };
    assert.equal(metric(afterS, 'http_request_duration_seconds_count', labels) - metric(before, 'http_request_duration_seconds_count', labels), 2);
    // The raw id never becomes a label value (bounded cardinality).
    assert.ok(![...afterS.keys()].some((k) => k.includes('rsv_000')), 'no raw path in labels');
  });

  test('health and readiness answer without credentials on both path families', async () => {
    for (const p of ['/healthz', '/actuator/health/liveness']) {
      const r = await s.client.get(p);
      assert.equal(r.status, 200);
      assert.equal(r.body.status, 'UP');
    }
    for (const p of ['/readyz', '/actuator/health/readiness']) {
      const r = await s.client.get(p);
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { status: 'UP', store: 'sqlite' });
    }
  });
});

describe('domain counters', () => {
  test('reserve by decision and reason; dry-run denials; live denials; replays counted apart', async () => {
    const b = await scrape(s.client);
    const body = reserveBody(t.id, 100);
    const ok = await s.client.post('/v1/reservations', body, { key: t.key });
    assert.equal(ok.status, 200, show(ok));
    assert.equal((await s.client.post('/v1/reservations', body, { key: t.key })).status, 200); // replay
    assert.equal((await reserve(5_000_000)).status, 409); // live denial
    const dry = await reserve(5_000_000, { dry_run: true });
    assert.equal(dry.status, 200);
    assert.equal(dry.body.decision, 'DENY');
    const decide = await s.client.post('/v1/decide', { idempotency_key: idem(), subject: { tenant: t.id }, action: { kind: 'x', name: 'y' }, estimate: { unit: 'TOKENS', amount: 1 } }, { key: t.key });
    assert.equal(decide.status, 200, show(decide));
    const a = await scrape(s.client);
    const d = (name: string, labels: Record<string, string>) => metric(a, name, labels) - metric(b, name, labels);
    assert.equal(d('cycles_reservations_reserve_total', { decision: 'ALLOW', reason: 'OK', dry_run: 'false' }), 1);
    assert.equal(d('cycles_reservations_reserve_total', { decision: 'DENY', reason: 'BUDGET_EXCEEDED', dry_run: 'false' }), 1);
    assert.equal(d('cycles_reservations_reserve_total', { decision: 'DENY', reason: 'BUDGET_EXCEEDED', dry_run: 'true' }), 1);
    assert.equal(d('cycles_idempotent_replays_total', { operation: 'reserve' }), 1);
    assert.equal(d('cycles_decisions_total', { decision: 'ALLOW', reason: 'OK' }), 1);
    assert.equal(d('cycles_reservations_reserve_total', {}), 3, 'the replay is not a second decision');
  });

  test('auth and validation failures never reach the domain counters', async () => {
    const b = await scrape(s.client);
    assert.equal((await s.client.post('/v1/reservations', reserveBody(t.id, 1), { key: 'cyc_live_wrong' })).status, 401);
    assert.equal((await s.client.post('/v1/reservations', { nope: 1 }, { key: t.key })).status, 400);
    const a = await scrape(s.client);
    assert.equal(metric(a, 'cycles_reservations_reserve_total') - metric(b, 'cycles_reservations_reserve_total'), 0);
    assert.equal(metric(a, 'cycles_auth_failures_total') - metric(b, 'cycles_auth_failures_total'), 1);
  });

  test('commit, release, extend and events by outcome', async () => {
    const b = await scrape(s.client);
    const r1 = await reserve(10);
    const r2 = await reserve(10);
    const r3 = await reserve(10);
    for (const r of [r1, r2, r3]) assert.equal(r.status, 200, show(r));
    const path = (r: typeof r1, op: string) => `/v1/reservations/${r.body.reservation_id}/${op}`;
    const commit = { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 7 } };
    assert.equal((await s.client.post(path(r1, 'commit'), commit, { key: t.key })).status, 200);
    assert.equal((await s.client.post(path(r1, 'commit'), commit, { key: t.key })).status, 200); // replay
    assert.equal((await s.client.post(path(r1, 'commit'), { ...commit, idempotency_key: idem() }, { key: t.key })).status, 409); // finalized
    assert.equal((await s.client.post(path(r2, 'release'), { idempotency_key: idem() }, { admin: true })).status, 200);
    assert.equal((await s.client.post(path(r3, 'extend'), { idempotency_key: idem(), extend_by_ms: 1000 }, { key: t.key })).status, 200);
    const ev = await s.client.post('/v1/events', { idempotency_key: idem(), subject: { tenant: t.id }, action: { kind: 'x', name: 'y' }, actual: { unit: 'TOKENS', amount: 3 } }, { key: t.key });
    assert.equal(ev.status, 201, show(ev));
    const a = await scrape(s.client);
    const d = (name: string, labels: Record<string, string> = {}) => metric(a, name, labels) - metric(b, name, labels);
    assert.equal(d('cycles_reservations_commit_total', { outcome: 'OK' }), 1);
    assert.equal(d('cycles_reservations_commit_total', { outcome: 'RESERVATION_FINALIZED' }), 1);
    assert.equal(d('cycles_idempotent_replays_total', { operation: 'commit' }), 1);
    assert.equal(d('cycles_reservations_release_total', { outcome: 'OK', actor: 'admin_on_behalf_of' }), 1);
    assert.equal(d('cycles_reservations_extend_total', { outcome: 'OK' }), 1);
    assert.equal(d('cycles_events_total', { outcome: 'OK' }), 1);
    assert.equal(d('cycles_store_operation_duration_seconds_count', { operation: 'commit', outcome: 'ok' }), 2, 'store calls are timed (fresh + replay)');
  });

  test('debt incidents and over-limit scopes', async () => {
    const u = await provision(s.client, [{ at: '', allocated: 100, overdraft: 1_000 }]);
    const b = await scrape(s.client);
    const r = await s.client.post('/v1/reservations', reserveBody(u.id, 50, { overage_policy: 'ALLOW_WITH_OVERDRAFT' }), { key: u.key });
    assert.equal(r.status, 200, show(r));
    // 300 charged against 100 allocated: 200 of debt within the 1000 limit.
    const c = await s.client.post(`/v1/reservations/${r.body.reservation_id}/commit`, { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 300 } }, { key: u.key });
    assert.equal(c.status, 200, show(c));
    // Lowering the limit below the debt puts the scope over limit; a direct debit with a capped charge does too.
    const v = await provision(s.client, [{ at: '', allocated: 100 }]);
    const e = await s.client.post('/v1/events', { idempotency_key: idem(), subject: { tenant: v.id }, action: { kind: 'x', name: 'y' }, actual: { unit: 'TOKENS', amount: 500 } }, { key: v.key });
    assert.equal(e.status, 201, show(e));
    const a = await scrape(s.client);
    const d = (name: string, labels: Record<string, string> = {}) => metric(a, name, labels) - metric(b, name, labels);
    assert.equal(d('cycles_overdraft_incurred_total'), 1);
    assert.equal(d('cycles_domain_events_total', { event_type: 'budget.debt_incurred' }), 1);
    assert.ok(d('cycles_over_limit_entered_total') >= 1, 'the capped direct debit put a scope over limit');
    assert.ok(metric(a, 'cycles_scopes_over_limit') >= 1);
    assert.ok(metric(a, 'cycles_scopes_in_debt') >= 1);
  });

  test('expirations by the sweeper and the sweeper lag gauge', async () => {
    const b = await scrape(s.client);
    const r = await reserve(5, { ttl_ms: 1000, grace_period_ms: 0 });
    assert.equal(r.status, 200, show(r));
    const deadline = Date.now() + 10_000;
    let a = b;
    while (Date.now() < deadline) {
      await sleep(200);
      a = await scrape(s.client);
      if (metric(a, 'cycles_reservations_expired_total') > metric(b, 'cycles_reservations_expired_total')) break;
    }
    assert.equal(metric(a, 'cycles_reservations_expired_total') - metric(b, 'cycles_reservations_expired_total'), 1);
    assert.ok(metric(a, 'cycles_sweeper_runs_total', { outcome: 'ok' }) > 0);
    // The sweeper keeps up: nothing due waits longer than a few sweep intervals.
    assert.ok(metric(a, 'cycles_sweeper_lag_seconds') < 2, `lag ${metric(a, 'cycles_sweeper_lag_seconds')}`);
    assert.equal(metric(a, 'cycles_store_up'), 1);
  });
});

describe('webhook deliveries', () => {
  test('each delivery attempt is counted by outcome, with its duration', async () => {
    const received: string[] = [];
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        received.push(body);
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    const port = (receiver.address() as { port: number }).port;
    const w = await startOps({ ...NO_LIMITS, webhookAllowedHosts: '127.0.0.1', webhookPollMs: 50 } as Partial<Config>);
    try {
      const u = await provision(w.client, [{ at: '', allocated: 10 }]);
      const sub = await w.client.post(`/v1/admin/webhooks?tenant_id=${u.id}`, { url: `http://127.0.0.1:${port}/hook`, event_types: ['reservation.denied'] }, { admin: true });
      assert.equal(sub.status, 201, show(sub));
      const b = await scrape(w.client);
      const deny = await w.client.post('/v1/reservations', reserveBody(u.id, 1000, { dry_run: true }), { key: u.key });
      assert.equal(deny.body.decision, 'DENY', show(deny));
      const deadline = Date.now() + 10_000;
      let a = b;
      while (Date.now() < deadline) {
        a = await scrape(w.client);
        if (metric(a, 'cycles_webhook_deliveries_total', { outcome: 'delivered' }) > metric(b, 'cycles_webhook_deliveries_total', { outcome: 'delivered' })) break;
        await sleep(100);
      }
      assert.ok(received.length >= 1, 'the receiver got the event');
      assert.equal(metric(a, 'cycles_webhook_deliveries_total', { outcome: 'delivered' }) - metric(b, 'cycles_webhook_deliveries_total', { outcome: 'delivered' }), 1);
      assert.equal(metric(a, 'cycles_webhook_delivery_duration_seconds_count', { outcome: 'delivered' }) - metric(b, 'cycles_webhook_delivery_duration_seconds_count', { outcome: 'delivered' }), 1);
    } finally {
      await w.close();
      await new Promise<void>((r) => receiver.close(() => r()));
    }
  });
});

describe('METRICS_AUTH=admin', () => {
  test('requires the admin key as X-Admin-API-Key or Bearer; probes stay public', async () => {
    const m = await startOps({ ...NO_LIMITS, metricsAuth: 'admin' });
    try {
      for (const p of ['/metrics', '/actuator/prometheus']) {
        const anon = await m.client.get(p);
        assert.equal(anon.status, 401, show(anon));
        assert.equal(anon.body.error, 'UNAUTHORIZED');
        assert.equal((await m.client.get(p, { headers: { 'x-admin-api-key': 'wrong-key-0123456789' } })).status, 401);
        assert.equal((await m.client.get(p, { key: 'cyc_live_notadmin' })).status, 401);
        const withHeader = await m.client.get(p, { admin: true });
        assert.equal(withHeader.status, 200);
        assert.ok(parseMetrics(withHeader.text).size > 10);
        assert.equal((await m.client.get(p, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).status, 200);
      }
      assert.equal((await m.client.get('/healthz')).status, 200);
      assert.equal((await m.client.get('/readyz')).status, 200);
    } finally {
      await m.close();
    }
  });
});
