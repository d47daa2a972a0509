/**
 * The differential test's engine: one seeded random sequence of operations, applied in the
 * same order to a server on every backend, must get identical answers and leave identical
 * ledgers. The sequence covers every runtime operation (reserve live and dry-run, decide,
 * commit, release, extend, direct-debit events, get, list, balances) and the funding and
 * freeze operations that change what they see, over several tenants, units and scope depths,
 * including errors (unknown scope, wrong unit, exhausted budgets, finalized reservations,
 * foreign tenants, frozen budgets, a closed tenant) and same-key replays, matching and not.
 *
 * Answers are compared after normalising what legitimately differs between backends: request
 * and trace ids, times, reservation ids (mapped to their order of creation), generated event ids,
 * cursors, and the order of lists whose ties are broken by random ids.
 */
import assert from 'node:assert/strict';
import { idem, show, type Client, type Json, type Res } from '../support/http.js';

// ------------------------------------------------------------------ seeded randomness

export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ------------------------------------------------------------------ the world

type Unit = 'TOKENS' | 'USD_MICROCENTS' | 'CREDITS';
type Policy = 'REJECT' | 'ALLOW_IF_AVAILABLE' | 'ALLOW_WITH_OVERDRAFT';

interface BudgetDef {
  at: string;
  unit: Unit;
  allocated: number;
  overdraft?: number;
  policy?: Policy;
}

interface TenantDef {
  name: string;
  budgets: BudgetDef[];
  /** Subjects below the tenant: budgeted, partly budgeted, and unbudgeted paths. */
  paths: string[];
  units: Unit[];
  extra?: Record<string, unknown>;
}

const TENANTS: TenantDef[] = [
  {
    name: 'deep',
    budgets: [
      { at: '', unit: 'TOKENS', allocated: 1000 },
      { at: 'workspace:w1', unit: 'TOKENS', allocated: 600 },
      { at: 'workspace:w1/app:a1', unit: 'TOKENS', allocated: 300, policy: 'REJECT' },
      { at: 'workspace:w1/app:a1/agent:x', unit: 'TOKENS', allocated: 200 },
      { at: 'workspace:w2', unit: 'TOKENS', allocated: 400, overdraft: 80, policy: 'ALLOW_WITH_OVERDRAFT' },
      { at: 'workspace:w2/agent:y', unit: 'TOKENS', allocated: 150 },
    ],
    paths: ['', 'workspace:w1', 'workspace:w1/app:a1', 'workspace:w1/app:a1/agent:x', 'workspace:w1/agent:x', 'workspace:w2/agent:y', 'workspace:w2/agent:y/toolset:t', 'workspace:w3'],
    units: ['TOKENS', 'TOKENS', 'TOKENS', 'CREDITS'],
  },
  {
    name: 'mixed',
    budgets: [
      { at: '', unit: 'TOKENS', allocated: 500 },
      { at: 'workspace:w1', unit: 'USD_MICROCENTS', allocated: 10_000, overdraft: 2_000 },
      { at: 'workspace:w1/agent:z', unit: 'USD_MICROCENTS', allocated: 5_000 },
    ],
    paths: ['', 'workspace:w1', 'workspace:w1/agent:z', 'workspace:w9'],
    units: ['TOKENS', 'USD_MICROCENTS', 'USD_MICROCENTS'],
    extra: { default_commit_overage_policy: 'REJECT' },
  },
  {
    name: 'credit',
    budgets: [
      { at: '', unit: 'CREDITS', allocated: 300, overdraft: 100, policy: 'ALLOW_WITH_OVERDRAFT' },
      { at: 'workspace:w1', unit: 'CREDITS', allocated: 200, overdraft: 50 },
      { at: 'workspace:w1/toolset:t', unit: 'CREDITS', allocated: 100, policy: 'REJECT' },
    ],
    paths: ['', 'workspace:w1', 'workspace:w1/toolset:t', 'workspace:w1/workflow:f'],
    units: ['CREDITS'],
    extra: { max_reservation_extensions: 2 },
  },
];

const scopeOf = (tenant: string, at: string): string => (at === '' ? `tenant:${tenant}` : `tenant:${tenant}/${at}`);

function subjectOf(tenant: string, at: string, withTenant: boolean): Record<string, string> {
  const s: Record<string, string> = withTenant ? { tenant } : {};
  for (const seg of at.split('/').filter(Boolean)) {
    const [level, value] = seg.split(':') as [string, string];
    s[level] = value;
  }
  if (Object.keys(s).length === 0) s.tenant = tenant;
  return s;
}

// ------------------------------------------------------------------ backends under test

export interface Target {
  name: string;
  client: Client;
  /** Tenant name -> API key secret on this backend. */
  keys: Map<string, string>;
  /** Reservation id -> creation ordinal, and back. */
  ids: Map<string, number>;
  byOrdinal: Map<number, string>;
}

/** An operation, described once and sent to every backend. */
interface Op {
  label: string;
  send(t: Target): Promise<Res>;
  /** Called with the first backend's answer, to grow the generator's model. */
  learn?(res: Res): void;
  /** Compare lists as sets (their tie order follows random ids). */
  unordered?: string;
}

const DROP = new Set([
  'request_id',
  'trace_id',
  'expires_at_ms',
  'remaining_ttl_ms',
  'created_at_ms',
  'finalized_at_ms',
  'expired_at_ms',
  'event_id',
  'timestamp',
  'created_at',
  'updated_at',
  'closed_at',
  'suspended_at',
  'next_cursor',
  'ledger_id',
]);

/** Replaces everything that legitimately differs between backends. */
export function normalise(t: Target, body: Json, unordered?: string): Json {
  const ids = [...t.ids.entries()].sort((a, b) => b[0].length - a[0].length);
  const text = (s: string): string => {
    let out = s;
    for (const [id, n] of ids) if (out.includes(id)) out = out.split(id).join(`R#${n}`);
    return out;
  };
  const walk = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return typeof v === 'string' ? text(v) : v;
    const o: Record<string, Json> = {};
    for (const k of Object.keys(v).sort()) if (!DROP.has(k)) o[k] = walk(v[k]);
    return o;
  };
  const out = walk(body);
  if (unordered && out && Array.isArray(out[unordered])) {
    out[unordered] = [...out[unordered]].sort((a: Json, b: Json) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  }
  return out;
}

// ------------------------------------------------------------------ provisioning

export async function provisionAll(targets: Target[], prefix: string): Promise<string[]> {
  const names = TENANTS.map((d) => `${prefix}-${d.name}`);
  for (const t of targets) {
    for (const [i, d] of TENANTS.entries()) {
      const tenant = names[i]!;
      const c = await t.client.post('/v1/admin/tenants', { tenant_id: tenant, name: `diff ${d.name}`, ...(d.extra ?? {}) }, { admin: true });
      assert.equal(c.status, 201, `${t.name}: create tenant: ${show(c)}`);
      const k = await t.client.post('/v1/admin/api-keys', { tenant_id: tenant, name: 'diff' }, { admin: true });
      assert.equal(k.status, 201, `${t.name}: create key: ${show(k)}`);
      t.keys.set(tenant, k.body.key_secret as string);
      for (const b of d.budgets) {
        const body: Record<string, unknown> = { tenant_id: tenant, scope: scopeOf(tenant, b.at), unit: b.unit, allocated: { unit: b.unit, amount: b.allocated } };
        if (b.overdraft !== undefined) body.overdraft_limit = { unit: b.unit, amount: b.overdraft };
        if (b.policy !== undefined) body.commit_overage_policy = b.policy;
        const r = await t.client.post('/v1/admin/budgets', body, { admin: true });
        assert.equal(r.status, 201, `${t.name}: create budget ${String(body.scope)}: ${show(r)}`);
      }
    }
  }
  return names;
}

// ------------------------------------------------------------------ the generator

interface Sent {
  path: (t: Target) => string;
  body: Record<string, unknown>;
  tenant: string;
}

/**
 * The operation source: each call returns the next operation, chosen knowing what the earlier
 * ones created (the reservations the first backend returned), so the sequence stays meaningful.
 */
export function generator(seed: number, tenants: string[], count: number): () => Op {
  const rnd = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const chance = (p: number) => rnd() < p;
  let i = -1;
  /** Reservation ordinals by tenant, as the first backend created them. */
  const reservations: Array<{ n: number; tenant: string; unit: Unit; estimate: number }> = [];
  let created = 0;
  const sent: Sent[] = [];
  const closeAt = Math.floor(count * 0.85);

  const resPath = (n: number, action: string) => (t: Target) => `/v1/reservations/${t.byOrdinal.get(n) ?? `rsv_unknown_${n}`}${action ? `/${action}` : ''}`;
  const seen = new Set<string>();
  /** Any answer may create a reservation (a fresh reserve, or the retry of one that failed before). */
  const observe = (tenant: string) => (r: Res) => {
    const id = r.body?.reservation_id;
    if (r.status !== 200 || typeof id !== 'string' || seen.has(id)) return;
    seen.add(id);
    reservations.push({ n: ++created, tenant, unit: r.body.reserved.unit as Unit, estimate: r.body.reserved.amount as number });
  };
  const post = (label: string, tenant: string, path: (t: Target) => string, body: Record<string, unknown>, keyTenant = tenant): Op => {
    sent.push({ path, body, tenant: keyTenant });
    return { label, send: (t) => t.client.post(path(t), body, { apiKey: t.keys.get(keyTenant)! }), learn: observe(keyTenant) };
  };

  return (): Op => {
    i++;
    if (i === closeAt) {
      const tenant = tenants[1]!;
      return { label: `close tenant ${tenant}`, send: (t) => t.client.request('PATCH', `/v1/admin/tenants/${tenant}`, { body: { status: 'CLOSED' }, admin: true }) };
    }
    const ti = int(0, tenants.length - 1);
    const tenant = tenants[ti]!;
    const def = TENANTS[ti]!;
    const unit = pick(def.units);
    const at = pick(def.paths);
    const subject = subjectOf(tenant, at, chance(0.8));
    const action = { kind: pick(['llm.completion', 'tool.call']), name: `op${int(0, 3)}` };
    const mine = reservations.filter((r) => r.tenant === tenant);
    const roll = rnd();

    if (roll < 0.3) {
      const amount = int(1, 260);
      const body: Record<string, unknown> = { idempotency_key: idem('rsv'), subject, action, estimate: { unit, amount }, ttl_ms: int(60, 600) * 1000 };
      if (chance(0.35)) body.overage_policy = pick(['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'] as const);
      if (chance(0.2)) body.grace_period_ms = int(0, 60_000);
      const dry = chance(0.15);
      if (dry) body.dry_run = true;
      if (chance(0.2)) body.metadata = { run: i, note: 'x' };
      return post(`reserve${dry ? ' (dry run)' : ''} ${unit} ${amount} at ${scopeOf(tenant, at)}`, tenant, () => '/v1/reservations', body);
    } else if (roll < 0.37) {
      const amount = int(1, 400);
      return post(`decide ${unit} ${amount} at ${scopeOf(tenant, at)}`, tenant, () => '/v1/decide', { idempotency_key: idem('dec'), subject, action, estimate: { unit, amount } });
    } else if (roll < 0.52 && mine.length > 0) {
      const r = pick(mine);
      const actual = Math.max(0, r.estimate + int(-r.estimate, 120));
      const body: Record<string, unknown> = { idempotency_key: idem('com'), actual: { unit: chance(0.05) ? pick(['TOKENS', 'CREDITS'] as const) : r.unit, amount: actual } };
      if (chance(0.2)) body.metrics = { tokens_input: int(0, 99) };
      return post(`commit R#${r.n} actual ${actual} (estimate ${r.estimate})`, tenant, resPath(r.n, 'commit'), body);
    } else if (roll < 0.59 && mine.length > 0) {
      const r = pick(mine);
      return post(`release R#${r.n}`, tenant, resPath(r.n, 'release'), { idempotency_key: idem('rel'), reason: 'done' });
    } else if (roll < 0.64 && mine.length > 0) {
      const r = pick(mine);
      return post(`extend R#${r.n}`, tenant, resPath(r.n, 'extend'), { idempotency_key: idem('ext'), extend_by_ms: int(1, 120) * 1000 });
    } else if (roll < 0.72) {
      const amount = int(1, 300);
      const body: Record<string, unknown> = { idempotency_key: idem('evt'), subject, action, actual: { unit, amount } };
      if (chance(0.4)) body.overage_policy = pick(['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'] as const);
      return post(`event ${unit} ${amount} at ${scopeOf(tenant, at)}`, tenant, () => '/v1/events', body);
    } else if (roll < 0.78) {
      const b = pick(def.budgets);
      const operation = pick(['CREDIT', 'DEBIT', 'REPAY_DEBT', 'RESET', 'RESET_SPENT'] as const);
      const amount = operation === 'RESET' || operation === 'RESET_SPENT' ? int(100, 900) : int(1, 200);
      const body: Record<string, unknown> = { operation, amount: { unit: b.unit, amount } };
      if (operation === 'RESET_SPENT' && chance(0.5)) body.spent = { unit: b.unit, amount: int(0, 50) };
      if (chance(0.5)) body.idempotency_key = idem('fund');
      const q = new URLSearchParams({ tenant_id: tenant, scope: scopeOf(tenant, b.at), unit: b.unit }).toString();
      return { label: `fund ${operation} ${amount} at ${scopeOf(tenant, b.at)}`, send: (t) => t.client.post(`/v1/admin/budgets/fund?${q}`, body, { admin: true }) };
    } else if (roll < 0.8) {
      const b = pick(def.budgets);
      const verb = chance(0.6) ? 'freeze' : 'unfreeze';
      const q = new URLSearchParams({ tenant_id: tenant, scope: scopeOf(tenant, b.at), unit: b.unit }).toString();
      return { label: `${verb} ${scopeOf(tenant, b.at)} ${b.unit}`, send: (t) => t.client.post(`/v1/admin/budgets/${verb}?${q}`, { reason: 'diff' }, { admin: true }) };
    } else if (roll < 0.89 && sent.length > 0) {
      // A same-key retry of an earlier request: verbatim (replay) or with another payload (mismatch).
      const s = pick(sent);
      const mismatch = chance(0.25);
      const body = mismatch ? { ...s.body, metadata: { changed: i } } : s.body;
      return {
        label: `${mismatch ? 'mismatched ' : ''}replay of ${String(s.body.idempotency_key)}`,
        send: (t) => t.client.post(s.path(t), body, { apiKey: t.keys.get(s.tenant)! }),
        learn: observe(s.tenant),
      };
    } else if (roll < 0.91 && reservations.length > 0) {
      // Another tenant's reservation: 403; a reservation that never existed: 404.
      const r = pick(reservations);
      const other = tenants[(tenants.indexOf(r.tenant) + 1) % tenants.length]!;
      if (chance(0.5)) return post(`foreign commit R#${r.n}`, r.tenant, resPath(r.n, 'commit'), { idempotency_key: idem('for'), actual: { unit: r.unit, amount: 1 } }, other);
      else return post('commit unknown reservation', tenant, () => `/v1/reservations/rsv_${'0'.repeat(32)}/commit`, { idempotency_key: idem('unk'), actual: { unit, amount: 1 } });
    } else if (roll < 0.94 && mine.length > 0) {
      const r = pick(mine);
      return { label: `get R#${r.n}`, send: (t) => t.client.get(resPath(r.n, '')(t), { apiKey: t.keys.get(tenant)! }) };
    } else if (roll < 0.97) {
      const status = pick([undefined, 'ACTIVE', 'COMMITTED', 'RELEASED'] as const);
      const q = new URLSearchParams({ tenant, limit: '200', ...(status ? { status } : {}) }).toString();
      return { label: `list reservations ${status ?? 'all'}`, send: (t) => t.client.get(`/v1/reservations?${q}`, { apiKey: t.keys.get(tenant)! }), unordered: 'reservations' };
    } else {
      const filter = subjectOf(tenant, pick(def.paths), true);
      const q = new URLSearchParams({ ...filter, include_children: String(chance(0.5)) }).toString();
      return { label: `balances ${q}`, send: (t) => t.client.get(`/v1/balances?${q}`, { apiKey: t.keys.get(tenant)! }), unordered: 'balances' };
    }
  };
}

/** Where reservation ids appear in an answer, to map them to creation order. */
function learnIds(t: Target, res: Res): void {
  const id = res.body?.reservation_id;
  if (res.status === 200 && typeof id === 'string' && !t.ids.has(id)) {
    const n = t.ids.size + 1;
    t.ids.set(id, n);
    t.byOrdinal.set(n, id);
  }
}

export interface RunResult {
  ops: number;
  statuses: Record<string, number>;
}

/** Applies `ops` to every target in order and fails at the first answer that differs. */
export async function runSequence(targets: Target[], next: () => Op, count: number, seed: number): Promise<RunResult> {
  const log: string[] = [];
  const statuses: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const op = next();
    const answers = await Promise.all(targets.map((t) => op.send(t)));
    targets.forEach((t, k) => learnIds(t, answers[k]!));
    op.learn?.(answers[0]!);
    const first = answers[0]!;
    statuses[first.status] = (statuses[first.status] ?? 0) + 1;
    log.push(`#${i} ${op.label} -> ${first.status} ${first.body?.error ?? first.body?.decision ?? first.body?.status ?? ''}`);
    const base = JSON.stringify(normalise(targets[0]!, first.body, op.unordered));
    for (let k = 1; k < targets.length; k++) {
      const a = answers[k]!;
      const norm = JSON.stringify(normalise(targets[k]!, a.body, op.unordered));
      if (a.status !== first.status || norm !== base) {
        assert.fail(
          `backends disagree at op #${i} (${op.label}), seed ${seed} (rerun: CYCLES_DIFF_SEED=${seed}):\n` +
            `  ${targets[0]!.name}: ${show(first)}\n  ${targets[k]!.name}: ${show(a)}\n` +
            `  normalised ${targets[0]!.name}: ${base.slice(0, 800)}\n  normalised ${targets[k]!.name}: ${norm.slice(0, 800)}\n` +
            `last operations:\n  ${log.slice(-25).join('\n  ')}`,
        );
      }
    }
  }
  return { ops: count, statuses };
}

/** Every budget and every reservation, read back from each backend, must be identical. */
export async function compareFinalState(targets: Target[], tenants: string[], seed: number): Promise<void> {
  const snapshot = async (t: Target): Promise<string> => {
    const out: Json[] = [];
    for (const [i, d] of TENANTS.entries()) {
      const tenant = tenants[i]!;
      for (const b of d.budgets) {
        const q = new URLSearchParams({ tenant_id: tenant, scope: scopeOf(tenant, b.at), unit: b.unit }).toString();
        const r = await t.client.get(`/v1/admin/budgets/lookup?${q}`, { admin: true });
        out.push({ budget: `${scopeOf(tenant, b.at)} ${b.unit}`, status: r.status, body: normalise(t, r.body) });
      }
    }
    for (const [n, id] of [...t.byOrdinal.entries()].sort((a, b) => a[0] - b[0])) {
      const r = await t.client.get(`/v1/reservations/${id}`, { admin: true });
      out.push({ reservation: n, status: r.status, body: normalise(t, r.body) });
    }
    return JSON.stringify(out, null, 1);
  };
  const states = await Promise.all(targets.map(snapshot));
  for (let k = 1; k < targets.length; k++) {
    if (states[k] === states[0]) continue;
    const a = states[0]!.split('\n');
    const b = states[k]!.split('\n');
    const at = a.findIndex((line, i) => line !== b[i]);
    assert.fail(
      `final state differs between ${targets[0]!.name} and ${targets[k]!.name} (seed ${seed}) near line ${at}:\n` +
        `  ${targets[0]!.name}: ${a.slice(Math.max(0, at - 8), at + 4).join('\n    ')}\n  ${targets[k]!.name}: ${b.slice(Math.max(0, at - 8), at + 4).join('\n    ')}`,
    );
  }
}
