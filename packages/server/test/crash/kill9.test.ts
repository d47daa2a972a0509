/**
 * An acknowledged mutation survives kill -9.
 *
 * The real server runs as a child process (`cycles serve`, the compiled CLI; built first when
 * dist is stale). Concurrent reserve / commit / release / extend traffic runs against it and
 * every response the client saw acknowledged (200) is recorded; the process is SIGKILLed in
 * the middle of the load and restarted on the same data dir. Then:
 *  - every acknowledged reservation exists with its acknowledged amount and state (COMMITTED
 *    with the acknowledged charge, RELEASED, or still ACTIVE when nothing else was attempted),
 *    and acknowledged extensions kept their expiry;
 *  - the ledger rules hold at every scope (remaining = allocated - spent - reserved - debt,
 *    reserved = sum of ACTIVE holds, spent + debt = sum of committed charges);
 *  - replaying an acknowledged request with its idempotency key returns the same body and
 *    changes no balance; retrying the requests that were in flight at the kill (same key)
 *    converges to a consistent ledger.
 * Once with the default CYCLES_SQLITE_SYNC=normal (two kill/restart cycles) and once with
 * CYCLES_SQLITE_SYNC=full (one smaller cycle).
 *
 * Spec: core invariants (RT:L58: no double charge, atomic reserve), idempotency replay
 * (RT:L178), ledger invariant (RT:L1261); digest §0, §6, §8.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client, idem, show, uid, type Json, type Res } from '../support/http.js';
import { checkLedger, snapshot } from '../support/ledger.js';
import { provision, removeDir, serverEntry, spawnServer, tempDir, type ChildServer, type ServerEntry } from '../support/server.js';

const SEED = Number(process.env.CRASH_SEED ?? Date.now() % 1_000_000);

/** Small seeded PRNG (mulberry32) so a failing traffic mix can be rerun with CRASH_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Policy = 'REJECT' | 'ALLOW_IF_AVAILABLE' | 'ALLOW_WITH_OVERDRAFT';
const POLICIES: Policy[] = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'];
const LEAVES = [
  { workspace: 'w1', agent: 'a1' },
  { workspace: 'w1', agent: 'a2' },
  { workspace: 'w2', agent: 'a3' },
  { workspace: 'w2', agent: 'a4' },
];
const ACTION = { kind: 'llm.completion', name: 'crash-model' };

interface Sent {
  endpoint: 'reserve' | 'commit' | 'release' | 'extend';
  path: string;
  body: Record<string, unknown>;
  /** Response text when acknowledged (HTTP 200). */
  ack?: string;
  /** HTTP status of the response, when one arrived. */
  status?: number;
  /** The request got no response (connection lost at the kill). */
  lost?: boolean;
  /** When it was sent (to tell requests in flight at the kill from ones refused after it). */
  startedAt?: number;
  seq: number;
}

interface Tracked {
  id: string;
  estimate: number;
  reserve: Sent;
  commit?: Sent;
  release?: Sent;
  extends: Sent[];
}

class Traffic {
  readonly reservations = new Map<string, Tracked>();
  /** Reserve requests whose response was lost (no reservation id known). */
  readonly lostReserves: Sent[] = [];
  readonly unexpected: string[] = [];
  seq = 0;
  acks = 0;
  /** Requests sent before the kill that never got a response. */
  lostInFlight = 0;
  killedAt = Infinity;
  stopped = false;

  constructor(
    readonly tenant: string,
    readonly key: string,
    readonly random: () => number,
  ) {}

  /** Sends one request; returns undefined when the connection was lost. */
  async send(client: Client, s: Sent): Promise<Res | undefined> {
    s.startedAt = Date.now();
    try {
      const res = await client.post(s.path, s.body, { apiKey: this.key, timeoutMs: 10_000 });
      s.status = res.status;
      if (res.status === 200) {
        s.ack = res.text;
        this.acks++;
      }
      return res;
    } catch {
      s.lost = true;
      if (s.startedAt < this.killedAt) this.lostInFlight++;
      return undefined;
    }
  }

  expectStatus(s: Sent, res: Res, allowed: Array<[number, string]>): void {
    if (res.status === 200) return;
    if (!allowed.some(([st, code]) => st === res.status && res.body?.error === code)) this.unexpected.push(`${s.endpoint} ${JSON.stringify(s.body)} -> ${show(res)}`);
  }

  /** One reserve; returns the tracked reservation, null when refused, undefined when the connection was lost. */
  async reserveOnce(client: Client): Promise<Tracked | null | undefined> {
    const r = this.random;
    const leaf = LEAVES[Math.floor(r() * LEAVES.length)]!;
    const estimate = 1 + Math.floor(r() * 1000);
    const policy = POLICIES[Math.floor(r() * POLICIES.length)]!;
    const reserve: Sent = {
      endpoint: 'reserve',
      path: '/v1/reservations',
      body: { idempotency_key: idem('rsv'), subject: { tenant: this.tenant, ...leaf }, action: ACTION, estimate: { unit: 'TOKENS', amount: estimate }, overage_policy: policy, ttl_ms: 600_000 },
      seq: this.seq++,
    };
    const res = await this.send(client, reserve);
    if (!res) {
      this.lostReserves.push(reserve);
      return undefined;
    }
    if (res.status !== 200) {
      this.expectStatus(reserve, res, [[409, 'BUDGET_EXCEEDED'], [409, 'OVERDRAFT_LIMIT_EXCEEDED'], [409, 'DEBT_OUTSTANDING']]);
      return null;
    }
    const id = res.body.reservation_id as string;
    const t: Tracked = { id, estimate, reserve, extends: [] };
    this.reservations.set(id, t);
    return t;
  }

  async worker(client: Client): Promise<void> {
    const r = this.random;
    while (!this.stopped) {
      const t = await this.reserveOnce(client);
      if (t === undefined) return;
      if (t === null) continue;
      const { id, estimate } = t;
      const dice = r();
      if (dice < 0.15) {
        const ext: Sent = { endpoint: 'extend', path: `/v1/reservations/${id}/extend`, body: { idempotency_key: idem('ext'), extend_by_ms: 1000 + Math.floor(r() * 60_000) }, seq: this.seq++ };
        t.extends.push(ext);
        const e = await this.send(client, ext);
        if (!e) return;
        this.expectStatus(ext, e, []);
      }
      if (dice < 0.6) {
        const actual = Math.floor(estimate * r() * 1.5);
        t.commit = { endpoint: 'commit', path: `/v1/reservations/${id}/commit`, body: { idempotency_key: idem('cmt'), actual: { unit: 'TOKENS', amount: actual } }, seq: this.seq++ };
        const c = await this.send(client, t.commit);
        if (!c) return;
        this.expectStatus(t.commit, c, [[409, 'BUDGET_EXCEEDED'], [409, 'OVERDRAFT_LIMIT_EXCEEDED']]);
      } else if (dice < 0.9) {
        t.release = { endpoint: 'release', path: `/v1/reservations/${id}/release`, body: { idempotency_key: idem('rel') }, seq: this.seq++ };
        const c = await this.send(client, t.release);
        if (!c) return;
        this.expectStatus(t.release, c, []);
      }
      // else: left ACTIVE
    }
  }
}

const withoutTtl = (text: string): Json => {
  const o = JSON.parse(text) as Json;
  delete o.remaining_ttl_ms;
  return o;
};

/** Runs requests with bounded concurrency. */
async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Every acknowledged outcome is present after the restart. */
async function verifyAcknowledged(server: ChildServer, traffic: Traffic): Promise<string[]> {
  const problems: string[] = [];
  await pool([...traffic.reservations.values()], 16, async (t) => {
    const g = await server.client.get(`/v1/reservations/${t.id}`, { apiKey: traffic.key });
    if (g.status !== 200) {
      problems.push(`acknowledged reservation ${t.id} (reserve acked: ${t.reserve.ack}) -> ${show(g)} after restart`);
      return;
    }
    const d = g.body as Json;
    if (d.reserved?.amount !== t.estimate) problems.push(`reservation ${t.id}: reserved ${JSON.stringify(d.reserved)} != acknowledged ${t.estimate}`);
    const ackedCommit = t.commit?.ack;
    const ackedRelease = t.release?.ack;
    if (ackedCommit) {
      const charged = JSON.parse(ackedCommit).charged.amount as number;
      if (d.status !== 'COMMITTED' || d.committed?.amount !== charged) {
        problems.push(`reservation ${t.id}: commit acknowledged with charged ${charged} (${ackedCommit}) but after restart status ${d.status}, committed ${JSON.stringify(d.committed)}`);
      }
    } else if (ackedRelease) {
      if (d.status !== 'RELEASED') problems.push(`reservation ${t.id}: release acknowledged but after restart status is ${d.status}`);
    } else {
      // Not acknowledged: the state may only reflect a request that was actually sent.
      const allowed = ['ACTIVE'];
      if (t.commit && t.commit.status === undefined) allowed.push('COMMITTED');
      if (t.release && t.release.status === undefined) allowed.push('RELEASED');
      if (!allowed.includes(d.status)) problems.push(`reservation ${t.id}: status ${d.status}, but only ${allowed.join('/')} is possible from what was sent`);
    }
    const ackedExpiry = Math.max(JSON.parse(t.reserve.ack!).expires_at_ms as number, ...t.extends.filter((e) => e.ack).map((e) => JSON.parse(e.ack!).expires_at_ms as number));
    if (d.expires_at_ms < ackedExpiry) problems.push(`reservation ${t.id}: expires_at_ms ${d.expires_at_ms} < acknowledged ${ackedExpiry}`);
    if (!t.extends.some((e) => e.lost) && d.expires_at_ms !== ackedExpiry) problems.push(`reservation ${t.id}: expires_at_ms ${d.expires_at_ms} != acknowledged ${ackedExpiry}`);
  });
  return problems;
}

/** Every acknowledged request replays to the same body (remaining_ttl_ms is recomputed by design). */
async function verifyReplays(server: ChildServer, traffic: Traffic): Promise<string[]> {
  const problems: string[] = [];
  const sent: Sent[] = [];
  for (const t of traffic.reservations.values()) sent.push(...[t.reserve, t.commit, t.release, ...t.extends].filter((s): s is Sent => s?.ack !== undefined));
  await pool(sent, 16, async (s) => {
    const res = await server.client.post(s.path, s.body, { apiKey: traffic.key });
    if (res.status !== 200) {
      problems.push(`replay of acknowledged ${s.endpoint} ${JSON.stringify(s.body)} -> ${show(res)}; originally ${s.ack}`);
      return;
    }
    if (s.endpoint === 'reserve' || s.endpoint === 'extend') {
      if (JSON.stringify(withoutTtl(res.text)) !== JSON.stringify(withoutTtl(s.ack!))) problems.push(`replay of ${s.endpoint} differs:\n    original ${s.ack}\n    replay   ${res.text}`);
    } else if (res.text !== s.ack) {
      problems.push(`replay of ${s.endpoint} differs:\n    original ${s.ack}\n    replay   ${res.text}`);
    }
  });
  return problems;
}

/** Requests in flight at the kill are retried with the same key, as a client would. */
async function retryLost(server: ChildServer, traffic: Traffic): Promise<string[]> {
  const problems: string[] = [];
  const lost: Sent[] = [...traffic.lostReserves];
  for (const t of traffic.reservations.values()) lost.push(...[t.commit, t.release, ...t.extends].filter((s): s is Sent => s?.lost === true));
  await pool(lost, 16, async (s) => {
    const res = await server.client.post(s.path, s.body, { apiKey: traffic.key });
    s.lost = false;
    s.status = res.status;
    if (res.status === 200) {
      s.ack = res.text;
      if (s.endpoint === 'reserve') {
        const id = res.body.reservation_id as string;
        if (!traffic.reservations.has(id)) traffic.reservations.set(id, { id, estimate: (s.body.estimate as { amount: number }).amount, reserve: s, extends: [] });
      }
      return;
    }
    const ok = ['BUDGET_EXCEEDED', 'OVERDRAFT_LIMIT_EXCEEDED', 'DEBT_OUTSTANDING'].includes(res.body?.error) && res.status === 409;
    if (!ok) problems.push(`retry of in-flight ${s.endpoint} ${JSON.stringify(s.body)} -> ${show(res)}`);
  });
  return problems;
}

async function checkLedgerOver(server: ChildServer, traffic: Traffic, label: string): Promise<string> {
  const s = await snapshot(server.client, traffic.key, traffic.tenant);
  const problems = checkLedger(s, { reservationsOnly: true });
  const listed = new Set(s.reservations.map((r) => r.reservation_id));
  for (const id of traffic.reservations.keys()) if (!listed.has(id)) problems.push(`acknowledged reservation ${id} missing from GET /v1/reservations`);
  assert.deepEqual(problems, [], `${label}: ledger rules violated after restart (CRASH_SEED=${SEED})`);
  return s.balancesText;
}

interface Scenario {
  sync: 'normal' | 'full';
  cycles: number;
  workers: number;
  loadMs: number;
}

let entry: ServerEntry;
const dirs: string[] = [];
const children: ChildServer[] = [];

before(() => {
  entry = serverEntry();
});
after(async () => {
  for (const c of children) await c.kill9().catch(() => undefined);
  for (const d of dirs) await removeDir(d);
});

async function scenario(sc: Scenario): Promise<void> {
  const dataDir = await tempDir('cycles-crash-');
  dirs.push(dataDir);
  const env = { CYCLES_SQLITE_SYNC: sc.sync };
  let server = await spawnServer({ entry, dataDir, env });
  children.push(server);
  const tenant = uid('crash');
  const key = await provision(server.client, tenant, [
    { at: '', allocated: 50_000_000 },
    { at: 'workspace:w1', allocated: 20_000_000 },
    { at: 'workspace:w2', allocated: 20_000_000, overdraft: 50_000 },
    { at: 'workspace:w1/agent:a1', allocated: 5_000_000 },
    // Tight budgets so refusals, capped overage and overdraft debt happen under load.
    { at: 'workspace:w2/agent:a3', allocated: 40_000, overdraft: 20_000 },
    { at: 'workspace:w2/agent:a4', allocated: 25_000 },
  ]);
  const traffic = new Traffic(tenant, key, rng(SEED + (sc.sync === 'full' ? 1 : 0)));
  const ctx = () => `(sync=${sc.sync}, entry ${entry.description}, CRASH_SEED=${SEED})`;

  for (let cycle = 0; cycle < sc.cycles; cycle++) {
    traffic.stopped = false;
    const acksBefore = traffic.acks;
    const lostBefore = traffic.lostInFlight;
    traffic.killedAt = Infinity;
    const workers = Array.from({ length: sc.workers }, () => traffic.worker(server.client));
    await new Promise((r) => setTimeout(r, sc.loadMs));
    // Mid-load: the workers are still sending, and a burst of reserves has just been dispatched
    // (some are being applied, some not yet read) when the process dies.
    const burst = Array.from({ length: 24 }, () => traffic.reserveOnce(server.client));
    await new Promise((r) => setTimeout(r, 3));
    traffic.killedAt = Date.now();
    await server.kill9();
    traffic.stopped = true;
    await Promise.all([...workers, ...burst]);
    const acked = traffic.acks - acksBefore;
    assert.ok(acked >= 50, `cycle ${cycle}: only ${acked} acknowledged requests before the kill ${ctx()}`);
    console.log(`crash cycle ${cycle} (sync=${sc.sync}, ${entry.description}): acks ${acked}, lost in flight ${traffic.lostInFlight - lostBefore}, lost reserves ${traffic.lostReserves.length}, unexpected ${traffic.unexpected.length}`);
    assert.ok(traffic.lostInFlight > lostBefore, `cycle ${cycle}: no request was in flight at the kill, so it was not mid-load ${ctx()}`);
    assert.deepEqual(traffic.unexpected, [], `unexpected responses under load ${ctx()}`);

    server = await spawnServer({ entry, dataDir, env });
    children.push(server);
    assert.deepEqual(await verifyAcknowledged(server, traffic), [], `cycle ${cycle}: acknowledged state lost or changed by kill -9 ${ctx()}\nserver output:\n${server.output()}`);
    const before = await checkLedgerOver(server, traffic, `cycle ${cycle}`);
    assert.deepEqual(await verifyReplays(server, traffic), [], `cycle ${cycle}: replays after restart ${ctx()}`);
    const afterReplays = await checkLedgerOver(server, traffic, `cycle ${cycle} after replays`);
    assert.equal(afterReplays, before, `cycle ${cycle}: replaying acknowledged requests changed balances ${ctx()}`);
    assert.deepEqual(await retryLost(server, traffic), [], `cycle ${cycle}: retries of in-flight requests ${ctx()}`);
    await checkLedgerOver(server, traffic, `cycle ${cycle} after retries`);
  }
  await server.stop();
}

describe('kill -9 mid-load: acknowledged mutations survive', () => {
  test('CYCLES_SQLITE_SYNC=normal, two kill/restart cycles', { timeout: 120_000 }, async () => {
    await scenario({ sync: 'normal', cycles: 2, workers: 12, loadMs: 1500 });
  });

  test('CYCLES_SQLITE_SYNC=full, one smaller cycle', { timeout: 120_000 }, async () => {
    await scenario({ sync: 'full', cycles: 1, workers: 6, loadMs: 1000 });
  });
});
