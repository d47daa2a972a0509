/**
 * Request streams for each benchmarked operation, driven by autocannon, and the bookkeeping that
 * lets the harness check the ledger afterwards: every successful mutation is added to its tenant's
 * tally, and mutations still in flight when a run stops are replayed with the same idempotency key
 * (which returns the original outcome, or applies the request once) so the tally is exact.
 */
import autocannon from 'autocannon';
import { ALLOCATED, subjectAt, UNIT, type Tenant } from './provision.js';
import { round, Samples, type LatencySummary } from './stats.js';

/** Every reservation holds this much (the reference's benchmarks use 100 as well)... */
export const RESERVE_AMOUNT = 100;
/** ...and a commit charges this much of it, releasing the rest. */
export const COMMIT_AMOUNT = 80;
/** Long enough that no hold expires during a run, within the default tenant maximum (1 h). */
export const TTL_MS = 3_600_000;
/** autocannon's per-request timeout, in seconds. */
const REQUEST_TIMEOUT_S = 30;
const MAX_ERROR_SAMPLES = 5;
const REPLAY_CONCURRENCY = 16;

const ACTION = '{"kind":"llm.completion","name":"bench"}';

type Ctx = autocannon.Context;

interface InFlight {
  kind: 'reserve' | 'commit';
  tenant: Tenant;
  path: string;
  body: string;
  /** Reserve: the estimate. Commit: the hold being settled. */
  amount: number;
}

export interface Reservation {
  tenant: Tenant;
  id: string;
  amount: number;
}

/** What one load run saw. */
export class Phase {
  readonly requestLatency = new Samples();
  /** Per operation: equal to requestLatency except for the two-request lifecycle. */
  readonly opLatency = new Samples();
  okOps = 0;
  responses = 0;
  errors = 0;
  reconciled = 0;
  readonly errorKinds = new Map<string, number>();
  started = 0;
  lastResponse = 0;

  constructor(readonly pairLatency = false) {}

  fail(what: string): void {
    this.errors++;
    if (this.errorKinds.size < MAX_ERROR_SAMPLES || this.errorKinds.has(what)) {
      this.errorKinds.set(what, (this.errorKinds.get(what) ?? 0) + 1);
    }
  }

  failStatus(status: number, body: string): void {
    const code = /"error":"([A-Z_]+)"/.exec(body)?.[1];
    this.fail(`${status}${code ? ' ' + code : ''}`);
  }

  get elapsedS(): number {
    return this.lastResponse > this.started ? (this.lastResponse - this.started) / 1000 : 0;
  }

  result(): PhaseResult {
    return {
      elapsedS: round(this.elapsedS, 3),
      responses: this.responses,
      okOps: this.okOps,
      errors: this.errors,
      errorKinds: Object.fromEntries(this.errorKinds),
      reconciled: this.reconciled,
      requestLatency: this.requestLatency.summary(),
      opLatency: (this.pairLatency ? this.opLatency : this.requestLatency).summary(),
    };
  }
}

export interface PhaseResult {
  elapsedS: number;
  responses: number;
  okOps: number;
  errors: number;
  errorKinds: Record<string, number>;
  /** Mutations in flight at the end of the run, replayed by idempotency key for the ledger check. */
  reconciled: number;
  requestLatency: LatencySummary;
  opLatency: LatencySummary;
}

function reservationIdOf(body: string): string | undefined {
  const at = body.indexOf('"reservation_id":"');
  if (at < 0) return undefined;
  const start = at + 18;
  const end = body.indexOf('"', start);
  return end > start ? body.slice(start, end) : undefined;
}

/** A tenant that exists only on the ceiling server (which answers anything). */
export function ceilingTenant(depth: number): Tenant {
  const { subject, scopes } = subjectAt('bench-t0', depth);
  const apiKey = 'cyc_live_ceiling0000000000000000000000000';
  return {
    id: 'bench-t0', apiKey, depth, subject, subjectJson: JSON.stringify(subject), scopes,
    headers: { 'content-type': 'application/json', 'x-cycles-api-key': apiKey }, tally: { reserved: 0, spent: 0 },
  };
}

export class Driver {
  private seq = 0;
  private turn = 0;
  private readonly inFlight = new Map<string, InFlight>();

  constructor(readonly url: string, private readonly keyPrefix: string) {}

  private nextKey(): string {
    return `${this.keyPrefix}-${(this.seq++).toString(36)}`;
  }

  /** Tenants take turns, so a many-tenant run spreads its requests evenly. */
  private pick(tenants: Tenant[]): Tenant {
    return tenants[this.turn++ % tenants.length]!;
  }

  private reserveBody(t: Tenant, key: string, amount: number): string {
    return `{"idempotency_key":"${key}","subject":${t.subjectJson},"action":${ACTION},"estimate":{"unit":"${UNIT}","amount":${amount}},"ttl_ms":${TTL_MS}}`;
  }

  /**
   * POST /v1/reservations. `onHeld` sees each granted reservation; `countOp` makes each granted
   * reservation one operation of the phase (reserve runs), otherwise the caller counts.
   */
  reserveRequest(phase: Phase, tenants: Tenant[], opts: { countOp: boolean; amount?: (n: number) => number; onHeld?: (r: Reservation, ctx: Ctx) => void }): autocannon.Request {
    return {
      method: 'POST',
      path: '/v1/reservations',
      setupRequest: (req, ctx) => {
        const t = this.pick(tenants);
        const key = this.nextKey();
        const amount = opts.amount ? opts.amount(this.seq) : RESERVE_AMOUNT;
        const body = this.reserveBody(t, key, amount);
        this.inFlight.set(key, { kind: 'reserve', tenant: t, path: '/v1/reservations', body, amount });
        ctx.key = key;
        ctx.tenant = t;
        ctx.amount = amount;
        ctx.t0 = performance.now();
        Object.assign(req.headers!, t.headers);
        req.body = body;
        return req;
      },
      onResponse: (status, body, ctx) => {
        this.inFlight.delete(ctx.key as string);
        if (status !== 200) return phase.failStatus(status, body);
        const t = ctx.tenant as Tenant;
        const amount = ctx.amount as number;
        t.tally.reserved += amount;
        if (opts.countOp) phase.okOps++;
        if (opts.onHeld) {
          const id = reservationIdOf(body);
          if (id === undefined) return phase.fail('200 without reservation_id');
          opts.onHeld({ tenant: t, id, amount }, ctx);
        }
      },
    };
  }

  private commitOf(phase: Phase, req: autocannon.RequestParams, ctx: Ctx, r: Reservation): autocannon.RequestParams {
    const key = this.nextKey();
    const path = `/v1/reservations/${r.id}/commit`;
    const body = `{"idempotency_key":"${key}","actual":{"unit":"${UNIT}","amount":${COMMIT_AMOUNT}}}`;
    this.inFlight.set(key, { kind: 'commit', tenant: r.tenant, path, body, amount: r.amount });
    ctx.commitKey = key;
    ctx.held = r;
    req.path = path;
    Object.assign(req.headers!, r.tenant.headers);
    req.body = body;
    return req;
  }

  private onCommitted(phase: Phase, status: number, body: string, ctx: Ctx): boolean {
    this.inFlight.delete(ctx.commitKey as string);
    if (status !== 200) {
      phase.failStatus(status, body);
      return false;
    }
    const r = ctx.held as Reservation;
    r.tenant.tally.reserved -= r.amount;
    r.tenant.tally.spent += COMMIT_AMOUNT;
    phase.okOps++;
    return true;
  }

  /** Reserve then commit that reservation: one lifecycle, two requests on one connection. */
  lifecycleRequests(phase: Phase, tenants: Tenant[]): autocannon.Request[] {
    const reserve = this.reserveRequest(phase, tenants, { countOp: false, onHeld: (r, ctx) => (ctx.held = r) });
    const commit: autocannon.Request = {
      method: 'POST',
      // A failed reserve leaves nothing to commit: returning null starts the next lifecycle.
      setupRequest: (req, ctx) => (ctx.held ? this.commitOf(phase, req, ctx, ctx.held as Reservation) : null),
      onResponse: (status, body, ctx) => {
        if (this.onCommitted(phase, status, body, ctx)) phase.opLatency.add(performance.now() - (ctx.t0 as number));
      },
    };
    return [reserve, commit];
  }

  /** Commits reservations created beforehand; the run's `amount` must equal the queue's length. */
  commitRequest(phase: Phase, queue: Reservation[]): autocannon.Request {
    let next = 0;
    return {
      method: 'POST',
      setupRequest: (req, ctx) => {
        const r = queue[next++];
        if (!r) throw new Error('commit queue exhausted: the run must not ask for more commits than reservations');
        return this.commitOf(phase, req, ctx, r);
      },
      onResponse: (status, body, ctx) => void this.onCommitted(phase, status, body, ctx),
    };
  }

  decideRequest(phase: Phase, tenants: Tenant[]): autocannon.Request {
    return {
      method: 'POST',
      path: '/v1/decide',
      setupRequest: (req, _ctx) => {
        const t = this.pick(tenants);
        Object.assign(req.headers!, t.headers);
        req.body = `{"idempotency_key":"${this.nextKey()}","subject":${t.subjectJson},"action":${ACTION},"estimate":{"unit":"${UNIT}","amount":${RESERVE_AMOUNT}}}`;
        return req;
      },
      onResponse: (status, body) => {
        if (status !== 200) return phase.failStatus(status, body);
        if (!body.includes('"decision":"ALLOW"')) return phase.fail('decide did not ALLOW');
        phase.okOps++;
      },
    };
  }

  /** A GET whose success is a 200 whose body passes `expect` (a cheap check that it is not empty). */
  readRequest(phase: Phase, tenants: Tenant[], pathOf: (t: Tenant) => string, expect?: { test: (body: string) => boolean; what: string }): autocannon.Request {
    return {
      method: 'GET',
      setupRequest: (req, _ctx) => {
        const t = this.pick(tenants);
        req.path = pathOf(t);
        req.headers!['x-cycles-api-key'] = t.apiKey;
        return req;
      },
      onResponse: (status, body) => {
        if (status !== 200) return phase.failStatus(status, body);
        if (expect && !expect.test(body)) return phase.fail(`200 without ${expect.what}`);
        phase.okOps++;
      },
    };
  }

  /**
   * Runs autocannon for `durationS` seconds, or until `amount` requests are answered.
   * Throughput is taken from the harness's own clock: first request to last response.
   */
  async run(phase: Phase, opts: { connections: number; durationS?: number; amount?: number; requests: autocannon.Request[] }): Promise<PhaseResult> {
    const instance = autocannon({
      url: this.url,
      connections: opts.connections,
      ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationS ?? 5 }),
      timeout: REQUEST_TIMEOUT_S,
      sampleInt: 100,
      requests: opts.requests,
    });
    instance.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => {
      phase.responses++;
      phase.requestLatency.add(ms);
      phase.lastResponse = performance.now();
    });
    instance.on('reqError', (err: Error) => phase.fail(`transport: ${err.message}`));
    phase.started = performance.now();
    await instance;
    return phase.result();
  }

  /** Forgets in-flight requests (ceiling runs, where nothing is kept). */
  forget(): void {
    this.inFlight.clear();
  }

  /**
   * Replays every mutation whose reply the run cut off, with its original idempotency key: the
   * server either returns the original outcome or applies it now, and the tally follows.
   */
  async reconcile(phase: Phase): Promise<void> {
    const items = [...this.inFlight.values()];
    this.inFlight.clear();
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const p = items[next++]!;
        const res = await fetch(this.url + p.path, { method: 'POST', headers: p.tenant.headers, body: p.body });
        const text = await res.text();
        phase.reconciled++;
        if (res.status !== 200) {
          phase.failStatus(res.status, text);
          continue;
        }
        if (p.kind === 'reserve') {
          p.tenant.tally.reserved += p.amount;
        } else {
          p.tenant.tally.reserved -= p.amount;
          p.tenant.tally.spent += COMMIT_AMOUNT;
        }
      }
    };
    await Promise.all(Array.from({ length: REPLAY_CONCURRENCY }, worker));
  }
}

export interface LedgerCheck {
  scopes: number;
  mismatches: number;
  details: string[];
}

/** Compares every scope's balance with the tally of the operations that succeeded on it. */
export async function checkLedger(url: string, tenants: Tenant[]): Promise<LedgerCheck> {
  const out: LedgerCheck = { scopes: 0, mismatches: 0, details: [] };
  const miss = (what: string) => {
    out.mismatches++;
    if (out.details.length < 10) out.details.push(what);
  };
  for (const t of tenants) {
    const res = await fetch(`${url}/v1/balances?tenant=${t.id}&include_children=true&limit=50`, { headers: { 'x-cycles-api-key': t.apiKey } });
    if (res.status !== 200) {
      miss(`${t.id}: balances answered ${res.status}`);
      continue;
    }
    type Amt = { amount: number };
    const body = (await res.json()) as { balances: Array<{ scope: string; reserved: Amt; spent: Amt; remaining: Amt; debt: Amt; allocated: Amt }> };
    const byScope = new Map(body.balances.map((b) => [b.scope, b]));
    const expected = { reserved: t.tally.reserved, spent: t.tally.spent, debt: 0, allocated: ALLOCATED, remaining: ALLOCATED - t.tally.reserved - t.tally.spent };
    for (const scope of t.scopes) {
      out.scopes++;
      const b = byScope.get(scope);
      if (!b) {
        miss(`${scope}: missing`);
        continue;
      }
      for (const [field, want] of Object.entries(expected)) {
        const got = b[field as keyof typeof expected].amount;
        if (got !== want) miss(`${scope}: ${field} ${got}, expected ${want}`);
      }
    }
  }
  return out;
}
