/**
 * Property tests of the ledger under real concurrency: random plans of reserve / commit /
 * release / extend / replay / expiry over a tenant -> workspace -> agent tree, executed
 * against a real server over HTTP in Promise.all batches (so requests really interleave and
 * land in the same group commit). After every batch the whole ledger is read back and
 * checked (support/ledger.ts checkLedger) and every reservation's server state is compared
 * with what the client was told.
 *
 * Runs use fixed fast-check seeds. Override with FC_SEED / FC_RUNS; fast-check prints the
 * seed and counterexample on failure (shrinking is off to keep the time bounded).
 * Spec: cycles-protocol-v0.yaml core invariants (RT:L58), ledger invariant (RT:L1261),
 * overage policies (RT:L1136), idempotency (RT:L178), expiry and grace; digest §2, §3, §6-8.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { idem, show, sleep, uid, type Json, type Res } from '../support/http.js';
import { checkLedger, fetchBalances, fetchReservations, snapshot, type Snapshot } from '../support/ledger.js';
import { provision, scopeOf, startInProcess, type BudgetSpec, type InProcessServer } from '../support/server.js';

const SEED = Number(process.env.FC_SEED ?? 20261121);
const RUNS = Number(process.env.FC_RUNS ?? 30);
/** Small pages, so every check also walks the list and balance cursors. */
const PAGE = 4;
const fcParams = (runs: number, seedOffset: number) => ({ numRuns: runs, seed: SEED + seedOffset, endOnFailure: true, includeErrorInReport: true });

let srv: InProcessServer;
before(async () => {
  srv = await startInProcess();
});
after(async () => {
  await srv?.close();
});

type Policy = 'REJECT' | 'ALLOW_IF_AVAILABLE' | 'ALLOW_WITH_OVERDRAFT';
const POLICIES: Policy[] = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'];
/** Policy of every reservation in a run; MIXED draws one per reservation; OVERDRAFT also gives every budget a limit. */
type Mode = 'REJECT' | 'ALLOW_IF_AVAILABLE' | 'OVERDRAFT' | 'MIXED';
type Status = 'ACTIVE' | 'COMMITTED' | 'RELEASED' | 'EXPIRED';

const ACTION = { kind: 'llm.completion', name: 'prop-model' };

// ------------------------------------------------------------------ the scope tree

/** Leaves a reservation can name; agent a4 never has a budget of its own. */
const LEAVES: Array<{ workspace: string; agent?: string }> = [
  { workspace: 'w1', agent: 'a1' },
  { workspace: 'w1', agent: 'a2' },
  { workspace: 'w2', agent: 'a3' },
  { workspace: 'w1' },
  { workspace: 'w2', agent: 'a4' },
];
const BUDGET_SLOTS = ['', 'workspace:w1', 'workspace:w2', 'workspace:w1/agent:a1', 'workspace:w1/agent:a2', 'workspace:w2/agent:a3'] as const;

interface Tree {
  mode: Mode;
  budgets: BudgetSpec[];
}

const budgetArb = (min: number, max: number) =>
  fc.record({
    allocated: fc.integer({ min, max }),
    overdraft: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 250 })),
  });

const treeArb: fc.Arbitrary<Tree> = fc
  .record({
    mode: fc.constantFrom<Mode>('REJECT', 'ALLOW_IF_AVAILABLE', 'OVERDRAFT', 'MIXED', 'MIXED'),
    tenant: budgetArb(200, 1500),
    w1: fc.option(budgetArb(60, 800), { nil: undefined }),
    w2: fc.option(budgetArb(60, 800), { nil: undefined }),
    a1: fc.option(budgetArb(20, 400), { nil: undefined }),
    a2: fc.option(budgetArb(20, 400), { nil: undefined }),
    a3: fc.option(budgetArb(20, 400), { nil: undefined }),
  })
  .map((t) => {
    const slots = [t.tenant, t.w1, t.w2, t.a1, t.a2, t.a3];
    // Budgets at two or three levels: force a workspace budget when only the tenant has one.
    if (slots.slice(1).every((s) => s === undefined)) slots[1] = { allocated: 300, overdraft: 0 };
    const budgets: BudgetSpec[] = [];
    slots.forEach((s, i) => {
      if (!s) return;
      // OVERDRAFT runs: tight allocations, so overage commits really run into debt.
      if (t.mode === 'OVERDRAFT') {
        const allocated = Math.max(20, s.allocated >> 2);
        budgets.push({ at: BUDGET_SLOTS[i]!, allocated, overdraft: s.overdraft || 1 + (allocated >> 1) });
      } else {
        budgets.push({ at: BUDGET_SLOTS[i]!, allocated: s.allocated, overdraft: s.overdraft });
      }
    });
    return { mode: t.mode, budgets };
  });

function leafSubject(tenant: string, leaf: number): Record<string, string> {
  const l = LEAVES[leaf]!;
  return l.agent ? { tenant, workspace: l.workspace, agent: l.agent } : { tenant, workspace: l.workspace };
}

function leafScopes(tenant: string, leaf: number): string[] {
  const l = LEAVES[leaf]!;
  const out = [`tenant:${tenant}`, `tenant:${tenant}/workspace:${l.workspace}`];
  if (l.agent) out.push(`tenant:${tenant}/workspace:${l.workspace}/agent:${l.agent}`);
  return out;
}

// ------------------------------------------------------------------ plans

type Op =
  | { t: 'reserve'; leaf: number; amount: number; policy: number; short: boolean; dup: boolean }
  | { t: 'commit'; ref: number; pct: number; dup: boolean }
  | { t: 'release'; ref: number }
  | { t: 'extend'; ref: number; by: number }
  | { t: 'replay'; ref: number; mismatch: boolean }
  | { t: 'resettle'; ref: number; kind: 'commit' | 'release' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant('reserve' as const),
      leaf: fc.nat(LEAVES.length - 1),
      amount: fc.integer({ min: 1, max: 90 }),
      policy: fc.nat(2),
      short: fc.constantFrom(false, false, true),
      // The same request twice at once: one applies, the other must replay it.
      dup: fc.constantFrom(false, false, false, false, true),
    }),
  },
  { weight: 4, arbitrary: fc.record({
      t: fc.constant('commit' as const),
      ref: fc.nat(7),
      pct: fc.oneof(fc.constant(100), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 101, max: 400 })),
      dup: fc.constantFrom(false, false, false, true),
    }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('release' as const), ref: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('extend' as const), ref: fc.nat(7), by: fc.integer({ min: 1000, max: 30_000 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('replay' as const), ref: fc.nat(7), mismatch: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('resettle' as const), ref: fc.nat(7), kind: fc.constantFrom<'commit' | 'release'>('commit', 'release') }) },
);

interface Plan {
  batches: Op[][];
  /** After this batch, wait for the sweeper to expire the short-TTL reservations. */
  expiryAfter: number | undefined;
}

const planArb: fc.Arbitrary<Plan> = fc.record({
  batches: fc.array(fc.array(opArb, { minLength: 1, maxLength: 16 }), { minLength: 2, maxLength: 7 }),
  expiryAfter: fc.option(fc.nat(6), { nil: undefined, freq: 3 }),
});

// ------------------------------------------------------------------ client-side model

interface Settle {
  kind: 'commit' | 'release';
  key: string;
  body: Record<string, unknown>;
  status: number;
  text: string;
  charged?: number;
}

interface RModel {
  id: string;
  leaf: number;
  policy: Policy;
  short: boolean;
  estimate: number;
  reserveBody: Record<string, unknown>;
  reserveText: string;
  expiresAt: number;
  scopePath: string;
  affected: string[];
  settles: Settle[];
  /** extend_by_ms of every successful extend. */
  extendedBy: number[];
  /** Status in the last snapshot. */
  lastStatus: Status;
}

class Run {
  readonly problems: string[] = [];
  readonly model = new Map<string, RModel>();
  /** Reservation ids in creation order (for op refs). */
  readonly order: string[] = [];
  usedOverdraft = false;
  batchNo = 0;
  readonly log: string[] = [];

  constructor(
    readonly tenant: string,
    readonly key: string,
    readonly tree: Tree,
  ) {}

  fail(msg: string): void {
    this.problems.push(`[batch ${this.batchNo}] ${msg}`);
  }

  policyFor(op: { policy: number }): Policy {
    if (this.tree.mode === 'MIXED') return POLICIES[op.policy]!;
    if (this.tree.mode === 'OVERDRAFT') return 'ALLOW_WITH_OVERDRAFT';
    return this.tree.mode;
  }

  /** True when every budgeted scope on the reservation's path allows overdraft (limit > 0). */
  allOverdraft(r: RModel): boolean {
    const budgeted = this.tree.budgets.filter((b) => r.affected.includes(scopeOf(this.tenant, b.at)));
    return budgeted.length > 0 && budgeted.every((b) => (b.overdraft ?? 0) > 0);
  }

  pick(ref: number, filter: (r: RModel) => boolean = () => true): RModel | undefined {
    const pool = this.order.map((id) => this.model.get(id)!).filter(filter);
    if (pool.length === 0) return undefined;
    return pool[pool.length - 1 - (ref % pool.length)];
  }
}

const srvClient = () => srv.client;

/** remaining_ttl_ms is the one field a replay recomputes. */
const withoutTtl = (text: string): string => {
  const o = JSON.parse(text) as Json;
  delete o.remaining_ttl_ms;
  return JSON.stringify(o);
};

async function doReserve(run: Run, op: Extract<Op, { t: 'reserve' }>): Promise<void> {
  const policy = run.policyFor(op);
  const body: Record<string, unknown> = {
    idempotency_key: idem('rsv'),
    subject: leafSubject(run.tenant, op.leaf),
    action: ACTION,
    estimate: { unit: 'TOKENS', amount: op.amount },
    overage_policy: policy,
  };
  if (op.short) Object.assign(body, { ttl_ms: 1000, grace_period_ms: 0 });
  const [res, twin] = await Promise.all([
    srvClient().post('/v1/reservations', body, { apiKey: run.key }),
    op.dup ? srvClient().post('/v1/reservations', body, { apiKey: run.key }) : undefined,
  ]);
  run.log.push(`reserve${op.dup ? ' x2' : ''} leaf=${op.leaf} amount=${op.amount} ${policy}${op.short ? ' short' : ''} -> ${res.status} ${res.body?.error ?? res.body?.reservation_id ?? ''}`);
  if (twin && (twin.status !== res.status || (res.status === 200 && withoutTtl(twin.text) !== withoutTtl(res.text)))) {
    run.fail(`two concurrent identical reserves (key ${String(body.idempotency_key)}) must yield one reservation and the same body:\n  first:  ${show(res)}\n  second: ${show(twin)}`);
  }
  if (res.status === 200) {
    const b = res.body;
    const expected = leafScopes(run.tenant, op.leaf);
    if (b.decision !== 'ALLOW' || typeof b.reservation_id !== 'string') return run.fail(`reserve 200 without ALLOW + reservation_id: ${show(res)}`);
    if (b.reserved?.amount !== op.amount || b.reserved?.unit !== 'TOKENS') run.fail(`reserve reserved ${JSON.stringify(b.reserved)} != estimate ${op.amount}: ${show(res)}`);
    if (JSON.stringify(b.affected_scopes) !== JSON.stringify(expected)) run.fail(`affected_scopes ${JSON.stringify(b.affected_scopes)} != ${JSON.stringify(expected)}`);
    if (run.model.has(b.reservation_id)) run.fail(`reservation id ${b.reservation_id} returned twice`);
    if (policy === 'ALLOW_WITH_OVERDRAFT') run.usedOverdraft = true;
    run.model.set(b.reservation_id, {
      id: b.reservation_id,
      leaf: op.leaf,
      policy,
      short: op.short,
      estimate: op.amount,
      reserveBody: body,
      reserveText: res.text,
      expiresAt: b.expires_at_ms,
      scopePath: b.scope_path,
      affected: expected,
      settles: [],
      extendedBy: [],
      lastStatus: 'ACTIVE',
    });
    run.order.push(b.reservation_id);
    return;
  }
  // Debt only arises where an overdraft limit > 0 allows it (a limit of 0 makes ALLOW_WITH_OVERDRAFT
  // behave as ALLOW_IF_AVAILABLE), and DEBT_OUTSTANDING needs debt > 0 with limit == 0: never here.
  // REJECT-only runs cannot put a scope over limit either.
  const allowed = run.tree.mode === 'REJECT' ? ['BUDGET_EXCEEDED'] : ['BUDGET_EXCEEDED', 'OVERDRAFT_LIMIT_EXCEEDED'];
  if (res.status !== 409 || !allowed.includes(res.body?.error)) run.fail(`reserve: expected 200 or 409 ${allowed.join('|')}, got ${show(res)} for ${JSON.stringify(body)}`);
}

/** Status a fresh-key commit/release must get when the last snapshot already showed the reservation final. */
function finalExpectation(r: RModel): { status: number; error: string } | undefined {
  if (r.lastStatus === 'COMMITTED' || r.lastStatus === 'RELEASED') return { status: 409, error: 'RESERVATION_FINALIZED' };
  if (r.lastStatus === 'EXPIRED') return { status: 410, error: 'RESERVATION_EXPIRED' };
  return undefined;
}

async function doSettle(run: Run, r: RModel, kind: 'commit' | 'release', pct: number, dup = false): Promise<void> {
  const key = idem(kind === 'commit' ? 'cmt' : 'rel');
  const actual = Math.round((r.estimate * pct) / 100);
  const body: Record<string, unknown> = kind === 'commit' ? { idempotency_key: key, actual: { unit: 'TOKENS', amount: actual } } : { idempotency_key: key };
  const path = `/v1/reservations/${r.id}/${kind}`;
  const [res, twin] = await Promise.all([
    srvClient().post(path, body, { apiKey: run.key }),
    dup ? srvClient().post(path, body, { apiKey: run.key }) : undefined,
  ]);
  run.log.push(`${kind}${dup ? ' x2' : ''} ${r.id.slice(-6)} (${r.policy} est=${r.estimate}${kind === 'commit' ? ` actual=${actual}` : ''}, last=${r.lastStatus}) -> ${res.status} ${res.body?.error ?? ''}`);
  if (twin && (twin.status !== res.status || (res.status === 200 && twin.text !== res.text))) {
    run.fail(`two concurrent identical ${kind}s of ${r.id} (key ${key}) must settle once and answer the same:\n  first:  ${show(res)}\n  second: ${show(twin)}`);
  }
  const settle: Settle = { kind, key, body, status: res.status, text: res.text };
  r.settles.push(settle);
  const ctx = `${kind} ${r.id} (policy ${r.policy}, estimate ${r.estimate}${kind === 'commit' ? `, actual ${actual}` : ''}, last status ${r.lastStatus})`;

  const fin = finalExpectation(r);
  if (fin) {
    if (res.status !== fin.status || res.body?.error !== fin.error) run.fail(`${ctx}: a fresh key on a ${r.lastStatus} reservation must give ${fin.status} ${fin.error}, got ${show(res)}`);
    return;
  }
  if (res.status === 200) {
    if (kind === 'release') {
      if (res.body.status !== 'RELEASED' || res.body.released?.amount !== r.estimate) run.fail(`${ctx}: release must return RELEASED with released = ${r.estimate}: ${show(res)}`);
      return;
    }
    const charged = res.body.charged?.amount as number;
    settle.charged = charged;
    if (res.body.status !== 'COMMITTED' || res.body.charged?.unit !== 'TOKENS') run.fail(`${ctx}: commit must return COMMITTED with charged in TOKENS: ${show(res)}`);
    if (actual <= r.estimate) {
      if (charged !== actual) run.fail(`${ctx}: actual <= reserved must charge exactly actual, charged ${charged}`);
      const released = res.body.released?.amount;
      if (actual < r.estimate && released !== r.estimate - actual) run.fail(`${ctx}: released must be ${r.estimate - actual}, got ${JSON.stringify(res.body.released)}`);
      if (actual === r.estimate && released !== undefined && released !== 0) run.fail(`${ctx}: nothing to release, got released ${JSON.stringify(res.body.released)}`);
    } else {
      if (r.policy === 'REJECT') run.fail(`${ctx}: REJECT must refuse actual > reserved with 409 BUDGET_EXCEEDED, got ${show(res)}`);
      if (!(charged >= r.estimate && charged <= actual)) run.fail(`${ctx}: overage charge ${charged} outside [reserved ${r.estimate}, actual ${actual}]`);
      if (r.policy === 'ALLOW_WITH_OVERDRAFT' && run.allOverdraft(r) && charged !== actual) {
        run.fail(`${ctx}: ALLOW_WITH_OVERDRAFT with an overdraft limit on every scope charges actual, charged ${charged}`);
      }
    }
    return;
  }
  const code = res.body?.error;
  const ok =
    (res.status === 409 && code === 'RESERVATION_FINALIZED') ||
    (res.status === 410 && code === 'RESERVATION_EXPIRED' && r.short) ||
    (kind === 'commit' && res.status === 409 && code === 'BUDGET_EXCEEDED' && r.policy === 'REJECT' && actual > r.estimate) ||
    (kind === 'commit' && res.status === 409 && code === 'OVERDRAFT_LIMIT_EXCEEDED' && r.policy === 'ALLOW_WITH_OVERDRAFT' && actual > r.estimate);
  if (!ok) run.fail(`${ctx}: unexpected ${show(res)}`);
}

async function doExtend(run: Run, r: RModel, by: number): Promise<void> {
  const res = await srvClient().post(`/v1/reservations/${r.id}/extend`, { idempotency_key: idem('ext'), extend_by_ms: by }, { apiKey: run.key });
  run.log.push(`extend ${r.id.slice(-6)} by ${by} (last=${r.lastStatus}) -> ${res.status} ${res.body?.error ?? ''}`);
  const ctx = `extend ${r.id} by ${by} (last status ${r.lastStatus})`;
  if (res.status === 200) {
    if (r.lastStatus !== 'ACTIVE') run.fail(`${ctx}: extended a ${r.lastStatus} reservation: ${show(res)}`);
    if (res.body.status !== 'ACTIVE' || !(res.body.expires_at_ms > r.expiresAt)) run.fail(`${ctx}: bad extend response ${show(res)}`);
    r.extendedBy.push(by);
    return;
  }
  const code = res.body?.error;
  const ok =
    (res.status === 409 && code === 'RESERVATION_FINALIZED' && r.lastStatus !== 'EXPIRED') ||
    (res.status === 410 && code === 'RESERVATION_EXPIRED' && r.short) ||
    (res.status === 409 && code === 'MAX_EXTENSIONS_EXCEEDED');
  if (!ok) run.fail(`${ctx}: unexpected ${show(res)}`);
}

async function doReplay(run: Run, r: RModel, mismatch: boolean): Promise<void> {
  const prior = r.settles.find((s) => s.status === 200);
  if (mismatch) {
    // Same key, different payload: 409 IDEMPOTENCY_MISMATCH, and nothing is applied.
    const [path, body]: [string, Record<string, unknown>] = prior
      ? [`/v1/reservations/${r.id}/${prior.kind}`, prior.kind === 'commit' ? { ...prior.body, actual: { unit: 'TOKENS', amount: r.estimate + 1 } } : { ...prior.body, reason: 'changed' }]
      : ['/v1/reservations', { ...r.reserveBody, estimate: { unit: 'TOKENS', amount: r.estimate + 1 } }];
    const res = await srvClient().post(path, body, { apiKey: run.key });
    run.log.push(`mismatched replay ${path.split('/').pop()} ${r.id.slice(-6)} -> ${res.status} ${res.body?.error ?? ''}`);
    if (res.status !== 409 || res.body?.error !== 'IDEMPOTENCY_MISMATCH') run.fail(`reusing key ${String(body.idempotency_key)} with a different payload on ${path} must be 409 IDEMPOTENCY_MISMATCH, got ${show(res)}`);
    return;
  }
  if (prior) {
    const res = await srvClient().post(`/v1/reservations/${r.id}/${prior.kind}`, prior.body, { apiKey: run.key });
    run.log.push(`replay ${prior.kind} ${r.id.slice(-6)} -> ${res.status}`);
    if (res.status !== 200 || res.text !== prior.text) {
      run.fail(`replay of ${prior.kind} ${r.id} with key ${prior.key} must return the identical 200 body.\n  original: ${prior.text}\n  replay:   ${show(res)}`);
    }
    return;
  }
  const res = await srvClient().post('/v1/reservations', r.reserveBody, { apiKey: run.key });
  run.log.push(`replay reserve ${r.id.slice(-6)} -> ${res.status}`);
  if (res.status !== 200 || withoutTtl(res.text) !== withoutTtl(r.reserveText)) {
    run.fail(`replay of reserve ${r.id} must return the original body (remaining_ttl_ms aside).\n  original: ${r.reserveText}\n  replay:   ${show(res)}`);
  } else if (r.lastStatus !== 'ACTIVE' && res.body.remaining_ttl_ms !== 0) {
    run.fail(`replay of reserve ${r.id}, now ${r.lastStatus}: remaining_ttl_ms must be recomputed to 0, got ${res.body.remaining_ttl_ms}`);
  }
}

async function execute(run: Run, op: Op): Promise<void> {
  switch (op.t) {
    case 'reserve':
      return doReserve(run, op);
    case 'commit': {
      const r = run.pick(op.ref, (x) => x.lastStatus === 'ACTIVE') ?? run.pick(op.ref);
      return r ? doSettle(run, r, 'commit', op.pct, op.dup) : undefined;
    }
    case 'release': {
      const r = run.pick(op.ref, (x) => x.lastStatus === 'ACTIVE') ?? run.pick(op.ref);
      return r ? doSettle(run, r, 'release', 100) : undefined;
    }
    case 'extend': {
      const r = run.pick(op.ref, (x) => x.lastStatus === 'ACTIVE') ?? run.pick(op.ref);
      return r ? doExtend(run, r, op.by) : undefined;
    }
    case 'replay': {
      const r = run.pick(op.ref);
      return r ? doReplay(run, r, op.mismatch) : undefined;
    }
    case 'resettle': {
      // Prefer reservations already final in the last snapshot: a second settlement must be refused.
      const r = run.pick(op.ref, (x) => x.lastStatus !== 'ACTIVE') ?? run.pick(op.ref);
      return r ? doSettle(run, r, op.kind, 100) : undefined;
    }
  }
}

/** What the random plans exercised, asserted at the end so a weak generator cannot pass silently. */
const stats = { runs: 0, debtScopes: 0, overLimitScopes: 0, reserved: 0, reserveRefused: 0, committed: 0, overageCommits: 0, released: 0, finalizedRefusals: 0, expired: 0, extended: 0, replays: 0 };

/** Compares the server's reservations with everything the client was told, then the ledger rules. */
function verify(run: Run, s: Snapshot): void {
  stats.debtScopes += s.balances.filter((b) => b.debt > 0).length;
  stats.overLimitScopes += s.balances.filter((b) => b.is_over_limit).length;
  for (const b of s.balances) if (b.debt > 0 && b.overdraft_limit === 0) run.fail(`ledger: ${b.scope} has debt ${b.debt} with overdraft_limit 0`);
  const ledger = checkLedger(s, { noOverdraft: !run.usedOverdraft, rejectOnly: run.tree.mode === 'REJECT', reservationsOnly: true });
  for (const p of ledger) run.fail(`ledger: ${p}`);
  const server = new Map(s.reservations.map((r) => [r.reservation_id, r]));
  for (const id of server.keys()) if (!run.model.has(id)) run.fail(`server has reservation ${id} that no 200 reserve returned`);
  for (const r of run.model.values()) {
    const row = server.get(r.id);
    if (!row) {
      run.fail(`acknowledged reservation ${r.id} is missing from the listings`);
      continue;
    }
    const wins = r.settles.filter((x) => x.status === 200);
    const keys = new Set(wins.map((x) => x.key));
    if (keys.size > 1) run.fail(`reservation ${r.id} was settled ${keys.size} times with different keys: ${wins.map((w) => `${w.kind} ${w.key} -> ${w.text}`).join(' | ')}`);
    const win = wins[0];
    if (row.reserved.amount !== r.estimate) run.fail(`reservation ${r.id} reserved ${row.reserved.amount} != ${r.estimate}`);
    if (row.scope_path !== r.scopePath) run.fail(`reservation ${r.id} scope_path ${row.scope_path} != ${r.scopePath}`);
    if (win?.kind === 'commit') {
      if (row.status !== 'COMMITTED') run.fail(`reservation ${r.id}: commit acknowledged (${win.text}) but status is ${row.status}`);
      else if (row.committed?.amount !== win.charged) run.fail(`reservation ${r.id}: committed ${JSON.stringify(row.committed)} != acknowledged charge ${win.charged}`);
    } else if (win?.kind === 'release') {
      if (row.status !== 'RELEASED') run.fail(`reservation ${r.id}: release acknowledged but status is ${row.status}`);
    } else if (row.status !== 'ACTIVE' && row.status !== 'EXPIRED') {
      run.fail(`reservation ${r.id} is ${row.status} although no commit/release succeeded`);
    }
    if (row.status === 'EXPIRED' && !r.short) run.fail(`long-TTL reservation ${r.id} expired`);
    // Expiry must not come before expires_at_ms + grace_period_ms (grace is 0 for short ones).
    if (row.status === 'EXPIRED' && s.at < row.expires_at_ms) run.fail(`reservation ${r.id} is EXPIRED at ${s.at}, before its expires_at_ms ${row.expires_at_ms}`);
    const expectedExpiry = r.expiresAt + r.extendedBy.reduce((a, b) => a + b, 0);
    if (row.expires_at_ms !== expectedExpiry) {
      run.fail(`reservation ${r.id}: expires_at_ms ${row.expires_at_ms} != reserve expiry ${r.expiresAt} + successful extends [${r.extendedBy.join(', ')}] = ${expectedExpiry}`);
    }
    r.lastStatus = row.status;
  }
}

function report(run: Run): void {
  if (run.problems.length === 0) return;
  assert.fail(
    `${run.problems.length} violation(s) for tenant ${run.tenant}, tree ${JSON.stringify(run.tree)}:\n  - ${run.problems.slice(0, 15).join('\n  - ')}\n` +
      `operation log (last 60):\n    ${run.log.slice(-60).join('\n    ')}\n(rerun: FC_SEED=${SEED})`,
  );
}

async function waitForExpiry(run: Run): Promise<void> {
  const client = srvClient();
  const s = await snapshot(client, run.key, run.tenant, PAGE);
  const due = s.reservations.filter((r) => r.status === 'ACTIVE' && run.model.get(r.reservation_id)?.short && r.expires_at_ms - Date.now() < 2500);
  if (due.length === 0) return;
  // grace_period_ms = 0: the sweeper may expire them right after expires_at_ms.
  const until = Math.max(...due.map((r) => r.expires_at_ms)) + 400;
  await sleep(Math.max(0, until - Date.now()));
  run.log.push(`waited for the sweeper (${due.length} short reservations due)`);
  // The sweeper runs every 50 ms; allow a loaded machine up to 3 s more before calling it stuck.
  let s2 = await snapshot(client, run.key, run.tenant, PAGE);
  const expiredAll = (x: Snapshot) => due.every((d) => x.reservations.find((r) => r.reservation_id === d.reservation_id)?.status === 'EXPIRED');
  for (let i = 0; i < 30 && !expiredAll(s2); i++) {
    await sleep(100);
    s2 = await snapshot(client, run.key, run.tenant, PAGE);
  }
  const byId = new Map(s2.reservations.map((r) => [r.reservation_id, r]));
  for (const r of due) {
    const now = byId.get(r.reservation_id);
    if (now?.status !== 'EXPIRED') run.fail(`reservation ${r.reservation_id} (ttl 1000, grace 0) is still ${now?.status} more than 3 s after expires_at_ms; the sweeper should have expired it`);
  }
  const first = due[0]!;
  const g = await client.get(`/v1/reservations/${first.reservation_id}`, { apiKey: run.key });
  if (byId.get(first.reservation_id)?.status === 'EXPIRED' && (g.status !== 410 || g.body?.error !== 'RESERVATION_EXPIRED')) {
    run.fail(`GET on EXPIRED reservation ${first.reservation_id} must be 410 RESERVATION_EXPIRED, got ${show(g)}`);
  }
  verify(run, s2);
}


function tally(run: Run): void {
  stats.runs++;
  stats.reserveRefused += run.log.filter((l) => l.startsWith('reserve') && !l.includes('-> 200')).length;
  stats.replays += run.log.filter((l) => l.startsWith('replay')).length;
  for (const r of run.model.values()) {
    stats.reserved++;
    if (r.lastStatus === 'EXPIRED') stats.expired++;
    stats.extended += r.extendedBy.length;
    for (const s of r.settles) {
      if (s.status === 200 && s.kind === 'commit') {
        stats.committed++;
        if (((s.body.actual as { amount: number }).amount) > r.estimate) stats.overageCommits++;
      }
      if (s.status === 200 && s.kind === 'release') stats.released++;
      if (s.status === 409 && s.text.includes('RESERVATION_FINALIZED')) stats.finalizedRefusals++;
    }
  }
}

describe('ledger properties under concurrent interleavings', () => {
  test('random plans keep every scope consistent, never oversubscribe and settle each reservation once', { timeout: 120_000 }, async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(treeArb, planArb, async (tree, plan) => {
        runs++;
        const tenant = uid('prop');
        const key = await provision(srv.client, tenant, tree.budgets);
        const run = new Run(tenant, key, tree);
        for (let i = 0; i < plan.batches.length; i++) {
          run.batchNo = i;
          run.log.push(`-- batch ${i}`);
          await Promise.all(plan.batches[i]!.map((op) => execute(run, op)));
          verify(run, await snapshot(srv.client, key, tenant, PAGE));
          if (plan.expiryAfter !== undefined && plan.expiryAfter % plan.batches.length === i) await waitForExpiry(run);
          report(run);
        }
        // Drain: release whatever is still ACTIVE; afterwards nothing may be held anywhere.
        run.batchNo = plan.batches.length;
        run.log.push('-- drain');
        await Promise.all([...run.model.values()].filter((r) => r.lastStatus === 'ACTIVE').map((r) => doSettle(run, r, 'release', 100)));
        const end = await snapshot(srv.client, key, tenant, PAGE);
        verify(run, end);
        for (const b of end.balances) if (b.reserved !== 0) run.fail(`after releasing everything ${b.scope} still has reserved ${b.reserved}`);
        report(run);
        tally(run);
      }),
      fcParams(RUNS, 0),
    );
    assert.equal(runs, RUNS);
    console.log(`ledger property coverage: ${JSON.stringify(stats)}`);
    // The plans must actually exercise the interesting paths, or the invariants above prove little.
    assert.ok(stats.reserved > 50 && stats.reserveRefused > 0, `coverage: ${JSON.stringify(stats)}`);
    assert.ok(stats.committed > 20 && stats.released > 5 && stats.overageCommits > 3, `coverage: ${JSON.stringify(stats)}`);
    assert.ok(stats.finalizedRefusals > 0 && stats.expired > 0 && stats.extended > 0 && stats.replays > 0, `coverage: ${JSON.stringify(stats)}`);
  });
});

describe('ALLOW_WITH_OVERDRAFT under concurrent overage commits', () => {
  test('property: debt stays accounted, charges are exact, over-limit blocks new holds and debt within the limit does not', { timeout: 60_000 }, async () => {
    let debtRuns = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          tenantAlloc: fc.integer({ min: 100, max: 600 }),
          tenantLimit: fc.integer({ min: 1, max: 300 }),
          wsAlloc: fc.integer({ min: 50, max: 400 }),
          wsLimit: fc.integer({ min: 1, max: 300 }),
          reserves: fc.array(fc.record({ amount: fc.integer({ min: 5, max: 60 }), pct: fc.integer({ min: 100, max: 400 }), agent: fc.nat(2) }), { minLength: 3, maxLength: 14 }),
        }),
        async (p) => {
          const tenant = uid('od');
          const key = await provision(srv.client, tenant, [
            { at: '', allocated: p.tenantAlloc, overdraft: p.tenantLimit },
            { at: 'workspace:w', allocated: p.wsAlloc, overdraft: p.wsLimit },
          ]);
          const held = await Promise.all(
            p.reserves.map((x) =>
              srv.client.post(
                '/v1/reservations',
                { idempotency_key: idem('od'), subject: { tenant, workspace: 'w', agent: `a${x.agent}` }, action: ACTION, estimate: { unit: 'TOKENS', amount: x.amount }, overage_policy: 'ALLOW_WITH_OVERDRAFT' },
                { apiKey: key },
              ),
            ),
          );
          for (const h of held) if (h.status !== 200) assert.equal(h.body?.error, 'BUDGET_EXCEEDED', show(h));
          const commits = await Promise.all(
            held.map(async (h, i) => {
              if (h.status !== 200) return undefined;
              const x = p.reserves[i]!;
              const actual = Math.round((x.amount * x.pct) / 100);
              const c = await srv.client.post(`/v1/reservations/${h.body.reservation_id}/commit`, { idempotency_key: idem('odc'), actual: { unit: 'TOKENS', amount: actual } }, { apiKey: key });
              return { actual, c };
            }),
          );
          for (const x of commits) {
            if (!x) continue;
            if (x.c.status === 200) {
              // Every budgeted scope has an overdraft limit: the whole actual is charged.
              assert.equal(x.c.body.charged?.amount, x.actual, `charged must equal actual: ${show(x.c)}`);
            } else {
              assert.equal(x.c.status, 409, show(x.c));
              assert.equal(x.c.body?.error, 'OVERDRAFT_LIMIT_EXCEEDED', show(x.c));
            }
          }
          const s = await snapshot(srv.client, key, tenant, PAGE);
          assert.deepEqual(checkLedger(s, { reservationsOnly: true }), []);
          if (s.balances.some((b) => b.debt > 0)) debtRuns++;
          // A new hold: over-limit scopes refuse with OVERDRAFT_LIMIT_EXCEEDED (it outranks debt);
          // debt within a non-zero limit is never DEBT_OUTSTANDING.
          const probe = await srv.client.post(
            '/v1/reservations',
            { idempotency_key: idem('probe'), subject: { tenant, workspace: 'w' }, action: ACTION, estimate: { unit: 'TOKENS', amount: 1 } },
            { apiKey: key },
          );
          const overLimit = s.balances.some((b) => b.is_over_limit);
          if (overLimit) assert.equal(probe.body?.error, 'OVERDRAFT_LIMIT_EXCEEDED', `a scope is over limit: ${show(probe)}`);
          else if (probe.status !== 200) assert.equal(probe.body?.error, 'BUDGET_EXCEEDED', `debt within a non-zero limit must not block with DEBT_OUTSTANDING: ${show(probe)}`);
          else assert.ok(s.balances.every((b) => b.remaining >= 1), `a hold of 1 was admitted although some remaining < 1: ${show(probe)}`);
        },
      ),
      fcParams(15, 3),
    );
    assert.ok(debtRuns > 0, 'no run produced any debt; the generator no longer exercises overdraft');
  });
});

describe('no oversubscription under concurrent reserves', () => {
  const kOfN = async (k: number, extra: number, amount: number, limiting: 'tenant' | 'workspace' | 'agent', leaves: number) => {
    const tenant = uid('kofn');
    const big = (k + extra) * amount * 10;
    const budgets: BudgetSpec[] = [
      { at: '', allocated: limiting === 'tenant' ? k * amount : big },
      { at: 'workspace:w', allocated: limiting === 'workspace' ? k * amount : big },
    ];
    // Agent-limited: one agent, so the limiting budget is shared by every request.
    if (limiting === 'agent') budgets.push({ at: 'workspace:w/agent:a0', allocated: k * amount });
    else for (let i = 0; i < leaves; i++) budgets.push({ at: `workspace:w/agent:a${i}`, allocated: big });
    const key = await provision(srv.client, tenant, budgets);
    const n = k + extra;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        srv.client.post(
          '/v1/reservations',
          {
            idempotency_key: idem('kofn'),
            subject: { tenant, workspace: 'w', agent: limiting === 'agent' ? 'a0' : `a${i % leaves}` },
            action: ACTION,
            estimate: { unit: 'TOKENS', amount },
            overage_policy: 'REJECT',
          },
          { apiKey: key },
        ),
      ),
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    const ctx = `k=${k} n=${n} amount=${amount} limiting=${limiting} leaves=${leaves}`;
    assert.equal(ok.length, k, `${ctx}: exactly ${k} of ${n} reserves fit; statuses ${results.map((r) => r.status).join(',')}`);
    for (const r of refused) {
      assert.equal(r.status, 409, `${ctx}: ${show(r)}`);
      assert.equal((r.body as Json)?.error, 'BUDGET_EXCEEDED', `${ctx}: ${show(r)}`);
    }
    const limitingScope = limiting === 'tenant' ? `tenant:${tenant}` : limiting === 'workspace' ? `tenant:${tenant}/workspace:w` : `tenant:${tenant}/workspace:w/agent:a0`;
    const { balances } = await fetchBalances(srv.client, key, tenant);
    const lb = balances.find((b) => b.scope === limitingScope);
    assert.ok(lb, `${ctx}: no balance for ${limitingScope}`);
    assert.equal(lb.reserved, k * amount, `${ctx}: reserved at the limiting scope`);
    assert.equal(lb.remaining, 0, `${ctx}: remaining at the limiting scope`);
    for (const b of balances.filter((x) => x.scope === `tenant:${tenant}` || x.scope === `tenant:${tenant}/workspace:w`)) {
      assert.equal(b.reserved, k * amount, `${ctx}: every ancestor holds exactly the admitted reserves (${b.scope})`);
    }
    const active = await fetchReservations(srv.client, key, 'ACTIVE');
    assert.equal(active.length, k, `${ctx}: ACTIVE reservations`);
    const s = await snapshot(srv.client, key, tenant, PAGE);
    assert.deepEqual(checkLedger(s, { noOverdraft: true, rejectOnly: true, reservationsOnly: true }), []);
  };

  test('50 concurrent reserves against a budget that fits exactly 7: 7 succeed, 43 get 409 BUDGET_EXCEEDED', async () => {
    await kOfN(7, 43, 13, 'tenant', 3);
  });

  test('property: N concurrent reserves where the limiting budget fits exactly K', { timeout: 60_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 500 }),
        fc.constantFrom<'tenant' | 'workspace' | 'agent'>('tenant', 'workspace', 'agent'),
        fc.integer({ min: 1, max: 3 }),
        (k, extra, amount, limiting, leaves) => kOfN(k, extra, amount, limiting, leaves),
      ),
      fcParams(10, 1),
    );
  });

  test('concurrent reserves of mixed sizes never exceed the allocation, and each refusal was justified at the end', async () => {
    const tenant = uid('mix');
    const allocated = 1000;
    const key = await provision(srv.client, tenant, [{ at: '', allocated }, { at: 'workspace:w', allocated: 5000 }]);
    const sizes = fc.sample(fc.integer({ min: 1, max: 200 }), { numRuns: 40, seed: SEED + 2 });
    const results = await Promise.all(
      sizes.map((amount) =>
        srv.client
          .post('/v1/reservations', { idempotency_key: idem('mix'), subject: { tenant, workspace: 'w' }, action: ACTION, estimate: { unit: 'TOKENS', amount }, overage_policy: 'REJECT' }, { apiKey: key })
          .then((res: Res) => ({ amount, res })),
      ),
    );
    const admitted = results.filter((r) => r.res.status === 200).reduce((a, r) => a + r.amount, 0);
    assert.ok(admitted <= allocated, `admitted ${admitted} > allocated ${allocated}`);
    const { balances } = await fetchBalances(srv.client, key, tenant);
    const root = balances.find((b) => b.scope === `tenant:${tenant}`)!;
    assert.equal(root.reserved, admitted);
    for (const r of results.filter((x) => x.res.status !== 200)) {
      assert.equal(r.res.body?.error, 'BUDGET_EXCEEDED', show(r.res));
      // Holds only grow during this test, so a refused size must not fit even now.
      assert.ok(r.amount > root.remaining, `a reserve of ${r.amount} was refused although ${root.remaining} remains and holds only grew`);
    }
  });
});
