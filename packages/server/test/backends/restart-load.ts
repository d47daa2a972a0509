/**
 * The store (Redis, PostgreSQL) crashed and restarted under the server while concurrent clients
 * reserve, commit and release (redis-restart.test.ts, postgres-restart.test.ts). The Cycles
 * server runs in-process and is never restarted. Every client retries a request that failed (503
 * or no response) with the same idempotency key until it gets a definitive answer, as a real
 * client does, and every response is recorded. Shown:
 *  - while the store is down, every request answers 503 fast (< FAST_MS) with the ErrorResponse
 *    (INTERNAL_ERROR, a message naming the store, request_id = X-Request-Id, trace_id,
 *    Retry-After), and /readyz is 503 DOWN;
 *  - once the store is back, requests succeed again and /readyz is 200 within RECOVERY_MS, by
 *    itself;
 *  - every acknowledged reservation exists with its amount, every acknowledged commit is COMMITTED
 *    with its charge, every acknowledged release is RELEASED, the rest is still ACTIVE; each reserve
 *    key made exactly one reservation (retries of in-doubt requests were applied at most once);
 *  - the ledger is exact at every scope: reserved = Σ ACTIVE holds, spent = Σ committed charges,
 *    remaining = allocated − reserved − spent − debt, both from the server's reservations
 *    (checkLedger) and from what the clients were told (nothing partial was written).
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { idem, show, sleep, uid, type Client, type Res } from '../support/http.js';
import { checkLedger, snapshot } from '../support/ledger.js';
import { provision, scopeOf, startInProcess, type BudgetSpec } from '../support/server.js';

/** A 503 while the store is down must come at least this fast (the machine may be busy). */
const FAST_MS = 3_000;
/** From the store accepting connections again to the first success and to readiness UP. */
const RECOVERY_MS = 15_000;
/** How long the store stays down under load. */
const DOWN_MS = 2_000;
const WORKERS = 24;
/** A client gives up on one request after retrying this long (only on a broken server). */
const GIVE_UP_MS = 30_000;

export interface StoreUnderTest {
  kind: 'redis' | 'postgres';
  /** startServer config selecting this store. */
  config: Record<string, unknown>;
  /** Crashes the store; resolves once none of its processes runs any more. */
  crash(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  restart(): Promise<void>;
}

const BUDGETS: BudgetSpec[] = [
  { at: '', allocated: 1_000_000_000 },
  { at: 'workspace:w1', allocated: 300_000_000 },
  { at: 'workspace:w2', allocated: 300_000_000 },
  { at: 'workspace:w1/agent:a1', allocated: 100_000_000 },
];
// w3 has no budget of its own, a2 and a3 none either: holds land only on the scopes above them.
const LEAVES = [{ workspace: 'w1', agent: 'a1' }, { workspace: 'w1', agent: 'a2' }, { workspace: 'w2', agent: 'a3' }, { workspace: 'w3' }];
const ACTION = { kind: 'llm.completion', name: 'restart-model' };

interface Attempt {
  start: number;
  end: number;
  /** Undefined when no response came. */
  status: number | undefined;
}

interface Op {
  label: string;
  path: string;
  body: Record<string, unknown>;
  attempts: Attempt[];
  /** The 2xx response, once one came. */
  ack?: Res;
}

interface Flow {
  estimate: number;
  /** Subject path (tenant:t/workspace:w1/agent:a1): the flow holds on every budgeted scope along it. */
  path: string;
  reserve: Op;
  id?: string;
  settle?: { kind: 'commit' | 'release'; op: Op; actual?: number };
}

class Load {
  readonly flows: Flow[] = [];
  readonly problems: string[] = [];
  stopped = false;
  /** Set when the scenario failed: clients stop retrying at once. */
  aborted = false;
  downFrom = Infinity;
  downUntil = -Infinity;
  upAt = Infinity;
  firstAckAfterUp: number | undefined;
  unavailable = 0;
  slowestUnavailableMs = 0;
  messages = new Set<string>();

  constructor(
    readonly client: Client,
    readonly key: string,
    readonly tenant: string,
  ) {}

  acked(): number {
    return this.flows.filter((f) => f.reserve.ack).length;
  }

  attempts(): Attempt[] {
    return this.flows.flatMap((f) => [...f.reserve.attempts, ...(f.settle?.op.attempts ?? [])]);
  }

  /** The ErrorResponse of a store outage, as the SQLite store-failure test expects it too. */
  private checkUnavailable(op: Op, res: Res, tookMs: number): void {
    this.unavailable++;
    this.slowestUnavailableMs = Math.max(this.slowestUnavailableMs, tookMs);
    const b = res.body;
    const wrong: string[] = [];
    if (b?.error !== 'INTERNAL_ERROR') wrong.push('error is not INTERNAL_ERROR');
    if (typeof b?.message !== 'string' || !/\bstore\b/i.test(b.message)) wrong.push('message does not name the store');
    else this.messages.add(b.message.replace(/\d+/g, 'N').slice(0, 120));
    if (typeof b?.request_id !== 'string' || b.request_id !== res.headers.get('x-request-id')) wrong.push('request_id missing or not the X-Request-Id');
    if (typeof b?.trace_id !== 'string' || !/^[0-9a-f]{32}$/.test(b.trace_id)) wrong.push('trace_id missing');
    if (!/^\d+$/.test(res.headers.get('retry-after') ?? '')) wrong.push('no Retry-After');
    if (tookMs >= FAST_MS) wrong.push(`took ${tookMs} ms`);
    if (wrong.length > 0) this.problems.push(`${op.label}: 503 with ${wrong.join(', ')}: ${show(res)}`);
  }

  /** Sends `op` until it is answered 2xx, retrying 503s and lost responses with the same body (same idempotency key). */
  async send(op: Op): Promise<void> {
    const first = Date.now();
    for (;;) {
      const a: Attempt = { start: Date.now(), end: 0, status: undefined };
      op.attempts.push(a);
      let res: Res | undefined;
      try {
        res = await this.client.post(op.path, op.body, { apiKey: this.key, timeoutMs: 10_000 });
      } catch (e) {
        // The server itself never goes away in this test: no response means it hung or dropped the request.
        this.problems.push(`${op.label}: no response (${String(e)})`);
      }
      a.end = Date.now();
      a.status = res?.status;
      if (res && res.status >= 200 && res.status < 300) {
        op.ack = res;
        if (a.start >= this.upAt && (this.firstAckAfterUp === undefined || a.end < this.firstAckAfterUp)) this.firstAckAfterUp = a.end;
        return;
      }
      if (res && res.status !== 503) {
        this.problems.push(`${op.label}: ${show(res)}`);
        return;
      }
      if (res) this.checkUnavailable(op, res, a.end - a.start);
      if (this.aborted) return;
      if (Date.now() - first > GIVE_UP_MS) {
        this.problems.push(`${op.label}: still failing after ${GIVE_UP_MS} ms of retries`);
        return;
      }
      // A well-behaved client: jittered exponential backoff from 100 ms, at most the Retry-After the
      // server asked for (so 24 clients do not turn the outage into a CPU storm on a 2-core machine).
      const cap = 1000 * (Number(res?.headers.get('retry-after')) || 1);
      await sleep(Math.min(cap, 100 * 2 ** (op.attempts.length - 1)) * (0.5 + Math.random() / 2));
    }
  }

  async worker(): Promise<void> {
    while (!this.stopped && !this.aborted) {
      const leaf = LEAVES[Math.floor(Math.random() * LEAVES.length)]!;
      const estimate = 1 + Math.floor(Math.random() * 1000);
      const key = idem('rsv');
      const subject = { tenant: this.tenant, ...leaf };
      const flow: Flow = {
        estimate,
        path: [`tenant:${this.tenant}`, `workspace:${leaf.workspace}`, ...('agent' in leaf ? [`agent:${leaf.agent}`] : [])].join('/'),
        reserve: { label: `reserve ${key}`, path: '/v1/reservations', body: { idempotency_key: key, subject, action: ACTION, estimate: { unit: 'TOKENS', amount: estimate }, ttl_ms: 600_000 }, attempts: [] },
      };
      this.flows.push(flow);
      await this.send(flow.reserve);
      const ack = flow.reserve.ack;
      if (!ack) continue;
      flow.id = ack.body.reservation_id as string;
      const roll = Math.random();
      if (roll >= 0.8) continue; // left ACTIVE
      const kind = roll < 0.45 ? 'commit' : 'release';
      const opKey = idem(kind);
      const actual = kind === 'commit' ? Math.floor(Math.random() * (estimate + 1)) : undefined;
      const body: Record<string, unknown> = kind === 'commit' ? { idempotency_key: opKey, actual: { unit: 'TOKENS', amount: actual } } : { idempotency_key: opKey };
      flow.settle = { kind, actual, op: { label: `${kind} ${flow.id}`, path: `/v1/reservations/${flow.id}/${kind}`, body, attempts: [] } };
      await this.send(flow.settle.op);
    }
  }
}

async function timed(f: () => Promise<Res>): Promise<[Res, number]> {
  const t0 = Date.now();
  const r = await f();
  return [r, Date.now() - t0];
}

export async function storeRestartUnderLoad(t: TestContext, store: StoreUnderTest): Promise<void> {
  // Abuse limits are not under test: a fast-retrying client must not meet a 429.
  const server = await startInProcess({ ...store.config, rateLimitPerIp: 0, rateLimitPerKey: 0, authFailureLimit: 0 });
  const c = server.client;
  try {
    const tenant = uid('restart');
    const key = await provision(c, tenant, BUDGETS);
    const load = new Load(c, key, tenant);
    const workers = Array.from({ length: WORKERS }, () => load.worker());
    const timings: Record<string, number> = {};
    try {
      // Crash once enough is in flight (by progress, not wall time: the machine may be slow), at a random moment.
      const loadDeadline = Date.now() + 20_000;
      while (load.acked() < 150 && Date.now() < loadDeadline) await sleep(20);
      assert.ok(load.acked() >= 50, `only ${load.acked()} reservations acknowledged before the crash`);
      await sleep(Math.floor(Math.random() * 200));
      timings.ackedBeforeCrash = load.acked();

      await store.crash();
      load.downFrom = Date.now();
      await sleep(300);
      for (let check = 0; check < 2; check++) {
        const [ready, took] = await timed(() => c.get('/readyz'));
        assert.equal(ready.status, 503, `/readyz while ${store.kind} is down: ${show(ready)}`);
        assert.equal(ready.body.status, 'DOWN');
        assert.equal(ready.body.store, store.kind);
        assert.ok(took < FAST_MS, `/readyz took ${took} ms while the store is down`);
        if (check === 0) await sleep(Math.max(0, load.downFrom + DOWN_MS - Date.now()));
      }
      load.downUntil = Date.now();

      await store.restart();
      load.upAt = Date.now();
      let readyAfter: number | undefined;
      while (Date.now() - load.upAt < RECOVERY_MS) {
        const r = await c.get('/readyz');
        if (r.status === 200) {
          readyAfter = Date.now() - load.upAt;
          break;
        }
        await sleep(100);
      }
      assert.ok(readyAfter !== undefined, `/readyz still not 200 ${RECOVERY_MS} ms after ${store.kind} came back`);
      timings.readyMsAfterRestart = readyAfter;
      while (load.firstAckAfterUp === undefined && Date.now() - load.upAt < RECOVERY_MS) await sleep(20);
      assert.ok(load.firstAckAfterUp !== undefined, `no request succeeded within ${RECOVERY_MS} ms after ${store.kind} came back`);
      timings.firstAckMsAfterRestart = load.firstAckAfterUp - load.upAt;
      // Keep the load on a little longer on the recovered store.
      const ackedAtRecovery = load.acked();
      await sleep(1_000);
      timings.ackedAfterRecovery = load.acked() - ackedAtRecovery;
    } catch (e) {
      load.aborted = true;
      throw e;
    } finally {
      load.stopped = true;
      await Promise.all(workers);
    }

    // While down: every request answered 503 (well-formed and fast, checked as they came).
    const down = load.attempts().filter((a) => a.start >= load.downFrom && a.end <= load.downUntil);
    const outage = `${store.kind} down for ${load.downUntil - load.downFrom} ms`;
    t.diagnostic(`${outage}: ${down.length} requests answered, ${load.unavailable} 503s in all, slowest ${load.slowestUnavailableMs} ms; messages: ${[...load.messages].join(' | ')}`);
    assert.deepEqual(load.problems.slice(0, 20), [], `${load.problems.length} problems under load`);
    assert.ok(down.length >= WORKERS, `only ${down.length} requests while ${outage}`);
    assert.deepEqual(down.filter((a) => a.status !== 503), [], `requests while ${outage} must all be 503`);
    assert.ok(timings.ackedAfterRecovery! > 0, 'the load went on after the recovery');

    // Every acknowledged mutation is there, and nothing else.
    const s = await snapshot(c, key, tenant);
    const byId = new Map(s.reservations.map((r) => [r.reservation_id, r]));
    const wrong: string[] = [];
    for (const f of load.flows) {
      if (!f.id) {
        wrong.push(`${f.reserve.label} never acknowledged`);
        continue;
      }
      const r = byId.get(f.id);
      if (!r) {
        wrong.push(`acknowledged reservation ${f.id} is missing`);
        continue;
      }
      if (r.reserved.amount !== f.estimate) wrong.push(`${f.id}: reserved ${r.reserved.amount}, acknowledged ${f.estimate}`);
      if (r.idempotency_key !== undefined && r.idempotency_key !== f.reserve.body.idempotency_key) wrong.push(`${f.id}: idempotency key ${r.idempotency_key}`);
      const settled = f.settle?.op.ack;
      if (f.settle && !settled) wrong.push(`${f.settle.op.label} never acknowledged`);
      const want = !settled ? 'ACTIVE' : f.settle!.kind === 'commit' ? 'COMMITTED' : 'RELEASED';
      if (r.status !== want) wrong.push(`${f.id}: ${r.status}, acknowledged ${want}`);
      if (settled && f.settle!.kind === 'commit') {
        if (settled.body.charged?.amount !== f.settle!.actual) wrong.push(`${f.id}: commit acknowledged charging ${JSON.stringify(settled.body.charged)}, sent ${f.settle!.actual}`);
        if (r.committed?.amount !== f.settle!.actual) wrong.push(`${f.id}: committed ${JSON.stringify(r.committed)}, acknowledged ${f.settle!.actual}`);
      }
    }
    assert.deepEqual(wrong.slice(0, 20), [], `${wrong.length} acknowledged mutations lost or changed`);
    assert.equal(s.reservations.length, load.flows.length, 'exactly one reservation per reserve idempotency key');

    // The ledger is exact at every scope, from the server's reservations and from what the clients were told.
    assert.deepEqual(checkLedger(s, { reservationsOnly: true, noOverdraft: true, rejectOnly: true }), [], 'ledger rules');
    for (const b of BUDGETS) {
      const scope = scopeOf(tenant, b.at);
      const under = load.flows.filter((f) => f.path === scope || f.path.startsWith(`${scope}/`));
      const held = under.filter((f) => !f.settle).reduce((sum, f) => sum + f.estimate, 0);
      const spent = under.filter((f) => f.settle?.kind === 'commit').reduce((sum, f) => sum + f.settle!.actual!, 0);
      const bal = s.balances.find((x) => x.scope === scope);
      assert.ok(bal, `balance of ${scope}`);
      assert.deepEqual(
        { reserved: bal.reserved, spent: bal.spent, debt: bal.debt, remaining: bal.remaining },
        { reserved: held, spent, debt: 0, remaining: b.allocated - held - spent },
        `${scope} after ${under.length} flows`,
      );
    }
    const retried = load.flows.filter((f) => f.reserve.attempts.length > 1 || (f.settle?.op.attempts.length ?? 0) > 1).length;
    const summary = `${store.kind} restart: ${load.flows.length} reservations (${timings.ackedBeforeCrash} before the crash, ${timings.ackedAfterRecovery} in the last second), ${retried} flows retried; ${down.length} requests while down, all 503 (slowest 503 ${load.slowestUnavailableMs} ms); readiness UP ${timings.readyMsAfterRestart} ms and first success ${timings.firstAckMsAfterRestart} ms after the restart`;
    t.diagnostic(summary);
    console.log(summary);
  } finally {
    // Closing waits for the store's connections; never let a broken store hold the cleanup.
    await Promise.race([server.close().catch(() => undefined), sleep(10_000)]);
  }
}
