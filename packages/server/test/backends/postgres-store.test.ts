/**
 * PostgreSQL backend, at the store level (CYCLES_TEST_DATABASE_URL): what the HTTP suites cannot
 * see. Migrations racing at start, the refusal to run on an outdated schema, no deadlock under
 * heavy concurrency on overlapping scope paths, exact BIGINT amounts at 2^53-1 (and a refusal
 * rather than a rounding beyond), statements prepared before a migration, group commit isolating
 * a refused member, connections killed mid-transaction, a corrupt tenant record failing closed,
 * and sweepers of several stores expiring each reservation exactly once.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { requestHash } from '../../src/ledger/ops/shared.js';
import { deriveScopes, type Subject } from '../../src/ledger/scopes.js';
import type { BudgetRecord } from '../../src/ledger/types.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../../src/store/postgres/schema.js';
import { PostgresStore, type PostgresOptions } from '../../src/store/postgres/store.js';
import { CyclesError } from '../../src/ledger/errors.js';
import { dropPostgresSchema } from './backend.js';

const URL_VAR = 'CYCLES_TEST_DATABASE_URL';
const url = process.env[URL_VAR];

if (!url) {
  const line = `*** SKIPPED: the PostgreSQL store tests did not run: ${URL_VAR} is not set (.ci/run sets it) ***`;
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test('postgres store', { skip: `${URL_VAR} is not set` }, () => undefined);
} else {
  const schemas: string[] = [];
  const stores: PostgresStore[] = [];
  const freshSchema = () => {
    const s = `cycles_st_${crypto.randomBytes(5).toString('hex')}`;
    schemas.push(s);
    return s;
  };
  const open = async (schema: string, extra: Partial<PostgresOptions> = {}) => {
    const s = await PostgresStore.open({ url, poolSize: 10, schema, ...extra });
    stores.push(s);
    return s;
  };
  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    for (const s of schemas) await dropPostgresSchema(url, s).catch(() => undefined);
  });

  const ctx = { actor: { type: 'api_key' as const } };
  const budget = (tenant: string, at: string, allocated: number, extra: Partial<BudgetRecord> = {}): BudgetRecord => ({
    ledger_id: `ldg_${crypto.randomBytes(8).toString('hex')}`,
    tenant_id: tenant,
    scope: at ? `tenant:${tenant}/${at}` : `tenant:${tenant}`,
    unit: 'TOKENS',
    allocated,
    reserved: 0,
    spent: 0,
    debt: 0,
    overdraft_limit: 0,
    is_over_limit: false,
    status: 'ACTIVE',
    created_at: 0,
    updated_at: 0,
    ...extra,
  });
  const reserveCmd = (tenant: string, subject: Subject, amount: number, key: string = crypto.randomUUID(), extra: Record<string, unknown> = {}) => {
    const request = { idempotency_key: key, subject, action: { kind: 'llm.completion', name: 'm' }, estimate: { unit: 'TOKENS' as const, amount }, ...extra };
    return { ctx, tenantId: tenant, request, scopes: deriveScopes(subject), hash: requestHash('reserve', request) };
  };
  const commitCmd = (id: string, tenant: string, amount: number) => {
    const request = { idempotency_key: crypto.randomUUID(), actual: { unit: 'TOKENS' as const, amount } };
    return { ctx, reservationId: id, callerTenant: tenant, request, hash: requestHash('commit', request, id) };
  };
  const releaseCmd = (id: string, tenant: string) => {
    const request = { idempotency_key: crypto.randomUUID() };
    return { ctx, reservationId: id, callerTenant: tenant, request, hash: requestHash('release', request, id) };
  };
  const provision = async (s: PostgresStore, tenant: string, budgets: BudgetRecord[]) => {
    await s.createTenant({ tenant_id: tenant, name: tenant, status: 'ACTIVE', created_at: Date.now() });
    for (const b of budgets) await s.createBudget(b);
  };
  const all = async (s: PostgresStore, tenant: string) => (await s.listBudgets({ tenantId: tenant, limit: 500 })).rows;

  describe('postgres store', () => {
    test('six servers starting at once apply each migration exactly once', async () => {
      const schema = freshSchema();
      await Promise.all(Array.from({ length: 6 }, () => open(schema, { poolSize: 2 })));
      const status = await PostgresStore.status({ url, schema });
      assert.deepEqual(status.applied, MIGRATIONS.map((m) => m.version));
      assert.equal(status.pending.length, 0);
      assert.equal(status.required, SCHEMA_VERSION);
    });

    test('with migrate-on-start off, an outdated schema is refused until `cycles migrate` ran', async () => {
      const schema = freshSchema();
      await assert.rejects(open(schema, { migrate: false }), /cycles migrate/);
      const ran = await PostgresStore.migrate({ url, schema });
      assert.equal(ran.ran.length, MIGRATIONS.length);
      assert.equal((await PostgresStore.migrate({ url, schema })).ran.length, 0, 'migrating again changes nothing');
      const s = await open(schema, { migrate: false });
      await s.ping();
    });

    test('a migration applied by another server while this one runs: prepared statements are planned again', async () => {
      const schema = freshSchema();
      const s = await open(schema, { poolSize: 2 });
      const t = 'replan';
      await provision(s, t, [budget(t, '', 1000)]);
      for (let i = 0; i < 4; i++) {
        assert.equal((await s.reserve(reserveCmd(t, { tenant: t }, 1))).status, 200);
        assert.ok(await s.getTenant(t));
      }
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        for (const table of ['tenants', 'budgets', 'reservations', 'idempotency', 'policies']) {
          await client.query(`ALTER TABLE "${schema}".${table} ADD COLUMN added_later TEXT`);
        }
      } finally {
        await client.end();
      }
      for (let i = 0; i < 4; i++) {
        assert.equal((await s.reserve(reserveCmd(t, { tenant: t }, 1))).status, 200);
        assert.ok(await s.getTenant(t));
      }
      assert.equal((await s.getBudget(`tenant:${t}`, 'TOKENS'))!.reserved, 8);
    });

    test('amounts are exact at 2^53-1, and a stored value beyond is refused, never rounded', async () => {
      const schema = freshSchema();
      const s = await open(schema);
      const max = Number.MAX_SAFE_INTEGER;
      await provision(s, 'big', [budget('big', '', max)]);
      const r = await s.reserve(reserveCmd('big', { tenant: 'big' }, max - 1));
      assert.equal(r.status, 200, r.body);
      const id = JSON.parse(r.body).reservation_id as string;
      const c = await s.commit(commitCmd(id, 'big', max - 1));
      assert.equal(c.status, 200, c.body);
      const b = (await s.getBudget('tenant:big', 'TOKENS'))!;
      assert.equal(b.allocated, max);
      assert.equal(b.spent, max - 1);
      assert.equal(b.allocated - b.spent - b.reserved - b.debt, 1);
      // A value the ledger would never write must not come back rounded.
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`ALTER TABLE "${schema}".budgets DROP CONSTRAINT budgets_amounts_in_range`);
        await client.query(`UPDATE "${schema}".budgets SET allocated = 9007199254740993 WHERE scope = 'tenant:big'`);
      } finally {
        await client.end();
      }
      await assert.rejects(s.getBudget('tenant:big', 'TOKENS'), (e: unknown) => e instanceof CyclesError && e.code === 'INTERNAL_ERROR');
    });

    test('heavy concurrency on overlapping scope paths across three stores: no deadlock, no oversubscription, exact ledger', async (tc) => {
      const schema = freshSchema();
      // Three stores (as three server processes): their groups are concurrent transactions on the same rows.
      const stores = [await open(schema, { poolSize: 4 }), await open(schema, { poolSize: 4 }), await open(schema, { poolSize: 4 })];
      const s = stores[0]!;
      const on = (i: number) => stores[i % stores.length]!;
      const t = 'hot';
      const leaves = ['workspace:w1/agent:a', 'workspace:w1/agent:b', 'workspace:w1/app:x/agent:c', 'workspace:w2/agent:d', 'workspace:w2'];
      await provision(s, t, [
        budget(t, '', 100_000),
        budget(t, 'workspace:w1', 3_000),
        budget(t, 'workspace:w2', 2_000),
        budget(t, 'workspace:w1/agent:a', 5_000),
        budget(t, 'workspace:w1/app:x', 1_000),
        // Tight leaves: some reserves are always refused, whatever the interleaving.
        budget(t, 'workspace:w1/app:x/agent:c', 300),
        budget(t, 'workspace:w2/agent:d', 300),
      ]);
      const subjectOf = (at: string): Subject => {
        const out: Subject = { tenant: t };
        for (const seg of at.split('/')) {
          const [k, v] = seg.split(':') as [string, string];
          (out as Record<string, string>)[k] = v;
        }
        return out;
      };
      const held = new Map<string, number>();
      let ok = 0;
      let refused = 0;
      // Reserves, settlements and fundings of one tree, all at once, in rounds.
      for (let round = 0; round < 3; round++) {
        const work: Array<Promise<void>> = [];
        for (let i = 0; i < 100; i++) {
          work.push(
            (async () => {
              const r = await on(i).reserve(reserveCmd(t, subjectOf(leaves[i % leaves.length]!), 10 + (i % 37))).catch((e: unknown) => e);
              if (r instanceof CyclesError) {
                assert.equal(r.code, 'BUDGET_EXCEEDED');
                refused++;
                return;
              }
              assert.ok(!(r instanceof Error), String(r));
              const body = JSON.parse((r as { body: string }).body);
              ok++;
              held.set(body.reservation_id, body.reserved.amount);
            })(),
          );
        }
        const open = [...held.keys()];
        for (const [j, id] of open.entries()) {
          work.push(
            (async () => {
              if (j % 3 === 0) await on(j + 1).release(releaseCmd(id, t));
              else await on(j + 2).commit(commitCmd(id, t, j % 2 === 0 ? 1 : 5));
              held.delete(id);
            })(),
          );
        }
        for (const at of ['', 'workspace:w1', 'workspace:w2/agent:d']) {
          const scope = at ? `tenant:${t}/${at}` : `tenant:${t}`;
          work.push(on(round).fundBudget({ ctx, tenantId: t, scope, unit: 'TOKENS', operation: 'CREDIT', amount: 100, hash: 'x' }).then(() => undefined));
        }
        for (const st of stores) work.push(st.expireDue(100).then(() => undefined));
        await Promise.all(work);
      }
      assert.ok(ok > 80 && refused > 0, `the rounds must both succeed and refuse (ok ${ok}, refused ${refused})`);
      const retries = stores.map((st) => st.stats.retries);
      for (const r of retries) assert.equal(r['40P01'] ?? 0, 0, `deadlocks: ${JSON.stringify(retries)}`);
      tc.diagnostic(`${ok} reserved, ${refused} refused, ${stores.map((st) => st.stats.committed).join('+')} transactions, retries ${JSON.stringify(retries)}`);
      const budgets = await all(s, t);
      for (const b of budgets) {
        assert.ok(b.reserved >= 0 && b.spent >= 0 && b.debt === 0, `${b.scope}: ${JSON.stringify(b)}`);
        assert.ok(b.allocated - b.spent - b.reserved - b.debt >= 0, `${b.scope} oversubscribed: ${JSON.stringify(b)}`);
      }
      const stillHeld = [...held.values()].reduce((a, v) => a + v, 0);
      assert.equal(budgets.find((b) => b.scope === `tenant:${t}`)!.reserved, stillHeld, 'the root holds exactly the open reservations');
    });

    test('connections killed mid-transaction: nothing acknowledged is lost, nothing partial is kept', async (tc) => {
      const schema = freshSchema();
      const app = `cycles_kill_${crypto.randomBytes(4).toString('hex')}`;
      const s = await open(schema, { applicationName: app, poolSize: 8 });
      const t = 'crash';
      await provision(s, t, [budget(t, '', 1_000_000), budget(t, 'workspace:w', 1_000_000)]);
      const killer = new pg.Client({ connectionString: url });
      await killer.connect();
      const acknowledged = new Map<string, number>();
      const keys: string[] = [];
      let failures = 0;
      try {
        let stop = false;
        const kills = (async () => {
          while (!stop) {
            await killer.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
            await new Promise((r) => setTimeout(r, 60));
          }
        })();
        // Eight clients at a time, so attempts land before, during and after each kill.
        let nextKey = 0;
        await Promise.all(
          Array.from({ length: 8 }, async () => {
            while (nextKey < 150) {
            const key = `k${nextKey++}`;
            keys.push(key);
            try {
              const r = await s.reserve(reserveCmd(t, { tenant: t, workspace: 'w' }, 7, key));
              acknowledged.set(JSON.parse(r.body).reservation_id, 7);
            } catch (e) {
              failures++;
              assert.ok(e instanceof CyclesError && e.code === 'SERVICE_UNAVAILABLE', `a lost connection is a 503, got ${String(e)}`);
            }
            }
          }),
        );
        stop = true;
        await kills;
      } finally {
        await killer.end();
      }
      // Retrying every key (as a client would) creates each reservation at most once.
      for (const key of keys) {
        const r = await s.reserve(reserveCmd(t, { tenant: t, workspace: 'w' }, 7, key));
        const id = JSON.parse(r.body).reservation_id as string;
        if (acknowledged.has(id)) assert.equal(r.replayed, true, `acknowledged ${id} must replay`);
        acknowledged.set(id, 7);
      }
      assert.equal(acknowledged.size, keys.length, 'one reservation per key');
      for (const b of await all(s, t)) assert.equal(b.reserved, 7 * keys.length, `${b.scope}: holds must match the reservations exactly`);
      tc.diagnostic(`${failures} of ${keys.length} first attempts lost their connection`);
    });

    test('group commit: one member refused by PostgreSQL fails alone; same-key members of one group see each other', async () => {
      const schema = freshSchema();
      const s = await open(schema);
      const t = 'group';
      await provision(s, t, [budget(t, '', 1000)]);
      // Submitted in one event-loop turn: they share a group.
      const code = (r: PromiseSettledResult<unknown>) => (r.status === 'rejected' ? (r.reason as CyclesError).code : 'OK');
      const mixed = await Promise.allSettled([
        ...Array.from({ length: 5 }, () => s.reserve(reserveCmd(t, { tenant: t }, 10))),
        s.reserve(reserveCmd(t, { tenant: t }, 10, 'nul\u0000key')),
      ]);
      assert.deepEqual(mixed.map(code), ['OK', 'OK', 'OK', 'OK', 'OK', 'INVALID_REQUEST']);
      const key = crypto.randomUUID();
      const twins = await Promise.allSettled([s.reserve(reserveCmd(t, { tenant: t }, 10, key)), s.reserve(reserveCmd(t, { tenant: t }, 11, key))]);
      assert.deepEqual(twins.map(code), ['OK', 'IDEMPOTENCY_MISMATCH']);
      assert.equal((await s.getBudget(`tenant:${t}`, 'TOKENS'))!.reserved, 60);
    });

    test('every execution of a prepared statement is planned for its own arguments: no connection keeps a generic plan', async () => {
      // A generic plan made while the tables are small keeps sequential scans as they grow.
      const schema = freshSchema();
      const s = await open(schema, { poolSize: 3 });
      const t = 'plans';
      await provision(s, t, [budget(t, '', 1_000_000), budget(t, 'workspace:w', 1_000_000)]);
      for (let i = 0; i < 30; i++) await s.reserve(reserveCmd(t, { tenant: t, workspace: 'w' }, 1));
      const pool = (s as unknown as { pool: pg.Pool }).pool;
      // Every connection of the pool at once, so each one's prepared statements are seen.
      const clients = await Promise.all(Array.from({ length: 3 }, () => pool.connect()));
      const stats: Array<{ name: string; generic_plans: string; custom_plans: string }> = [];
      try {
        for (const c of clients) {
          const r = await c.query("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'cycles_%'");
          stats.push(...(r.rows as typeof stats));
        }
      } finally {
        for (const c of clients) c.release();
      }
      const most = Math.max(...stats.map((r) => Number(r.custom_plans) + Number(r.generic_plans)));
      assert.ok(most >= 10, `some statement ran at least 10 times on one connection (most: ${most})`);
      assert.deepEqual(stats.filter((r) => Number(r.generic_plans) > 0), []);
    });

    test('a tenant record whose status cannot be determined fails closed (500), reads still work', async () => {
      const schema = freshSchema();
      const s = await open(schema);
      const t = 'corrupt';
      await provision(s, t, [budget(t, '', 1000)]);
      const r = await s.reserve(reserveCmd(t, { tenant: t }, 10));
      const id = JSON.parse(r.body).reservation_id as string;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`UPDATE "${schema}".tenants SET status = 'GARBLED' WHERE tenant_id = $1`, [t]);
      } finally {
        await client.end();
      }
      const internal = (e: unknown) => e instanceof CyclesError && e.code === 'INTERNAL_ERROR';
      await assert.rejects(s.reserve(reserveCmd(t, { tenant: t }, 1)), internal);
      await assert.rejects(s.reserve(reserveCmd(t, { tenant: t }, 1, undefined, { dry_run: true })), internal);
      await assert.rejects(s.commit(commitCmd(id, t, 1)), internal);
      assert.equal((await s.getReservation(id))?.status, 'ACTIVE');
    });

    test('sweepers of several stores on one schema expire each reservation exactly once', async () => {
      const schema = freshSchema();
      const a = await open(schema);
      const b = await open(schema);
      const c = await open(schema);
      const t = 'sweep';
      await provision(a, t, [budget(t, '', 10_000), budget(t, 'workspace:w', 10_000)]);
      for (let i = 0; i < 60; i++) {
        const r = await a.reserve(reserveCmd(t, { tenant: t, workspace: 'w' }, 10, undefined, { ttl_ms: 1, grace_period_ms: 0 }));
        assert.equal(r.status, 200);
      }
      await new Promise((r) => setTimeout(r, 30));
      const counts = await Promise.all([a, b, c, a, b, c].map((s) => s.expireDue(7)));
      let total = counts.reduce((x, y) => x + y, 0);
      while (total < 60) {
        const more = await Promise.all([a, b, c].map((s) => s.expireDue(50)));
        const n = more.reduce((x, y) => x + y, 0);
        assert.ok(n > 0, `stuck at ${total} expired`);
        total += n;
      }
      assert.equal(total, 60, 'every reservation expired once in all');
      for (const s of [a, b, c]) assert.equal(await s.expireDue(100), 0);
      const events = await a.listEvents({ tenantId: t, eventType: 'reservation.expired', sortBy: 'timestamp', sortDir: 'asc', limit: 500 });
      assert.equal(events.rows.length, 60, 'one reservation.expired event each');
      for (const bud of await all(a, t)) assert.equal(bud.reserved, 0);
    });
  });
}
