/**
 * The webhook security configuration (GET/PUT /v1/admin/config/webhook-security): defaults,
 * replacement, validation, and its effect on the very next webhook create and update (blocked
 * ranges, allowed URL patterns, plain http), while existing subscriptions are left alone.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BlockList } from 'node:net';
import { addressAllowed, DEFAULT_BLOCKED_CIDRS, parseAllowList, urlPatternOf } from '../../src/events/ssrf.js';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import { expectStatus } from '../helpers/runtime.js';

const PATH = '/v1/admin/config/webhook-security';
let srv: TestServer;

before(async () => {
  srv = await startTestServer({ webhookAllowedHosts: '127.0.0.1' });
});
after(async () => {
  await srv.close();
});

const create = (url: string) => srv.call('POST', '/v1/admin/webhooks', { admin: true, body: { url, event_types: ['budget.created'] } });

describe('webhook security configuration', () => {
  test('defaults: the built-in blocked ranges (a superset of the protocol default), no patterns, no plain http', async () => {
    const c = expectStatus(await srv.call('GET', PATH, { admin: true }), 200);
    assert.deepEqual(c.blocked_cidr_ranges, [...DEFAULT_BLOCKED_CIDRS]);
    for (const cidr of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.0/8', '169.254.0.0/16', '::1/128', 'fc00::/7']) {
      assert.ok(c.blocked_cidr_ranges.includes(cidr), cidr);
    }
    assert.deepEqual(c.allowed_url_patterns, []);
    assert.equal(c.allow_http, false);
  });

  test('admin only; bad bodies are 400s naming the problem and change nothing', async () => {
    assert.equal((await srv.call('GET', PATH)).status, 401);
    assert.equal((await srv.call('PUT', PATH, { body: {} })).status, 401);
    const before = expectStatus(await srv.call('GET', PATH, { admin: true }), 200);
    const cases: Array<[unknown, RegExp]> = [
      [{ blocked_cidr_ranges: ['10.0.0.0/33'] }, /10\.0\.0\.0\/33/],
      [{ blocked_cidr_ranges: ['not-a-cidr'] }, /not-a-cidr/],
      [{ blocked_cidr_ranges: ['10.0.0.1'] }, /CIDR/],
      [{ allowed_url_patterns: ['*.example.com'] }, /allowed_url_patterns/],
      [{ allow_http: 'yes' }, /allow_http/],
      [{ blocked: [] }, /blocked/],
    ];
    for (const [body, message] of cases) {
      const r = await srv.call('PUT', PATH, { admin: true, body });
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.body.error, 'INVALID_REQUEST');
      assert.match(r.body.message, message);
    }
    assert.deepEqual(expectStatus(await srv.call('GET', PATH, { admin: true }), 200), before);
  });

  test('blocked ranges, URL patterns and allow_http apply to the next create and update; a PUT replaces the whole configuration', async () => {
    // An address outside every default range is accepted (https, IP literal: no DNS involved).
    const ok = expectStatus(await create('https://203.0.113.7/hooks'), 201);
    const id = ok.subscription.subscription_id as string;

    const blocked = expectStatus(await srv.call('PUT', PATH, { admin: true, body: { blocked_cidr_ranges: [...DEFAULT_BLOCKED_CIDRS, '203.0.113.0/24'] } }), 200);
    assert.ok(blocked.blocked_cidr_ranges.includes('203.0.113.0/24'));
    assert.equal(blocked.allow_http, false);
    const refused = await create('https://203.0.113.8/hooks');
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error, 'WEBHOOK_URL_INVALID');
    assert.match(refused.body.message, /blocked address \(203\.0\.113\.8\)/);
    const moved = await srv.call('PATCH', `/v1/admin/webhooks/${id}`, { admin: true, body: { url: 'https://203.0.113.9/hooks' } });
    assert.equal(moved.status, 400, moved.text);
    // Not retroactive: the existing subscription keeps its URL and status.
    const kept = expectStatus(await srv.call('GET', `/v1/admin/webhooks/${id}`, { admin: true }), 200);
    assert.equal(kept.url, 'https://203.0.113.7/hooks');
    assert.equal(kept.status, 'ACTIVE');

    // Patterns: only matching URLs; a PUT without blocked_cidr_ranges restores the default ranges.
    const patterned = expectStatus(await srv.call('PUT', PATH, { admin: true, body: { allowed_url_patterns: ['https://203.0.113.*/hooks/*'] } }), 200);
    assert.deepEqual(patterned.blocked_cidr_ranges, [...DEFAULT_BLOCKED_CIDRS]);
    expectStatus(await create('https://203.0.113.10/hooks/a'), 201);
    const off = await create('https://198.51.100.1/hooks/a');
    assert.equal(off.status, 400, off.text);
    assert.match(off.body.message, /allowed URL patterns/);

    // Plain http: refused until allowed.
    expectStatus(await srv.call('PUT', PATH, { admin: true, body: {} }), 200);
    const http = await create('http://203.0.113.11/hooks');
    assert.equal(http.status, 400);
    assert.match(http.body.message, /https is required/);
    const allowed = expectStatus(await srv.call('PUT', PATH, { admin: true, body: { allow_http: true } }), 200);
    assert.equal(allowed.allow_http, true);
    expectStatus(await create('http://203.0.113.11/hooks'), 201);
    assert.deepEqual(expectStatus(await srv.call('GET', PATH, { admin: true }), 200), allowed);

    // Back to the defaults for the other tests of this server.
    expectStatus(await srv.call('PUT', PATH, { admin: true, body: {} }), 200);
  });

  test('the operator allow-list (WEBHOOK_ALLOWED_HOSTS) still admits its hosts inside blocked ranges', async () => {
    expectStatus(await srv.call('PUT', PATH, { admin: true, body: { blocked_cidr_ranges: ['127.0.0.0/8'], allow_http: true } }), 200);
    try {
      expectStatus(await create('http://127.0.0.1:9/hooks'), 201);
      assert.equal((await create('http://127.0.0.2:9/hooks')).status, 400);
    } finally {
      expectStatus(await srv.call('PUT', PATH, { admin: true, body: {} }), 200);
    }
  });
});

describe('URL patterns and ranges', () => {
  test('a * in the host never crosses into the path, query or credentials', () => {
    const re = urlPatternOf('https://*.example.com/*');
    assert.ok(re.test('https://hooks.example.com/'));
    assert.ok(re.test('https://a.b.example.com/x/y?z=1'));
    assert.ok(!re.test('https://evil.test/?.example.com/'));
    assert.ok(!re.test('https://evil.test/.example.com/'));
    assert.ok(!re.test('https://evil.test#.example.com/'));
    assert.ok(!re.test('http://hooks.example.com/'));
    assert.ok(urlPatternOf('https://hooks.example.com:*/*').test('https://hooks.example.com:8443/in'));
    assert.ok(!urlPatternOf('https://hooks.example.com/in').test('https://hooks.example.com/in/more'));
  });

  test('a policy with its own blocked list judges addresses by it', () => {
    const base = parseAllowList('');
    const custom = new BlockList();
    custom.addSubnet('203.0.113.0', 24, 'ipv4');
    assert.equal(addressAllowed('203.0.113.5', { ...base, blocked: custom }), false);
    assert.equal(addressAllowed('10.1.2.3', { ...base, blocked: custom }), true, 'only the configured ranges are blocked');
    assert.equal(addressAllowed('10.1.2.3', base), false, 'the built-in ranges by default');
  });
});
