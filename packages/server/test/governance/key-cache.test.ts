/**
 * The API key cache (security/key-cache.ts, API_KEY_CACHE_TTL_MS): unit rules with an injected
 * clock, then two servers sharing one store, each with its own cache as two processes would
 * have: a revocation or permission change is refused at once by the server that made it and
 * within the TTL by the other.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApiKeyCache } from '../../src/security/key-cache.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { ApiKeyRecord } from '../../src/store/types.js';

const record = (id: string, status: ApiKeyRecord['status'] = 'ACTIVE'): ApiKeyRecord => ({
  key_id: id,
  tenant_id: 't',
  key_prefix: 'cyc_live_xxxxx',
  key_hash: `h_${id}`,
  name: id,
  permissions: ['balances:read'],
  scope_filter: [],
  status,
  created_at: 0,
  expires_at: Number.MAX_SAFE_INTEGER,
});

describe('ApiKeyCache', () => {
  test('hits while fresh, reloads after the TTL, never caches a miss', async () => {
    let now = 1000;
    const cache = new ApiKeyCache({ ttlMs: 100, clock: () => now });
    const db = new Map([['h1', record('k1')]]);
    let loads = 0;
    const load = async (h: string) => {
      loads++;
      return db.get(h);
    };
    assert.equal((await cache.lookup('h1', load))?.key_id, 'k1');
    assert.equal((await cache.lookup('h1', load))?.key_id, 'k1');
    assert.equal(loads, 1);
    db.set('h1', record('k1', 'REVOKED'));
    now += 99;
    assert.equal((await cache.lookup('h1', load))?.status, 'ACTIVE', 'within the TTL the entry may be stale');
    now += 1;
    assert.equal((await cache.lookup('h1', load))?.status, 'REVOKED', 'at the TTL it is read again');
    assert.equal(loads, 2);
    assert.equal(await cache.lookup('nope', load), undefined);
    assert.equal(await cache.lookup('nope', load), undefined);
    assert.equal(loads, 4, 'unknown hashes go to the store every time');
  });

  test('invalidate forgets everything, and a lookup in flight across it is not remembered', async () => {
    const cache = new ApiKeyCache({ ttlMs: 60_000 });
    let loads = 0;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const slow = async () => {
      loads++;
      await gate;
      return record('k1');
    };
    const pending = cache.lookup('h1', slow);
    cache.invalidate();
    release();
    assert.equal((await pending)?.key_id, 'k1');
    assert.equal(cache.size, 0, 'read before the invalidation: not kept');
    await cache.lookup('h1', slow);
    assert.equal(cache.size, 1);
    cache.invalidate();
    assert.equal(cache.size, 0);
    await cache.lookup('h1', slow);
    assert.equal(loads, 3);
  });

  test('bounded: the oldest entry goes first', async () => {
    const cache = new ApiKeyCache({ ttlMs: 60_000, maxEntries: 3 });
    let loads = 0;
    const load = async (h: string) => {
      loads++;
      return record(h);
    };
    for (const h of ['a', 'b', 'c', 'd']) await cache.lookup(h, load);
    assert.equal(cache.size, 3);
    await cache.lookup('b', load);
    assert.equal(loads, 4);
    await cache.lookup('a', load);
    assert.equal(loads, 5, 'a was evicted');
  });
});

describe('two servers on one store', () => {
  const TTL = 400;
  const ADMIN = 'test-admin-key-0123456789';
  let dir: string;
  let a: RunningServer;
  let b: RunningServer;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cycles-keycache-'));
    const config = { port: 0, host: '127.0.0.1', store: 'sqlite' as const, dataDir: dir, adminApiKey: ADMIN, logLevel: 'silent', apiKeyCacheTtlMs: TTL };
    a = await startServer({ config, logger: false });
    b = await startServer({ config: { ...config, role: 'api' as const }, logger: false });
  });
  after(async () => {
    await b?.close();
    await a?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const call = async (srv: RunningServer, method: string, url: string, headers: Record<string, string>, body?: unknown) => {
    const res = await fetch(srv.url + url, {
      method,
      headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const admin = { 'x-admin-api-key': ADMIN };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  test('revocation: refused at once where it was made, within the TTL elsewhere', async () => {
    const tenant = `kc-${Date.now()}`;
    assert.equal((await call(a, 'POST', '/v1/admin/tenants', admin, { tenant_id: tenant, name: 'kc' })).status, 201);
    const k = await call(a, 'POST', '/v1/admin/api-keys', admin, { tenant_id: tenant, name: 'k' });
    assert.equal(k.status, 201);
    const key = { 'x-cycles-api-key': k.body.key_secret as string };
    const balances = `/v1/balances?tenant=${tenant}`;
    // Both servers have the key cached now.
    assert.equal((await call(a, 'GET', balances, key)).status, 200);
    assert.equal((await call(b, 'GET', balances, key)).status, 200);

    // Narrowing the permissions applies at once on A.
    const patched = await call(a, 'PATCH', `/v1/admin/api-keys/${k.body.key_id as string}`, admin, { permissions: ['reservations:create'] });
    assert.equal(patched.status, 200);
    assert.equal((await call(a, 'GET', balances, key)).status, 403);
    await sleep(TTL + 50);
    assert.equal((await call(b, 'GET', balances, key)).status, 403, 'B follows within the TTL');

    const restored = await call(a, 'PATCH', `/v1/admin/api-keys/${k.body.key_id as string}`, admin, { permissions: ['balances:read'] });
    assert.equal(restored.status, 200);
    await sleep(TTL + 50);
    assert.equal((await call(b, 'GET', balances, key)).status, 200);

    const revoked = await call(a, 'DELETE', `/v1/admin/api-keys/${k.body.key_id as string}`, admin);
    assert.equal(revoked.status, 200);
    const onA = await call(a, 'GET', balances, key);
    assert.deepEqual([onA.status, onA.body.error], [401, 'UNAUTHORIZED']);
    await sleep(TTL + 50);
    const onB = await call(b, 'GET', balances, key);
    assert.deepEqual([onB.status, onB.body.error], [401, 'UNAUTHORIZED'], 'B refuses the revoked key once the TTL has passed');
  });
});
