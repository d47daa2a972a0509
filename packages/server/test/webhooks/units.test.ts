/** The security-critical pieces of webhooks, unit by unit: address blocking, matching, sealing, signing. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { isTenantAccessible, scopeMatches, subscriptionMatches } from '../../src/events/matching.js';
import { SecretBox, newSigningSecret } from '../../src/events/secrets.js';
import { sign, verifySignature } from '../../src/events/signature.js';
import { addressAllowed, parseAllowList, validateWebhookUrl } from '../../src/events/ssrf.js';
import { retryDelay } from '../../src/events/types.js';

describe('SSRF address policy', () => {
  const none = parseAllowList('');
  test('blocks loopback, private, link-local, CGNAT, metadata, multicast and their IPv6/mapped forms', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '10.0.0.1', '172.16.5.5', '172.31.255.255', '192.168.0.1', '169.254.169.254', '100.64.1.1', '0.0.0.0', '224.0.0.1', '::1', '::', 'fd12::1', 'fe80::1', '::ffff:127.0.0.1', '::ffff:10.1.1.1']) {
      assert.equal(addressAllowed(a, none), false, a);
    }
  });
  test('admits public addresses', () => {
    for (const a of ['93.184.216.34', '8.8.8.8', '172.32.0.1', '2606:4700:4700::1111']) assert.equal(addressAllowed(a, none), true, a);
  });
  test('the allow-list admits listed CIDRs and addresses only', () => {
    const p = parseAllowList('10.20.0.0/16, 127.0.0.1, hooks.internal');
    assert.equal(addressAllowed('10.20.3.4', p), true);
    assert.equal(addressAllowed('10.21.3.4', p), false);
    assert.equal(addressAllowed('127.0.0.1', p), true);
    assert.equal(addressAllowed('127.0.0.2', p), false);
    assert.ok(p.allowedHosts.has('hooks.internal'));
    assert.throws(() => parseAllowList('10.0.0.0/abc'), /not a valid CIDR/);
  });
  test('write-time validation: scheme, credentials, literal blocked hosts, allow-listed http', async () => {
    await assert.rejects(validateWebhookUrl('http://93.184.216.34/x', none), /https is required/);
    await assert.rejects(validateWebhookUrl('https://u:p@93.184.216.34/x', none), /credentials/);
    await assert.rejects(validateWebhookUrl('https://[::ffff:169.254.169.254]/x', none), /blocked address/);
    await assert.doesNotReject(validateWebhookUrl('https://93.184.216.34/x', none));
    await assert.doesNotReject(validateWebhookUrl('http://127.0.0.1:9000/x', parseAllowList('127.0.0.1')));
  });
});

describe('subscription matching', () => {
  const base = { tenant_id: 'acme', status: 'ACTIVE', event_types: ['budget.exhausted'], event_categories: [] as string[] };
  const ev = { event_type: 'budget.exhausted', category: 'budget', tenant_id: 'acme', scope: 'tenant:acme/workspace:prod' };
  test('type or category selects; inactive never matches; other tenants never match', () => {
    assert.equal(subscriptionMatches(base, ev), true);
    assert.equal(subscriptionMatches({ ...base, event_types: [], event_categories: ['budget'] }, ev), true);
    assert.equal(subscriptionMatches({ ...base, status: 'PAUSED' }, ev), false);
    assert.equal(subscriptionMatches(base, { ...ev, tenant_id: 'other' }), false);
  });
  test('a tenant-owned subscription never receives admin-only events, even if it selects them', () => {
    const rogue = { ...base, event_types: ['api_key.created'], event_categories: ['webhook', 'system'] };
    for (const e of [
      { event_type: 'api_key.created', category: 'api_key', tenant_id: 'acme' },
      { event_type: 'webhook.disabled', category: 'webhook', tenant_id: 'acme' },
      { event_type: 'system.webhook_delivery_failed', category: 'system', tenant_id: 'acme' },
      { event_type: 'budget.exhausted', category: 'system', tenant_id: 'acme' },
    ]) {
      assert.equal(subscriptionMatches(rogue, e), false, e.event_type);
    }
    assert.equal(isTenantAccessible('reservation.expired', 'reservation'), true);
    assert.equal(isTenantAccessible('policy.created', 'budget'), false);
  });
  test('system subscriptions receive any tenant, admin-only included', () => {
    const sys = { ...base, tenant_id: '__system__', event_types: ['api_key.created'] };
    assert.equal(subscriptionMatches(sys, { event_type: 'api_key.created', category: 'api_key', tenant_id: 'acme' }), true);
  });
  test('scope filters', () => {
    assert.equal(scopeMatches(undefined, undefined), true);
    assert.equal(scopeMatches('*', undefined), false);
    assert.equal(scopeMatches('*', 'tenant:a'), true);
    assert.equal(scopeMatches('tenant:a/*', 'tenant:a/workspace:w'), true);
    assert.equal(scopeMatches('tenant:a/*', 'tenant:a'), false);
    assert.equal(scopeMatches('tenant:a/*', 'tenant:ab/workspace:w'), false);
    assert.equal(scopeMatches('tenant:a', 'tenant:a'), true);
    assert.equal(scopeMatches('tenant:a', 'tenant:A'), false);
  });
});

describe('secrets at rest', () => {
  const box = new SecretBox(randomBytes(32));
  test('seal/open round-trips and is bound to its subscription', () => {
    const sealed = box.seal('whsec_abc', 'secret:whsub_1');
    assert.notEqual(sealed, 'whsec_abc');
    assert.ok(!sealed.includes('whsec_abc'));
    assert.equal(box.open(sealed, 'secret:whsub_1'), 'whsec_abc');
    assert.throws(() => box.open(sealed, 'secret:whsub_2'), 'a copied ciphertext does not open elsewhere');
    assert.throws(() => new SecretBox(randomBytes(32)).open(sealed, 'secret:whsub_1'), 'another key cannot open it');
    assert.notEqual(box.seal('x', 'c'), box.seal('x', 'c'), 'fresh IV every time');
  });
  test('generated secrets are long and distinct', () => {
    const a = newSigningSecret();
    assert.match(a, /^whsec_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, newSigningSecret());
  });
});

describe('signatures and backoff', () => {
  test('sign/verify over exact bytes, constant-time shape checks', () => {
    const body = '{"event_id":"evt_1"}';
    const h = sign(body, 'whsec_secret');
    assert.match(h, /^sha256=[0-9a-f]{64}$/);
    assert.equal(verifySignature(body, h, 'whsec_secret'), true);
    assert.equal(verifySignature(Buffer.from(body), h, 'whsec_secret'), true);
    assert.equal(verifySignature(body, h.toUpperCase(), 'whsec_secret'), false);
    assert.equal(verifySignature(body, 'sha256=abc', 'whsec_secret'), false);
    assert.equal(verifySignature(body, undefined, 'whsec_secret'), false);
    assert.equal(verifySignature(body, h, 'whsec_other'), false);
  });
  test('retry delays follow min(initial * multiplier^(n-1), max)', () => {
    const p = { max_retries: 5, initial_delay_ms: 1000, backoff_multiplier: 2, max_delay_ms: 5000 };
    assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelay(p, n)), [1000, 2000, 4000, 5000, 5000]);
  });
});
