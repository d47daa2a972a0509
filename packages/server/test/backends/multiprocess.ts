/**
 * Several `cycles serve` processes on one shared store: the scale-out claim, tested.
 *
 * Three processes share one backend slice. Many concurrent clients, spread over the processes,
 * hammer a scope tree whose tightest budget fits exactly N reservations:
 * - exactly N reserves succeed across all processes, every other one is 409 BUDGET_EXCEEDED;
 * - a reserve sent to two processes at once with one idempotency key makes one reservation;
 * - each reservation is then committed (same key, on two processes at once) while a release
 *   races it on the third: exactly one settlement wins, the twin commit answers the same bytes,
 *   the loser gets 409 RESERVATION_FINALIZED, so nothing is settled twice;
 * - short-TTL reservations are expired by the three sweepers together, each exactly once;
 * - at the end every budget's ledger is exact: spent = sum of the committed charges, reserved
 *   0, remaining = allocated - spent.
 * Backend-generic: the caller passes the environment that points every process at the slice.
 */
import assert from 'node:assert/strict';
import { idem, show, type Client, type Res } from '../support/http.js';
import { provision, removeDir, scopeOf, serverEntry, spawnServer, tempDir, type ChildServer } from '../support/server.js';

const PROCESSES = 3;
/** Reservations the tightest budget fits. */
const N = 40;
const AMOUNT = 25;
/** Reserve attempts in all (several times N), and how many are in flight at once. */
const ATTEMPTS = 160;
const CONCURRENCY = 48;
const EXPIRING = 12;

async function pool<T>(items: readonly T[], width: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

export interface MultiProcessOptions {
  /** Environment selecting the shared store slice (CYCLES_STORE, its URL, its schema / prefix). */
  env: Record<string, string>;
}

export async function runMultiProcess(opts: MultiProcessOptions): Promise<void> {
  const entry = serverEntry();
  const dirs: string[] = [];
  const servers: ChildServer[] = [];
  try {
    for (let i = 0; i < PROCESSES; i++) {
      const dir = await tempDir('cycles-mp-');
      dirs.push(dir);
      // One at a time: the first start migrates the shared store, the others find it current.
      servers.push(await spawnServer({ entry, dataDir: dir, env: { ...opts.env, CYCLES_SWEEP_INTERVAL_MS: '50', LOG_LEVEL: 'error' } }));
    }
    const clients = servers.map((s) => s.client);
    const at = (i: number): Client => clients[i % clients.length]!;

    // A tree whose workspace budget fits exactly N holds; the root and the agents have room to spare,
    // so every reservation locks three scope rows and all of them share the root and workspace rows.
    const tenant = `mp-${idem('t').slice(2, 12).toLowerCase()}`;
    const agents = ['a1', 'a2', 'a3', 'a4'];
    const key = await provision(clients[0]!, tenant, [
      { at: '', allocated: N * AMOUNT * 3 },
      { at: 'workspace:w', allocated: N * AMOUNT },
      ...agents.map((a) => ({ at: `workspace:w/agent:${a}`, allocated: N * AMOUNT })),
    ]);
    const subject = (i: number) => ({ tenant, workspace: 'w', agent: agents[i % agents.length]! });
    const reserveBody = (i: number, k: string, extra: Record<string, unknown> = {}) => ({
      idempotency_key: k,
      subject: subject(i),
      action: { kind: 'llm.completion', name: 'mp' },
      estimate: { unit: 'TOKENS', amount: AMOUNT },
      ttl_ms: 60_000,
      ...extra,
    });

    // 1. Hammer: ATTEMPTS reserves over all processes; every 8th is sent to two processes with one key.
    const won = new Map<string, { i: number; body: string }>();
    const outcomes: Record<string, number> = {};
    await pool(
      Array.from({ length: ATTEMPTS }, (_, i) => i),
      CONCURRENCY,
      async (i) => {
        const k = idem(`mp${i}`);
        const twin = i % 8 === 0;
        const [a, b] = await Promise.all([
          at(i).post('/v1/reservations', reserveBody(i, k), { apiKey: key }),
          twin ? at(i + 1).post('/v1/reservations', reserveBody(i, k), { apiKey: key }) : Promise.resolve(undefined),
        ]);
        const tally = (r: Res) => (outcomes[r.status === 200 ? 'ALLOW' : `${r.status} ${String(r.body?.error)}`] = (outcomes[r.status === 200 ? 'ALLOW' : `${r.status} ${String(r.body?.error)}`] ?? 0) + 1);
        tally(a);
        if (a.status === 200) {
          assert.equal(a.body.decision, 'ALLOW', show(a));
          assert.ok(!won.has(a.body.reservation_id), `reservation ${String(a.body.reservation_id)} returned twice`);
          won.set(a.body.reservation_id, { i, body: a.text });
        } else {
          assert.equal(a.status, 409, `reserve ${i}: ${show(a)}`);
          assert.equal(a.body.error, 'BUDGET_EXCEEDED', `reserve ${i}: ${show(a)}`);
        }
        if (b) {
          // The twin either replays the same reservation or (if the first was refused) is refused too.
          if (a.status === 200) {
            assert.equal(b.status, 200, `twin of reserve ${i} must replay it: ${show(b)}`);
            assert.equal(b.body.reservation_id, a.body.reservation_id, `twin of reserve ${i} made a second reservation`);
          } else if (b.status === 200) {
            assert.ok(!won.has(b.body.reservation_id), 'twin reservation returned twice');
            won.set(b.body.reservation_id, { i, body: b.text });
          } else {
            assert.equal(b.body.error, 'BUDGET_EXCEEDED', show(b));
          }
        }
      },
    );
    assert.equal(won.size, N, `exactly ${N} reservations must fit, got ${won.size} (${JSON.stringify(outcomes)})`);

    const ws = scopeOf(tenant, 'workspace:w');
    const balance = async (scope: string) => {
      const q = new URLSearchParams({ tenant_id: tenant, scope, unit: 'TOKENS' });
      const r = await clients[2]!.get(`/v1/admin/budgets/lookup?${q.toString()}`, { admin: true });
      assert.equal(r.status, 200, show(r));
      return r.body as { allocated: { amount: number }; reserved: { amount: number }; spent: { amount: number }; remaining: { amount: number }; debt: { amount: number } };
    };
    const full = await balance(ws);
    assert.equal(full.reserved.amount, N * AMOUNT, 'workspace holds exactly N reservations');
    assert.equal(full.remaining.amount, 0);

    // 2. Settle: commit (same key on two processes) races a release on the third.
    let committed = 0;
    let spent = 0;
    const ids = [...won.keys()];
    await pool(ids, CONCURRENCY / 3, async (id, j) => {
      const actual = AMOUNT - (j % 5);
      const commitBody = { idempotency_key: idem('c'), actual: { unit: 'TOKENS', amount: actual } };
      const releaseBody = { idempotency_key: idem('r'), reason: 'race' };
      const [c1, c2, rel] = await Promise.all([
        at(j).post(`/v1/reservations/${id}/commit`, commitBody, { apiKey: key }),
        at(j + 1).post(`/v1/reservations/${id}/commit`, commitBody, { apiKey: key }),
        at(j + 2).post(`/v1/reservations/${id}/release`, releaseBody, { apiKey: key }),
      ]);
      assert.equal(c1.status, c2.status, `twin commits of ${id} answered differently: ${show(c1)} / ${show(c2)}`);
      if (c1.status === 200) {
        assert.equal(c1.text, c2.text, `twin commits of ${id} must answer the same bytes`);
        assert.equal(rel.status, 409, `release after a commit of ${id}: ${show(rel)}`);
        assert.equal(rel.body.error, 'RESERVATION_FINALIZED', show(rel));
        committed++;
        spent += c1.body.charged.amount as number;
      } else {
        assert.equal(rel.status, 200, `either the commit or the release of ${id} must win: ${show(c1)} / ${show(rel)}`);
        assert.equal(c1.body.error, 'RESERVATION_FINALIZED', show(c1));
      }
    });
    for (const id of ids) {
      const r = await at(0).get(`/v1/reservations/${id}`, { apiKey: key });
      assert.equal(r.status, 200, show(r));
      assert.ok(r.body.status === 'COMMITTED' || r.body.status === 'RELEASED', `${id} is ${String(r.body.status)}`);
    }

    // 3. Expiry by three sweepers at once: each hold comes back exactly once. These holds are of 1
    // token: how much of the workspace is left depends on how the commit/release races above went
    // (at least N * AMOUNT - sum of the largest charges = 80 tokens), so full-size holds might not fit.
    const expiring: string[] = [];
    await pool(
      Array.from({ length: EXPIRING }, (_, i) => i),
      EXPIRING,
      async (i) => {
        const r = await at(i).post('/v1/reservations', reserveBody(i, idem('e'), { ttl_ms: 1000, grace_period_ms: 0, estimate: { unit: 'TOKENS', amount: 1 } }), { apiKey: key });
        assert.equal(r.status, 200, show(r));
        expiring.push(r.body.reservation_id as string);
      },
    );
    const deadline = Date.now() + 20_000;
    for (;;) {
      const list = await at(1).get(`/v1/reservations?tenant=${tenant}&status=EXPIRED&limit=100`, { apiKey: key });
      assert.equal(list.status, 200, show(list));
      const expired = new Set((list.body.reservations as Array<{ reservation_id: string }>).map((r) => r.reservation_id));
      if (expiring.every((id) => expired.has(id))) break;
      assert.ok(Date.now() < deadline, `sweepers did not expire all ${EXPIRING} reservations in time (${expired.size} expired)`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const events = await at(2).get(`/v1/admin/events?tenant_id=${tenant}&event_type=reservation.expired&limit=100`, { admin: true });
    if (events.status === 200 && Array.isArray(events.body.events)) {
      const perReservation = new Map<string, number>();
      for (const e of events.body.events as Array<{ data?: { reservation_id?: string } }>) {
        const id = e.data?.reservation_id ?? '';
        perReservation.set(id, (perReservation.get(id) ?? 0) + 1);
      }
      for (const id of expiring) assert.equal(perReservation.get(id), 1, `${id} must be expired exactly once, got ${perReservation.get(id) ?? 0} events`);
    }

    // 4. The ledger is exact on every scope of the path.
    for (const scope of [scopeOf(tenant, ''), ws]) {
      const b = await balance(scope);
      assert.equal(b.reserved.amount, 0, `${scope}: nothing may stay held`);
      assert.equal(b.debt.amount, 0, `${scope}: no debt`);
      assert.equal(b.spent.amount, spent, `${scope}: spent must be the sum of the ${committed} committed charges`);
      assert.equal(b.remaining.amount, b.allocated.amount - spent, `${scope}: remaining = allocated - spent`);
    }
    let agentSpent = 0;
    for (const a of agents) {
      const b = await balance(scopeOf(tenant, `workspace:w/agent:${a}`));
      assert.equal(b.reserved.amount, 0);
      agentSpent += b.spent.amount;
    }
    assert.equal(agentSpent, spent, 'the leaves add up to the workspace');
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    for (const d of dirs) await removeDir(d);
  }
}
