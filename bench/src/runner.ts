/**
 * One cell of the matrix: a fresh server process, provisioning, warm-up on a tenant of its own,
 * the measured run with RSS sampling, replay of cut-off mutations, and the ledger check.
 */
import type autocannon from 'autocannon';
import { LIST_ROWS, OP_LABEL, type Backend, type Cell, type CellShape, type ListSort, type Op, type Timing } from './plan.js';
import { ProcessMonitor, startServer, type Started, type Usage } from './processes.js';
import { Admin, type Tenant } from './provision.js';
import { round, type LatencySummary } from './stats.js';
import { ceilingTenant, checkLedger, Driver, Phase, type LedgerCheck, type PhaseResult, type Reservation } from './workload.js';

export interface CellResult {
  backend: string;
  op: Op;
  label: string;
  connections: number;
  depth: number;
  tenants: number;
  status: 'ok' | 'failed';
  reason?: string;
  /** Operations per second (lifecycles per second for reserve+commit). */
  opsPerS: number;
  requestsPerS: number;
  /** Filled in at the end, from the ceiling at the same connection count and method. */
  ceilingRps: number | null;
  ratio: number | null;
  /**
   * Target cells only: the mean of the POST ceiling measured just before and just after the cell
   * (report.ts, TARGET_CELLS), and the ratio to it: the machine's speed at the cell's own moment.
   */
  adjacentCeilingRps?: number | null;
  adjacentRatio?: number | null;
  latencyMs: LatencySummary;
  requestLatencyMs: LatencySummary;
  okOps: number;
  errors: number;
  errorKinds: Record<string, number>;
  reconciled: number;
  ledger: LedgerCheck | null;
  rssMaxMb: number | null;
  rssMeanMb: number | null;
  /**
   * CPU during the measured run, in % of one core: the server, the load generator, everything
   * else, what the hypervisor took (steal) and what nobody used (idle).
   */
  serverCpuPct: number | null;
  clientCpuPct: number;
  otherCpuPct: number | null;
  stealCpuPct: number | null;
  idleCpuPct: number | null;
  /** The server's busiest thread, in % of one core: near 100, that thread is what bounds the cell. */
  busiestThreadPct: number | null;
  /** Server CPU time per successful operation: a cost that competing load on the machine hardly moves. */
  serverCpuUsPerOp: number | null;
  startupMs: number;
  elapsedS: number;
}

export type CeilingWhen = 'start' | 'end' | `before ${string}` | `after ${string}`;

export interface CeilingResult {
  method: 'GET' | 'POST';
  connections: number;
  requestsPerS: number;
  latencyMs: LatencySummary;
  errors: number;
  /** At the start or the end of the run, or just before or after the target cell it names. */
  when: CeilingWhen;
  serverCpuPct: number | null;
  serverCpuUsPerReq: number | null;
  clientCpuPct: number;
  otherCpuPct: number | null;
  stealCpuPct: number | null;
  idleCpuPct: number | null;
  busiestThreadPct: number | null;
}

export interface RunContext {
  entry: string;
  adminKey: string;
  runId: string;
  timing: Timing;
  /** Extra node flags for the server process (profiling). */
  nodeArgs?: string[];
  /** Sees the server process's output (--gc). */
  onServerOutput?: (chunk: string) => void;
}

const r1 = (v: number) => round(v, 1);

/** A balances reply lists at least one budget; a sorted page over 10,000 rows always has more. */
const HAS_BALANCES = { test: (body: string) => body.includes('"balances":[{'), what: 'balances' };
const HAS_MORE = { test: (body: string) => body.includes('"has_more":true'), what: 'a full page (has_more)' };

export function requestsFor(driver: Driver, op: Exclude<Op, 'commit' | 'list'>, phase: Phase, tenants: Tenant[]): autocannon.Request[] {
  switch (op) {
    case 'reserve':
      return [driver.reserveRequest(phase, tenants, { countOp: true })];
    case 'lifecycle':
      return driver.lifecycleRequests(phase, tenants);
    case 'decide':
      return [driver.decideRequest(phase, tenants)];
    case 'balances':
      return [driver.readRequest(phase, tenants, (t) => `/v1/balances?tenant=${t.id}&include_children=true`, HAS_BALANCES)];
  }
}

/** Commits pre-created per cell: enough for the measured seconds at a rate well above today's. */
function commitCount(connections: number, measureS: number): number {
  return Math.max(connections * 20, Math.round(measureS * (connections === 1 ? 800 : 3000)));
}

function toResult(cell: Cell, label: string, res: PhaseResult, extra: { ledger: LedgerCheck | null; usage: Usage; startupMs: number; errors?: number; errorKinds?: Record<string, number> }): CellResult {
  const requestsPerS = res.elapsedS > 0 ? res.responses / res.elapsedS : 0;
  const kinds = { ...res.errorKinds };
  for (const [k, v] of Object.entries(extra.errorKinds ?? {})) kinds[k] = (kinds[k] ?? 0) + v;
  return {
    backend: cell.backend.name,
    op: cell.op,
    label,
    connections: cell.connections,
    depth: cell.depth,
    tenants: cell.tenants,
    status: 'ok',
    opsPerS: r1(res.elapsedS > 0 ? res.okOps / res.elapsedS : 0),
    requestsPerS: r1(requestsPerS),
    ceilingRps: null,
    ratio: null,
    latencyMs: res.opLatency,
    requestLatencyMs: res.requestLatency,
    okOps: res.okOps,
    errors: res.errors + (extra.errors ?? 0),
    errorKinds: kinds,
    reconciled: res.reconciled,
    ledger: extra.ledger,
    rssMaxMb: extra.usage.rssMaxMb,
    rssMeanMb: extra.usage.rssMeanMb,
    serverCpuPct: extra.usage.serverCpuPct,
    clientCpuPct: extra.usage.clientCpuPct,
    otherCpuPct: extra.usage.otherCpuPct,
    stealCpuPct: extra.usage.stealCpuPct,
    idleCpuPct: extra.usage.idleCpuPct,
    busiestThreadPct: extra.usage.busiestThreadPct,
    serverCpuUsPerOp: extra.usage.serverCpuS !== null && res.okOps > 0 ? Math.round((extra.usage.serverCpuS / res.okOps) * 1e7) / 10 : null,
    startupMs: Math.round(extra.startupMs),
    elapsedS: res.elapsedS,
  };
}

export function failedResult(cell: Cell, reason: string, startupMs = 0): CellResult {
  const none: LatencySummary = { p50: null, p95: null, p99: null, max: null, mean: null };
  return {
    backend: cell.backend.name, op: cell.op, label: OP_LABEL[cell.op], connections: cell.connections, depth: cell.depth, tenants: cell.tenants,
    status: 'failed', reason, opsPerS: 0, requestsPerS: 0, ceilingRps: null, ratio: null, latencyMs: none, requestLatencyMs: none,
    okOps: 0, errors: 1, errorKinds: { [reason.slice(0, 120)]: 1 }, reconciled: 0, ledger: null, rssMaxMb: null, rssMeanMb: null,
    serverCpuPct: null, clientCpuPct: 0, otherCpuPct: null, stealCpuPct: null, idleCpuPct: null, busiestThreadPct: null, serverCpuUsPerOp: null, startupMs, elapsedS: 0,
  };
}

/** Starts a cell's server; stopping it also removes what the cell stored on a shared store. */
export async function startBackend(ctx: RunContext, backend: Backend, cell: number): Promise<Started> {
  const env = backend.env({ runId: ctx.runId, cell });
  const cleanup = async () => {
    try {
      await backend.cleanup?.(env);
    } catch (e) {
      process.stderr.write(`  warning: cleanup of ${backend.name} cell ${cell} failed: ${(e as Error).message}\n`);
    }
  };
  // A server that never became ready stored nothing worth removing (and its store may be unreachable).
  const server = await startServer({ entry: ctx.entry, adminKey: ctx.adminKey, env, nodeArgs: ctx.nodeArgs, onOutput: ctx.onServerOutput });
  return {
    ...server,
    stop: async () => {
      await server.stop();
      await cleanup();
    },
  };
}

/** Runs one cell of a mutating or balance operation on a fresh server. */
export async function runCell(ctx: RunContext, cell: Cell, index: number): Promise<CellResult> {
  const server = await startBackend(ctx, cell.backend, index);
  try {
    const admin = new Admin(server.url, ctx.adminKey);
    const prefix = `b${ctx.runId}-${index}`;
    const tenants = await admin.tenants(prefix, cell.tenants, cell.depth);
    const warm = await admin.tenant(`${prefix}-warm`, cell.depth);
    const driver = new Driver(server.url, prefix);
    const { warmupS, measureS } = ctx.timing;

    // Warm-up runs the same requests on a tenant of its own (commit warms up with lifecycles).
    const warmOp = cell.op === 'commit' ? 'lifecycle' : (cell.op as Exclude<Op, 'commit' | 'list'>);
    const warmPhase = new Phase();
    await driver.run(warmPhase, { connections: cell.connections, durationS: warmupS, requests: requestsFor(driver, warmOp, warmPhase, [warm]) });
    await driver.reconcile(warmPhase);

    // Errors before the measured run (warm-up, seeding) count too: every run must have none.
    const setup = [warmPhase];
    const queue: Reservation[] = [];
    if (cell.op === 'commit') {
      const seed = new Phase();
      setup.push(seed);
      const n = commitCount(cell.connections, measureS);
      await driver.run(seed, { connections: 50, amount: n, requests: [driver.reserveRequest(seed, tenants, { countOp: true, onHeld: (r) => queue.push(r) })] });
      await driver.reconcile(seed);
      if (queue.length < cell.connections) throw new Error(`only ${queue.length} of ${n} reservations could be created to commit`);
    }

    const phase = new Phase(cell.op === 'lifecycle');
    const monitor = new ProcessMonitor(server.child.pid!);
    if (cell.op === 'commit') {
      await driver.run(phase, { connections: cell.connections, amount: queue.length, requests: [driver.commitRequest(phase, queue)] });
    } else {
      await driver.run(phase, { connections: cell.connections, durationS: measureS, requests: requestsFor(driver, cell.op as Exclude<Op, 'commit' | 'list'>, phase, tenants) });
    }
    const usage = monitor.stop();
    await driver.reconcile(phase);
    const ledger = await checkLedger(server.url, [...tenants, warm]);
    const setupKinds: Record<string, number> = {};
    for (const p of setup) for (const [k, v] of p.errorKinds) setupKinds[k] = (setupKinds[k] ?? 0) + v;
    return toResult(cell, OP_LABEL[cell.op], phase.result(), {
      ledger, usage, startupMs: server.startupMs, errors: setup.reduce((n, p) => n + p.errors, 0), errorKinds: setupKinds,
    });
  } finally {
    await server.stop();
  }
}

/**
 * The sorted-list cells of one backend share a server: LIST_ROWS reservations are created in one
 * tenant (amounts vary, so sorting by `reserved` is meaningful), then each connection count and
 * sort key is measured in turn. Reads change nothing, so one ledger check covers the group.
 */
export async function runListGroup(ctx: RunContext, backend: Backend, shapes: CellShape[], sorts: readonly ListSort[], index: number): Promise<CellResult[]> {
  const server = await startBackend(ctx, backend, index);
  try {
    const admin = new Admin(server.url, ctx.adminKey);
    const prefix = `b${ctx.runId}-${index}`;
    const depth = shapes[0]?.depth ?? 3;
    const tenant = await admin.tenant(`${prefix}-list`, depth);
    const driver = new Driver(server.url, prefix);
    const seed = new Phase();
    await driver.run(seed, {
      connections: 50,
      amount: LIST_ROWS,
      requests: [driver.reserveRequest(seed, [tenant], { countOp: true, amount: (n) => 1 + ((n * 7919) % 1000) })],
    });
    await driver.reconcile(seed);
    const pathOf = (sort: ListSort) => () => `/v1/reservations?sort_by=${sort}&sort_dir=desc&limit=20`;
    const warm = new Phase();
    await driver.run(warm, { connections: 10, durationS: ctx.timing.warmupS, requests: [driver.readRequest(warm, [tenant], pathOf(sorts[0]!))] });
    const out: Array<{ cell: Cell; label: string; res: PhaseResult; usage: Usage }> = [];
    for (const shape of shapes) {
      // The second sort key is measured at 1 and 50 connections only.
      for (const sort of sorts.filter((s, i) => i === 0 || shape.connections === 1 || shape.connections === 50)) {
        const phase = new Phase();
        const monitor = new ProcessMonitor(server.child.pid!);
        await driver.run(phase, { connections: shape.connections, durationS: ctx.timing.measureS, requests: [driver.readRequest(phase, [tenant], pathOf(sort), HAS_MORE)] });
        out.push({ cell: { ...shape, backend }, label: `sorted list (${sort} desc, ${LIST_ROWS} rows)`, res: phase.result(), usage: monitor.stop() });
      }
    }
    const ledger = await checkLedger(server.url, [tenant]);
    const setupErrors = seed.errors + warm.errors;
    return out.map((o, i) =>
      toResult(o.cell, o.label, o.res, { ledger, usage: o.usage, startupMs: server.startupMs, errors: i === 0 ? setupErrors : 0, errorKinds: i === 0 ? Object.fromEntries(seed.errorKinds) : {} }),
    );
  } finally {
    await server.stop();
  }
}

/** The ceiling at one connection count: the same client and request streams as reserve / balances. */
let ceilingBursts = 0;

/** Runs the bare route at one method and connection count; a warm-up of 0 s skips the warm-up burst. */
export async function runCeilingCell(ceiling: Started, method: 'GET' | 'POST', connections: number, timing: Timing, when: CeilingWhen): Promise<CeilingResult> {
  // Keys as long as the first ceilings' (`...-start`), whatever `when` says: the bodies stay comparable.
  const driver = new Driver(ceiling.url, `ceiling-${method}-${connections}-${(ceilingBursts++).toString().padStart(5, '0')}`);
  const tenant = ceilingTenant(3);
  const requests = (phase: Phase) =>
    method === 'POST'
      ? [driver.reserveRequest(phase, [tenant], { countOp: true })]
      : [driver.readRequest(phase, [tenant], (t) => `/v1/balances?tenant=${t.id}&include_children=true`, HAS_BALANCES)];
  const warm = new Phase();
  if (timing.warmupS > 0) await driver.run(warm, { connections, durationS: timing.warmupS, requests: requests(warm) });
  const phase = new Phase();
  const monitor = new ProcessMonitor(ceiling.child.pid!);
  const res = await driver.run(phase, { connections, durationS: timing.measureS, requests: requests(phase) });
  const usage = monitor.stop();
  driver.forget();
  return {
    method,
    connections,
    requestsPerS: r1(res.elapsedS > 0 ? res.responses / res.elapsedS : 0),
    latencyMs: res.requestLatency,
    errors: res.errors + warm.errors,
    when,
    serverCpuPct: usage.serverCpuPct,
    serverCpuUsPerReq: usage.serverCpuS !== null && res.responses > 0 ? Math.round((usage.serverCpuS / res.responses) * 1e7) / 10 : null,
    clientCpuPct: usage.clientCpuPct,
    otherCpuPct: usage.otherCpuPct,
    stealCpuPct: usage.stealCpuPct,
    idleCpuPct: usage.idleCpuPct,
    busiestThreadPct: usage.busiestThreadPct,
  };
}
