/**
 * Server-side throttling (optional in v0): 429 LIMIT_EXCEEDED with Retry-After in delta-seconds
 * and X-RateLimit-Reset in Unix seconds, never used for budget exhaustion and without ledger
 * effects. Spec: ERROR SEMANTICS (429), components.headers Retry-After / X-RateLimit-Reset.
 * The server runs with a per-key limit of 20 and an auth-failure limit of 3 per window.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type CallResult, type TestServer } from '../helpers/harness.js';
import { amounts, balanceOf, expectError, expectStatus, newTenant, qs, reserve, reserveBody, type TenantCtx } from '../helpers/runtime.js';

const PER_KEY = 20;
let srv: TestServer;
before(async () => {
  srv = await startTestServer({ rateLimitPerKey: PER_KEY, rateLimitWindowMs: 60_000, authFailureLimit: 3 });
});
after(async () => {
  await srv?.close();
});

function expectThrottled(res: CallResult): void {
  expectError(res, 429, 'LIMIT_EXCEEDED');
  const retryAfter = res.headers.get('retry-after');
  const reset = res.headers.get('x-ratelimit-reset');
  assert.match(retryAfter ?? '', /^\d+$/, 'Retry-After is delta-seconds only');
  assert.ok(Number(retryAfter) <= 60, `Retry-After ${retryAfter} within the window`);
  assert.match(reset ?? '', /^\d+$/, 'X-RateLimit-Reset is Unix seconds');
  const nowS = Date.now() / 1000;
  assert.ok(Number(reset) >= Math.floor(nowS) && Number(reset) <= nowS + 61, `X-RateLimit-Reset ${reset}`);
}

test('per-key limit: the request past the limit is 429 LIMIT_EXCEEDED; other keys are unaffected; no ledger effect', async () => {
  const t: TenantCtx = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const other = await srv.createApiKey(t.tenant);
  const path = `/v1/balances${qs({ tenant: t.tenant })}`;
  for (let i = 0; i < PER_KEY; i++) expectStatus(await srv.call('GET', path, { apiKey: t.key }), 200);
  expectThrottled(await srv.call('GET', path, { apiKey: t.key }));
  expectThrottled(await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 10)));
  const bal = amounts(await balanceOf(srv, { ...t, key: other }, t.scope()));
  assert.deepEqual([bal.reserved, bal.remaining], [0, 100], 'a throttled reserve touches no ledger');
  expectStatus(await reserve(srv, other, reserveBody({ tenant: t.tenant }, 10)), 200);
});

test('repeated authentication failures throttle the client address with a well-formed 429', async () => {
  const t = await newTenant(srv, [{ at: '', allocated: 100 }]);
  for (let i = 0; i < 3; i++) {
    expectError(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant })}`, { apiKey: `cyc_live_bogus${i}xxxxxxxxxxxxxxxxxxxxxxxx` }), 401, 'UNAUTHORIZED');
  }
  expectThrottled(await srv.call('GET', `/v1/balances${qs({ tenant: t.tenant })}`, { apiKey: t.key }));
});
