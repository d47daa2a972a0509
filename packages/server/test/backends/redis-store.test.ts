/**
 * Redis-specific checks beyond the shared suites (CYCLES_TEST_REDIS_URL):
 * - amounts up to 2^53-1 are exact, and the ledger's range refusals match SQLite's byte for byte;
 * - policies select, cap and default reservations exactly as on SQLite (the reserve script's copy);
 * - a corrupt tenant status fails closed (500) on every path that persists or evaluates;
 * - every key the server writes is either under a tenant's hash tag or one of the documented
 *   global keys (so Cluster can route every script to one slot);
 * - Redis killed under the server: requests answer 503 while it is down and work again once it is
 *   back (scripts reloaded after NOSCRIPT); with AOF fsync=always nothing acknowledged is lost.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { createClient } from 'redis';
import { Client, idem, type Json, type Res } from '../support/http.js';
import { freePort, provision, removeDir, startInProcess, tempDir, type InProcessServer } from '../support/server.js';
import { openTestBackend, type TestBackend } from './backend.js';
import { startPrivateRedis } from './redis-backend.js';

const URL_VAR = 'CYCLES_TEST_REDIS_URL';
const MAX = Number.MAX_SAFE_INTEGER;

/** Drops what legitimately differs between two servers: generated ids, request/trace ids, times. */
function normalise(text: string): Json {
  const walk = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    const out: Record<string, Json> = {};
    for (const [k, x] of Object.entries(v as Record<string, Json>)) {
      if (['reservation_id', 'event_id', 'request_id', 'trace_id', 'timestamp', 'expires_at_ms', 'remaining_ttl_ms'].includes(k)) continue;
      out[k] = walk(x);
    }
    return out;
  };
  return walk(JSON.parse(text));
}

if (!process.env[URL_VAR]) {
  const line = `*** SKIPPED: the Redis store tests did not run: ${URL_VAR} is not set (.ci/run sets it) ***`;
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test('redis store tests', { skip: `${URL_VAR} is not set` }, () => undefined);
} else {
  describe('redis store', () => {
    let redis: TestBackend;
    let srv: InProcessServer;
    let sqlite: InProcessServer;
    before(async () => {
      redis = await openTestBackend('redis');
      srv = await startInProcess(redis.config);
      sqlite = await startInProcess({ store: 'sqlite' });
    });
    after(async () => {
      await srv?.close();
      await sqlite?.close();
      await redis?.cleanup();
    });

    test("the scripts' JSON strings (with and without characters to escape), balances and scope arrays equal JSON.stringify's", async () => {
      const { LIB } = await import('../../src/store/redis/lua/lib.js');
      const c = createClient({ url: process.env[URL_VAR] });
      await c.connect();
      try {
        const run = async (s: string, scope: string): Promise<[string, string, string]> =>
          (await c.eval(
            `${LIB}
            local b = { scope = ARGV[2], unit = 'TOKENS', allocated = 10, reserved = 3, spent = 2, debt = 1, limit = 5, over = true }
            return { jstr(ARGV[1]), balances_json({ b }), scopes_array({ ARGV[2], ARGV[2] }) }`,
            { arguments: [s, scope] },
          )) as [string, string, string];
        const strings = ['TOKENS', 'tenant:a/workspace:b', '', 'quote " and \\ backslash', 'tab\tnewline\nnul\u0000bell\u0007', 'unicode é ✓ \u007f'];
        for (const s of strings) {
          const [str] = await run(s, 'tenant:a');
          assert.equal(str, JSON.stringify(s), `jstr of ${JSON.stringify(s)}`);
        }
        // Scopes and units go into balances unescaped (q in lua/lib.ts): every character a scope
        // may hold is one JSON writes as itself (checked below), and units are the protocol's enum.
        for (const scope of ['tenant:a', 'tenant:acme-1/workspace:w.2/app:a_3/workflow:f/agent:b/toolset:t']) {
          const [, bal, arr] = await run('', scope);
          const amount = (x: number) => ({ unit: 'TOKENS', amount: x });
          assert.deepEqual(JSON.parse(bal), [
            { scope, scope_path: scope, remaining: amount(4), reserved: amount(3), spent: amount(2), allocated: amount(10), debt: amount(1), overdraft_limit: amount(5), is_over_limit: true },
          ]);
          assert.equal(arr, JSON.stringify([scope, scope]));
        }
      } finally {
        await c.close();
      }
    });

    test('no scope, tenant id or unit the server accepts holds a character JSON would escape', async () => {
      const { deriveScopes, parseBudgetScope } = await import('../../src/ledger/scopes.js');
      const { UNITS } = await import('../../src/ledger/amounts.js');
      for (const u of UNITS) assert.equal(JSON.stringify(u), `"${u}"`);
      const escaped = [...Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(i)), '\u2028', 'é'].filter((ch) => JSON.stringify(ch) !== `"${ch}"`);
      assert.ok(escaped.includes('"') && escaped.includes('\\') && escaped.includes('\n'));
      for (const ch of escaped) {
        assert.throws(() => deriveScopes({ tenant: `a${ch}b` }), /must match/, `subject value with ${JSON.stringify(ch)}`);
        assert.throws(() => parseBudgetScope(`tenant:a/workspace:a${ch}b`), /must be 1-128 characters/, `budget scope with ${JSON.stringify(ch)}`);
      }
      // Reservation ids embed the tenant id, whose pattern admits only [a-z0-9-].
      const r = await srv.client.post('/v1/admin/tenants', { tenant_id: 'quo"te', name: 'x' }, { admin: true });
      assert.equal(r.status, 400);
    });

    test('amounts up to 2^53-1 are exact, and range refusals match SQLite', async () => {
      const run = async (c: Client): Promise<Array<{ status: number; body: Json }>> => {
        const t = 'exact-t';
        const key = await provision(c, t, [
          { at: '', allocated: MAX, overdraft: MAX - 1 },
          { at: 'workspace:w', allocated: MAX - 7 },
        ]);
        const out: Array<{ status: number; body: Json }> = [];
        const note = (r: Res) => out.push({ status: r.status, body: normalise(r.text) });
        const subject = { tenant: t, workspace: 'w' };
        const action = { kind: 'llm.completion', name: 'm' };
        const r1 = await c.post('/v1/reservations', { idempotency_key: 'a', subject, action, estimate: { unit: 'TOKENS', amount: MAX - 9 }, ttl_ms: 600_000 }, { apiKey: key });
        note(r1);
        note(await c.post(`/v1/reservations/${r1.body.reservation_id}/commit`, { idempotency_key: 'b', actual: { unit: 'TOKENS', amount: MAX } }, { apiKey: key }));
        note(await c.post('/v1/events', { idempotency_key: 'c', subject: { tenant: t }, action, actual: { unit: 'TOKENS', amount: MAX }, overage_policy: 'ALLOW_WITH_OVERDRAFT' }, { apiKey: key }));
        note(await c.post('/v1/events', { idempotency_key: 'd', subject: { tenant: t }, action, actual: { unit: 'TOKENS', amount: 3 }, overage_policy: 'ALLOW_WITH_OVERDRAFT' }, { apiKey: key }));
        const q = new URLSearchParams({ scope: `tenant:${t}`, unit: 'TOKENS', tenant_id: t }).toString();
        note(await c.post(`/v1/admin/budgets/fund?${q}`, { operation: 'CREDIT', amount: { unit: 'TOKENS', amount: 1 } }, { admin: true }));
        note(await c.post(`/v1/admin/budgets/fund?${q}`, { operation: 'REPAY_DEBT', amount: { unit: 'TOKENS', amount: MAX } }, { admin: true }));
        // Balances list in ledger-id order, and ledger ids are random: compare them by scope.
        const bal = await c.get(`/v1/balances?tenant=${t}&include_children=true`, { apiKey: key });
        out.push({ status: bal.status, body: (normalise(bal.text).balances as Json[]).sort((a, b) => (a.scope < b.scope ? -1 : 1)) });
        return out;
      };
      const onRedis = await run(srv.client);
      const onSqlite = await run(sqlite.client);
      assert.deepStrictEqual(onRedis, onSqlite);
      // The commit charged the whole actual amount, exactly.
      assert.equal(onRedis[1]!.body.charged?.amount ?? onRedis[1]!.body.error, onSqlite[1]!.body.charged?.amount ?? onSqlite[1]!.body.error);
      assert.ok(onRedis.some((r) => r.status === 200), 'some of the sequence succeeds');
      const balances = onRedis[onRedis.length - 1]!.body as Json[];
      for (const b of balances) assert.ok(Number.isSafeInteger(b.remaining.amount) && Number.isSafeInteger(b.spent.amount), JSON.stringify(b));
    });

    test('policies govern reservations as on SQLite: pattern, priority, window, caps, default overage policy, TTL override', async () => {
      // A fixed pseudo-random set of policies; the same requests on both servers must get the same answers.
      let seed = Number(process.env.CYCLES_POLICY_SEED ?? 20261121);
      const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const pick = <T>(l: readonly T[]): T => l[Math.floor(rand() * l.length)]!;
      const t = 'policy-t';
      const patterns = [`tenant:${t}`, `tenant:${t}/*`, `tenant:${t}/workspace:w1`, `tenant:${t}/workspace:w1/*`, `tenant:${t}/workspace:*`, `tenant:${t}/workspace:w1/agent:*`];
      const day = 86_400_000;
      const policies = Array.from({ length: 9 }, (_, i) => {
        const p: Record<string, unknown> = { tenant_id: t, name: `p${i}`, scope_pattern: pick(patterns), priority: pick([0, 1, 2, 5]) };
        if (rand() < 0.7) p.caps = pick([{ max_tokens: 100 + i }, { tool_denylist: ['shell'], cooldown_ms: 5 }, { max_steps_remaining: i, tool_allowlist: [] }, {}]);
        if (rand() < 0.5) p.commit_overage_policy = pick(['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT']);
        if (rand() < 0.5) p.reservation_ttl_override = pick([{ default_ttl_ms: 5000 + i }, { max_ttl_ms: 2000 + i, default_ttl_ms: 1500 }, { max_extensions: i % 3 }]);
        const w = pick(['none', 'none', 'past', 'future', 'ended']);
        if (w === 'past') p.effective_from = new Date(Date.now() - day).toISOString();
        if (w === 'future') p.effective_from = new Date(Date.now() + day).toISOString();
        if (w === 'ended') {
          p.effective_from = new Date(Date.now() - 2 * day).toISOString();
          p.effective_until = new Date(Date.now() - day).toISOString();
        }
        return { body: p, disable: rand() < 0.2 };
      });
      // One that certainly governs somewhere, with caps and a TTL override.
      policies.push({ body: { tenant_id: t, name: 'agents', scope_pattern: `tenant:${t}/workspace:w1/agent:*`, priority: 9, caps: { max_tokens: 7, tool_allowlist: ['search'] }, reservation_ttl_override: { default_ttl_ms: 4321 } }, disable: false });
      const leaves = [{}, { workspace: 'w1' }, { workspace: 'w1', agent: 'a' }, { workspace: 'w1', agent: 'b' }, { workspace: 'w2' }, { workspace: 'w2', agent: 'a' }];
      const run = async (c: Client): Promise<Json[]> => {
        const key = await provision(c, t, [
          { at: '', allocated: 100_000 },
          { at: 'workspace:w1', allocated: 10_000 },
          { at: 'workspace:w1/agent:a', allocated: 50 },
          { at: 'workspace:w2', allocated: 40 },
        ]);
        const q = new URLSearchParams({ scope: `tenant:${t}/workspace:w2`, unit: 'TOKENS' }).toString();
        await c.request('PATCH', `/v1/admin/budgets?${q}`, { admin: true, body: { commit_overage_policy: 'REJECT' } });
        for (const p of policies) {
          const r = await c.post('/v1/admin/policies', p.body, { admin: true });
          assert.equal(r.status, 201, r.text);
          if (p.disable) await c.request('PATCH', `/v1/admin/policies/${r.body.policy_id}`, { admin: true, body: { status: 'DISABLED' } });
          // Ties on priority go to the older policy: keep creation times apart so ids never decide.
          await new Promise((res) => setTimeout(res, 3));
        }
        const out: Json[] = [];
        const action = { kind: 'llm.completion', name: 'm' };
        for (const leaf of leaves) {
          const subject = { tenant: t, ...leaf };
          const estimate = { unit: 'TOKENS', amount: 30 };
          const decide = await c.post('/v1/decide', { idempotency_key: idem(), subject, action, estimate }, { apiKey: key });
          const dry = await c.post('/v1/reservations', { idempotency_key: idem(), subject, action, estimate, dry_run: true }, { apiKey: key });
          const live = await c.post('/v1/reservations', { idempotency_key: idem(), subject, action, estimate }, { apiKey: key });
          const row: Json = { leaf, decide: normalise(decide.text), dry: normalise(dry.text), live: { status: live.status, ...normalise(live.text) } };
          if (live.status === 200) {
            row.ttl = live.body.remaining_ttl_ms;
            const got = await c.get(`/v1/reservations/${live.body.reservation_id}`, { apiKey: key });
            row.ttl_from_record = got.body.expires_at_ms - got.body.created_at_ms;
            // Committing above the estimate shows which overage policy the reservation took.
            const commit = await c.post(`/v1/reservations/${live.body.reservation_id}/commit`, { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 70 } }, { apiKey: key });
            row.commit = { status: commit.status, ...normalise(commit.text) };
          }
          out.push(row);
        }
        return out;
      };
      const onRedis = await run(srv.client);
      const onSqlite = await run(sqlite.client);
      assert.deepStrictEqual(onRedis, onSqlite);
      assert.ok(onRedis.some((r) => r.decide.decision === 'ALLOW_WITH_CAPS'), `some reservation is governed by caps: ${JSON.stringify(onRedis.map((r) => [r.leaf, r.decide, r.ttl, r.commit?.status]))}`);
    });

    test('a corrupt tenant status fails closed with 500 on every persisting and evaluating path', async () => {
      const c = srv.client;
      const t = 'corrupt-t';
      const key = await provision(c, t, [{ at: '', allocated: 1000 }]);
      const action = { kind: 'llm.completion', name: 'm' };
      const r = await c.post('/v1/reservations', { idempotency_key: idem(), subject: { tenant: t }, action, estimate: { unit: 'TOKENS', amount: 10 } }, { apiKey: key });
      assert.equal(r.status, 200, r.text);
      const client = createClient({ url: process.env[URL_VAR] });
      await client.connect();
      try {
        await client.sendCommand(['HSET', `${String(redis.config.redisPrefix)}{t:${t}}:tenant`, 'status', 'GARBLED']);
      } finally {
        await client.close();
      }
      const estimate = { unit: 'TOKENS', amount: 1 };
      const calls: Array<Promise<Res>> = [
        c.post('/v1/reservations', { idempotency_key: idem(), subject: { tenant: t }, action, estimate }, { apiKey: key }),
        c.post('/v1/reservations', { idempotency_key: idem(), subject: { tenant: t }, action, estimate, dry_run: true }, { apiKey: key }),
        c.post('/v1/decide', { idempotency_key: idem(), subject: { tenant: t }, action, estimate }, { apiKey: key }),
        c.post(`/v1/reservations/${r.body.reservation_id}/commit`, { idempotency_key: idem(), actual: estimate }, { apiKey: key }),
        c.post('/v1/events', { idempotency_key: idem(), subject: { tenant: t }, action, actual: estimate }, { apiKey: key }),
      ];
      for (const res of await Promise.all(calls)) {
        assert.equal(res.status, 500, res.text);
        assert.equal(res.body.error, 'INTERNAL_ERROR');
      }
      const read = await c.get(`/v1/reservations/${r.body.reservation_id}`, { apiKey: key });
      assert.equal(read.status, 200, 'reads still work');
    });

    test('every key is under a tenant hash tag or is one of the documented global keys', async () => {
      const c = srv.client;
      const t = 'layout-t';
      const key = await provision(c, t, [{ at: '', allocated: 1000 }, { at: 'workspace:w/agent:a', allocated: 100 }]);
      const action = { kind: 'llm.completion', name: 'm' };
      const subject = { tenant: t, workspace: 'w', agent: 'a' };
      const r = await c.post('/v1/reservations', { idempotency_key: idem(), subject, action, estimate: { unit: 'TOKENS', amount: 90 } }, { apiKey: key });
      await c.post(`/v1/reservations/${r.body.reservation_id}/commit`, { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 200 } }, { apiKey: key });
      await c.post('/v1/events', { idempotency_key: idem(), subject, action, actual: { unit: 'TOKENS', amount: 5 } }, { apiKey: key });
      await c.post('/v1/admin/policies', { tenant_id: t, name: 'p', scope_pattern: `tenant:${t}/*`, caps: { max_tokens: 10 } }, { admin: true });
      await c.get(`/v1/admin/events?tenant_id=${t}`, { admin: true });
      const prefix = String(redis.config.redisPrefix);
      const p = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const allowed = [
        new RegExp(`^${p}\\{t:[a-z0-9_-]+\\}:`),
        new RegExp(`^${p}\\{wh\\}:`),
        new RegExp(`^${p}\\{sweep\\}:(due|touched)$`),
        new RegExp(`^${p}(tenants|budgets|ledgers|apikeys|streams|audit-owners|meta)$`),
        new RegExp(`^${p}(apikey:h:|apikey:id:|policy:id:|lease:)`),
      ];
      const client = createClient({ url: process.env[URL_VAR] });
      await client.connect();
      const keys: string[] = [];
      try {
        let cursor = '0';
        do {
          const [next, batch] = (await client.sendCommand(['SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000'])) as [string, string[]];
          cursor = next;
          keys.push(...batch);
        } while (cursor !== '0');
      } finally {
        await client.close();
      }
      assert.ok(keys.some((k) => k.includes(`{t:${t}}:r:`)), 'the reservation is stored under the tenant tag');
      const stray = keys.filter((k) => !allowed.some((re) => re.test(k)));
      assert.deepEqual(stray, [], 'keys outside the documented layout');
      // Nothing names the tenant outside its own hash tag (a script touching it would cross slots),
      // but the webhook fan-out's cursor of the tenant's outbox: it lives in the dispatcher's
      // {wh} slot by design (docs/backends.md) and is read and written only in {wh} transactions;
      // it exists once the dispatcher has fanned the tenant's events out, which may happen first.
      const fanoutCursor = `${prefix}{wh}:cursor:${t}`;
      assert.deepEqual(keys.filter((k) => k.includes(t) && !k.includes(`{t:${t}}`) && k !== fanoutCursor), []);
    });

    test('Redis killed under the server: 503 while down, back after restart with nothing acknowledged lost (AOF always)', async (t) => {
      if (spawnSync('redis-server', ['--version']).status !== 0) {
        t.skip('redis-server is not installed');
        return;
      }
      const port = await freePort();
      const dir = await tempDir('cycles-redis-aof-');
      let proc = await startPrivateRedis(port, dir);
      let server: InProcessServer | undefined;
      try {
        server = await startInProcess({ store: 'redis', redisUrl: `redis://127.0.0.1:${port}`, redisPrefix: 'cyt:kill:' });
        const c = server.client;
        const tenant = 'kill-t';
        const key = await provision(c, tenant, [{ at: '', allocated: 100 }]);
        const body = () => ({ idempotency_key: idem(), subject: { tenant }, action: { kind: 'k', name: 'n' }, estimate: { unit: 'TOKENS', amount: 10 }, ttl_ms: 600_000 });
        const before = await c.post('/v1/reservations', body(), { apiKey: key });
        assert.equal(before.status, 200, before.text);

        proc.kill('SIGKILL');
        await new Promise((r) => proc.once('exit', r));
        const down = await c.post('/v1/reservations', body(), { apiKey: key, timeoutMs: 10_000 });
        assert.equal(down.status, 503, down.text);
        assert.equal((await c.get('/readyz')).status, 503);

        proc = await startPrivateRedis(port, dir);
        let again: Res | undefined;
        for (let i = 0; i < 100; i++) {
          again = await c.post('/v1/reservations', body(), { apiKey: key });
          if (again.status === 200) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(again?.status, 200, `after the restart: ${again?.text}`);
        // The reservation acknowledged before the kill is still there, still holding its amount.
        const kept = await c.get(`/v1/reservations/${before.body.reservation_id}`, { apiKey: key });
        assert.equal(kept.status, 200, kept.text);
        assert.equal(kept.body.status, 'ACTIVE');
        const bal = await c.get(`/v1/balances?tenant=${tenant}`, { apiKey: key });
        assert.equal(bal.body.balances[0].reserved.amount, 20);
      } finally {
        await server?.close().catch(() => undefined);
        proc.kill('SIGKILL');
        await removeDir(dir);
      }
    });
  });
}
