/**
 * Webhook delivery end to end: a real receiver on loopback, the in-process dispatcher, the
 * exact Event bytes signed, retries with the subscription's backoff, backlog after an outage,
 * no duplicates, the tenant boundary (live and replay), and the SSRF guard.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { verifySignature } from '../../src/events/signature.js';
import { startTestServer, waitFor, type Json, type TestServer } from '../helpers/harness.js';
import { decide, decideBody, expectStatus, newTenant } from '../helpers/runtime.js';
import { startReceiver, type Receiver } from './receiver.js';

let srv: TestServer;
let rx: Receiver;

before(async () => {
  rx = await startReceiver();
  srv = await startTestServer({ webhookAllowedHosts: '127.0.0.1', webhookPollMs: 20, webhookTimeoutMs: 400 });
});
after(async () => {
  await srv.close();
  await rx.close();
});

async function subscribe(body: Record<string, unknown>, tenant?: string): Promise<{ id: string; secret: string }> {
  const res = expectStatus(await srv.call('POST', `/v1/admin/webhooks${tenant ? `?tenant_id=${tenant}` : ''}`, { admin: true, body: { url: rx.url, ...body } }), 201);
  return { id: res.subscription.subscription_id, secret: res.signing_secret };
}

const forTenant = (tenant: string) => rx.received.filter((r) => (JSON.parse(r.body) as Json).tenant_id === tenant);

describe('webhook delivery', () => {
  test('delivers the exact event bytes, signed, with the protocol headers', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'] }, t.tenant);
    const traceId = 'cd'.repeat(16);
    await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50), { traceparent: `00-${traceId}-${'ef'.repeat(8)}-00` });
    const [got] = await waitFor(async () => (forTenant(t.tenant).length ? forTenant(t.tenant) : undefined), 5000);
    assert.ok(verifySignature(got!.body, got!.headers['x-cycles-signature'] as string, sub.secret), 'signature verifies');
    assert.equal(verifySignature(got!.body + ' ', got!.headers['x-cycles-signature'] as string, sub.secret), false, 'any change breaks it');
    assert.equal(verifySignature(got!.body, got!.headers['x-cycles-signature'] as string, 'whsec_wrong_secret_000000'), false);
    const event = JSON.parse(got!.body) as Json;
    assert.equal(got!.headers['x-cycles-event-id'], event.event_id);
    assert.equal(got!.headers['x-cycles-event-type'], 'reservation.denied');
    assert.equal(got!.headers['x-cycles-trace-id'], traceId);
    assert.match(got!.headers['traceparent'] as string, new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`), 'inbound flags are preserved');
    assert.equal(got!.headers['content-type'], 'application/json');
    // The body is byte for byte the stored event.
    const stored = await srv.call('GET', `/v1/admin/events/${event.event_id}`, { admin: true });
    assert.equal(got!.body, stored.text);
    const deliveries = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}/deliveries`, { admin: true }), 200).deliveries;
    assert.equal(deliveries[0].status, 'SUCCESS');
    assert.equal(deliveries[0].attempts, 1);
    assert.equal(deliveries[0].response_status, 200);
  });

  test('retries a 500 with the subscription backoff, then succeeds', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'], retry_policy: { max_retries: 3, initial_delay_ms: 150, backoff_multiplier: 2 } }, t.tenant);
    rx.respond = (r, _n) => ((JSON.parse(r.body) as Json).tenant_id === t.tenant && forTenant(t.tenant).length < 3 ? 500 : 200);
    try {
      await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
      const got = await waitFor(async () => (forTenant(t.tenant).length >= 3 ? forTenant(t.tenant) : undefined), 8000);
      const gap1 = got[1]!.at - got[0]!.at;
      const gap2 = got[2]!.at - got[1]!.at;
      assert.ok(gap1 >= 140, `first retry after >= 150 ms (was ${gap1})`);
      assert.ok(gap2 >= 290, `second retry after >= 300 ms (was ${gap2})`);
      assert.equal(new Set(got.map((r) => r.headers['x-cycles-event-id'])).size, 1, 'the same event each time');
      const d = await waitFor(async () => {
        const list = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}/deliveries`, { admin: true }), 200).deliveries;
        return list[0]?.status === 'SUCCESS' ? list[0] : undefined;
      });
      assert.equal(d.attempts, 3);
      const s = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}`, { admin: true }), 200);
      assert.equal(s.consecutive_failures, 0);
    } finally {
      rx.respond = () => 200;
    }
  });

  test('a receiver that times out is retried; exhausted retries fail the delivery and count once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'], retry_policy: { max_retries: 1, initial_delay_ms: 100 } }, t.tenant);
    rx.respond = (r) => ((JSON.parse(r.body) as Json).tenant_id === t.tenant ? 'hang' : 200);
    try {
      await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
      const d = await waitFor(async () => {
        const list = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}/deliveries`, { admin: true }), 200).deliveries;
        return list[0]?.status === 'FAILED' ? list[0] : undefined;
      }, 8000);
      assert.equal(d.attempts, 2, 'first attempt + one retry');
      assert.match(d.error_message, /timed out/);
      assert.equal(forTenant(t.tenant).length, 2);
      const s = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}`, { admin: true }), 200);
      assert.equal(s.consecutive_failures, 1, 'one failed delivery, not one per attempt');
      assert.equal(s.status, 'ACTIVE');
      const failed = expectStatus(await srv.call('GET', '/v1/admin/events?event_type=system.webhook_delivery_failed&limit=100', { admin: true }), 200).events as Json[];
      assert.ok(failed.some((e) => e.data.details.subscription_id === sub.id));
    } finally {
      rx.respond = () => 200;
    }
  });

  test('a subscription is disabled once its consecutive failures exceed the threshold', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'], retry_policy: { max_retries: 0 }, disable_after_failures: 2 }, t.tenant);
    rx.respond = (r) => ((JSON.parse(r.body) as Json).tenant_id === t.tenant ? 503 : 200);
    try {
      for (let i = 0; i < 2; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
      await waitFor(async () => (forTenant(t.tenant).length >= 2 ? true : undefined));
      await new Promise((r) => setTimeout(r, 200));
      let s = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}`, { admin: true }), 200);
      assert.equal(s.consecutive_failures, 2);
      assert.equal(s.status, 'ACTIVE', 'equal to the threshold is not yet over it');
      await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
      s = await waitFor(async () => {
        const x = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}`, { admin: true }), 200);
        return x.status === 'DISABLED' ? x : undefined;
      });
      assert.equal(s.consecutive_failures, 3);
      const disabled = expectStatus(await srv.call('GET', `/v1/admin/events?event_type=webhook.disabled&tenant_id=${t.tenant}`, { admin: true }), 200).events;
      assert.equal(disabled.length, 1);
      assert.equal(disabled[0].data.disable_reason, 'consecutive_failures_exceeded_threshold');
      // Re-enabling resets the failure count.
      const resumed = expectStatus(await srv.call('PATCH', `/v1/admin/webhooks/${sub.id}`, { admin: true, body: { status: 'ACTIVE' } }), 200);
      assert.equal(resumed.status, 'ACTIVE');
      assert.equal(resumed.consecutive_failures, 0);
    } finally {
      rx.respond = () => 200;
    }
  });

  test('a receiver that comes back gets the backlog, each event once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    await subscribe({ event_types: ['reservation.denied'], retry_policy: { max_retries: 10, initial_delay_ms: 100, backoff_multiplier: 1.5, max_delay_ms: 1000 } }, t.tenant);
    await rx.close();
    for (let i = 0; i < 5; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
    await new Promise((r) => setTimeout(r, 400));
    await rx.reopen();
    const got = await waitFor(async () => (forTenant(t.tenant).length >= 5 ? forTenant(t.tenant) : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const ids = forTenant(t.tenant).map((r) => r.headers['x-cycles-event-id']);
    assert.equal(ids.length, 5, 'no event delivered twice');
    assert.equal(new Set(ids).size, 5);
    assert.equal(got.length, 5);
  });

  test('many events to a healthy receiver: each delivered exactly once', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    await subscribe({ event_types: ['reservation.denied'] }, t.tenant);
    await Promise.all(Array.from({ length: 40 }, () => decide(srv, t.key, decideBody({ tenant: t.tenant }, 50))));
    await waitFor(async () => (forTenant(t.tenant).length >= 40 ? true : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const ids = forTenant(t.tenant).map((r) => r.headers['x-cycles-event-id']);
    assert.equal(ids.length, 40);
    assert.equal(new Set(ids).size, 40);
  });
});

describe('tenant boundary', () => {
  test('tenant subscriptions cannot select admin-only events, on any write path', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }], { permissions: ['webhooks:read', 'webhooks:write'] });
    for (const body of [{ event_types: ['api_key.created'] }, { event_types: ['budget.created'], event_categories: ['policy'] }, { event_types: ['system.webhook_test'] }]) {
      const viaAdmin = await srv.call('POST', `/v1/admin/webhooks?tenant_id=${t.tenant}`, { admin: true, body: { url: rx.url, ...body } });
      assert.equal(viaAdmin.status, 400, JSON.stringify(body));
      const viaTenant = await srv.call('POST', '/v1/webhooks', { apiKey: t.key, body: { url: rx.url, ...body } });
      assert.equal(viaTenant.status, 400, JSON.stringify(body));
    }
    const sub = expectStatus(await srv.call('POST', '/v1/webhooks', { apiKey: t.key, body: { url: rx.url, event_types: ['budget.created'] } }), 201);
    const id = sub.subscription.subscription_id;
    assert.equal(sub.subscription.tenant_id, t.tenant);
    // Update validates the effective selectors with the stored owner.
    assert.equal((await srv.call('PATCH', `/v1/admin/webhooks/${id}`, { admin: true, body: { event_categories: ['webhook'] } })).status, 400);
    assert.equal((await srv.call('PATCH', `/v1/webhooks/${id}`, { apiKey: t.key, body: { event_types: [] } })).status, 400, 'match-all is unreachable');
    const cleared = expectStatus(await srv.call('PATCH', `/v1/webhooks/${id}`, { apiKey: t.key, body: { event_types: [], event_categories: ['budget'] } }), 200);
    assert.deepEqual(cleared.event_types, []);
    // Secret never shown again; another tenant gets 404.
    const got = expectStatus(await srv.call('GET', `/v1/webhooks/${id}`, { apiKey: t.key }), 200);
    assert.equal(got.signing_secret, undefined);
    const other = await newTenant(srv, [], { permissions: ['webhooks:read'] });
    const foreign = await srv.call('GET', `/v1/webhooks/${id}`, { apiKey: other.key });
    assert.equal(foreign.status, 404);
    assert.equal(foreign.body.error, 'WEBHOOK_NOT_FOUND');
  });

  test('a tenant subscription never receives admin-only events, live or replayed', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_categories: ['budget', 'reservation', 'tenant'], event_types: ['reservation.denied'] }, t.tenant);
    // Admin-only events about this tenant: key creation; plus a tenant-visible one as a control.
    await srv.createApiKey(t.tenant);
    await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
    await waitFor(async () => (forTenant(t.tenant).some((r) => r.headers['x-cycles-event-type'] === 'reservation.denied') ? true : undefined));
    await new Promise((r) => setTimeout(r, 200));
    const types = () => forTenant(t.tenant).map((r) => r.headers['x-cycles-event-type'] as string);
    assert.ok(types().every((ty) => ['budget', 'reservation', 'tenant'].includes(ty.split('.')[0]!)), types().join());
    const admin = expectStatus(await srv.call('GET', `/v1/admin/events?tenant_id=${t.tenant}&category=webhook`, { admin: true }), 200).events;
    assert.ok(admin.length >= 1, 'admin-only events exist for this tenant');
    const before = forTenant(t.tenant).length;
    const replay = expectStatus(await srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: { event_types: ['webhook.created', 'api_key.created'] } }), 202);
    assert.equal(replay.events_queued, 0);
    const all = expectStatus(await srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: {} }), 202);
    assert.ok(all.events_queued >= 1);
    await waitFor(async () => (forTenant(t.tenant).length >= before + all.events_queued ? true : undefined));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(types().every((ty) => ['budget', 'reservation', 'tenant'].includes(ty.split('.')[0]!)), types().join());
  });

  test('replay refuses windows larger than max_events', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'] }, t.tenant);
    for (let i = 0; i < 3; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
    const res = await srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: { max_events: 2 } });
    assert.equal(res.status, 400);
    assert.equal((await srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: { max_events: 0 } })).status, 400);
  });

  test('one replay at a time per subscription: 409 REPLAY_IN_PROGRESS until its deliveries finish', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['reservation.denied'], retry_policy: { max_retries: 5, initial_delay_ms: 200, backoff_multiplier: 1 } }, t.tenant);
    for (let i = 0; i < 2; i++) await decide(srv, t.key, decideBody({ tenant: t.tenant }, 50));
    // Live deliveries first, so that only the replay's deliveries are pending below.
    await waitFor(async () => (forTenant(t.tenant).length >= 2 ? true : undefined));
    let failing = true;
    rx.respond = (r) => ((JSON.parse(r.body) as Json).tenant_id === t.tenant && failing ? 500 : 200);
    try {
      const replay = () => srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: {} });
      // Two at once: exactly one is accepted.
      const [a, b] = await Promise.all([replay(), replay()]);
      assert.deepEqual([a.status, b.status].sort(), [202, 409], `${a.text} / ${b.text}`);
      const accepted = a.status === 202 ? a : b;
      const refused = a.status === 202 ? b : a;
      assert.equal(accepted.body.events_queued, 2);
      assert.equal(refused.body.error, 'REPLAY_IN_PROGRESS');
      assert.match(refused.body.message, new RegExp(sub.id));
      // Still retrying against a failing endpoint: still in progress, even for an empty window.
      await waitFor(async () => (forTenant(t.tenant).length >= 4 ? true : undefined));
      const again = await srv.call('POST', `/v1/admin/webhooks/${sub.id}/replay`, { admin: true, body: { event_types: ['budget.created'] } });
      assert.equal(again.status, 409, again.text);
      assert.equal(again.body.error, 'REPLAY_IN_PROGRESS');
      // Once the endpoint recovers and the replay's deliveries succeed, the next replay is accepted.
      failing = false;
      await waitFor(async () => {
        const list = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${sub.id}/deliveries`, { admin: true }), 200).deliveries as Json[];
        return list.length >= 4 && list.every((d) => d.status === 'SUCCESS') ? true : undefined;
      }, 8000);
      const next = await replay();
      assert.equal(next.status, 202, next.text);
      assert.equal(next.body.events_queued, 2);
    } finally {
      rx.respond = () => 200;
    }
  });

  test('the test probe delivers a signed synthetic event and changes nothing', async () => {
    const t = await newTenant(srv, [{ at: '', allocated: 10 }]);
    const sub = await subscribe({ event_types: ['budget.created'] }, t.tenant);
    const res = expectStatus(await srv.call('POST', `/v1/admin/webhooks/${sub.id}/test`, { admin: true }), 200);
    assert.equal(res.success, true);
    assert.equal(res.response_status, 200);
    const got = rx.received.find((r) => r.headers['x-cycles-event-id'] === res.event_id);
    assert.ok(got);
    assert.ok(verifySignature(got!.body, got!.headers['x-cycles-signature'] as string, sub.secret));
    assert.equal(JSON.parse(got!.body).event_type, 'system.webhook_test');
  });
});

describe('SSRF guard', () => {
  let strict: TestServer;
  before(async () => {
    strict = await startTestServer({ webhookPollMs: 20 });
  });
  after(() => strict.close());

  test('private, loopback, link-local and metadata targets are refused at write time', async () => {
    for (const url of ['http://127.0.0.1:9/x', 'https://127.0.0.1/x', 'https://10.1.2.3/x', 'https://192.168.1.1/x', 'https://169.254.169.254/latest/meta-data', 'https://[::1]/x', 'https://[::ffff:127.0.0.1]/x', 'https://localhost/x', 'https://100.64.0.1/x', 'ftp://example.com/x', 'not a url', 'https://user:pw@example.com/x']) {
      const res = await strict.call('POST', '/v1/admin/webhooks', { admin: true, body: { url, event_types: ['budget.created'] } });
      assert.equal(res.status, 400, url);
      assert.ok(['WEBHOOK_URL_INVALID', 'INVALID_REQUEST'].includes(res.body.error), url);
    }
  });

  test('a stored URL that is no longer allowed is refused again at send time, without retries', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { startServer } = await import('../../src/server.js');
    const dataDir = mkdtempSync(join(tmpdir(), 'cycles-ssrf-'));
    const admin = { 'x-admin-api-key': 'test-admin-key-0123456789', 'content-type': 'application/json' };
    const base = { port: 0, host: '127.0.0.1', dataDir, adminApiKey: 'test-admin-key-0123456789', logLevel: 'silent', webhookPollMs: 20 };
    const tenant = `ssrf-${Date.now().toString(36)}`;
    // A subscription created while loopback was allow-listed (API only: nothing is sent yet)...
    const loose = await startServer({ config: { ...base, webhookAllowedHosts: '127.0.0.1', role: 'api' }, logger: false });
    const post = (url: string, path: string, body: unknown) => fetch(url + path, { method: 'POST', headers: admin, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, body: (await r.json()) as Json }));
    assert.equal((await post(loose.url, '/v1/admin/tenants', { tenant_id: tenant, name: 'ssrf' })).status, 201);
    const created = await post(loose.url, `/v1/admin/webhooks?tenant_id=${tenant}`, { url: rx.url, event_types: ['reservation.denied'] });
    assert.equal(created.status, 201);
    assert.equal((await post(loose.url, '/v1/admin/budgets', { tenant_id: tenant, scope: `tenant:${tenant}`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 5 } })).status, 201);
    const key = (await post(loose.url, '/v1/admin/api-keys', { tenant_id: tenant, name: 'k' })).body.key_secret as string;
    const denied = await fetch(loose.url + '/v1/decide', {
      method: 'POST',
      headers: { 'x-cycles-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(decideBody({ tenant }, 50)),
    });
    assert.equal(((await denied.json()) as Json).decision, 'DENY');
    await loose.close();
    // ...is delivered by a dispatcher whose policy no longer allows it.
    const strictOnSameStore = await startServer({ config: base, logger: false });
    try {
      const d = await waitFor(async () => {
        const res = await fetch(`${strictOnSameStore.url}/v1/admin/webhooks/${created.body.subscription.subscription_id}/deliveries`, { headers: admin });
        const body = (await res.json()) as Json;
        assert.equal(res.status, 200, JSON.stringify(body));
        return body.deliveries[0]?.status === 'FAILED' ? body.deliveries[0] : undefined;
      }, 5000);
      assert.equal(d.attempts, 1, 'not retried');
      assert.match(d.error_message, /SSRF guard/);
      assert.equal(forTenant(tenant).length, 0, 'nothing reached the receiver');
    } finally {
      await strictOnSameStore.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
