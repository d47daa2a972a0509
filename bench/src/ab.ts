/**
 * `npm run bench:ab` — two builds (or one build under two settings) compared on the same machine
 * at the same moments: both servers run side by side and are loaded in alternating short bursts
 * (A B, B A, A B, ...), so that a machine whose speed drifts by a factor of two within minutes
 * (docs/benchmarks.md, "Machine") slows both alike. Differences of a few percent that separate
 * harness runs cannot show become visible in the per-round ratios.
 *
 *   npm run bench:ab -- --b /path/to/other/packages/server/dist/cli/main.js
 *   npm run bench:ab -- --env-b CYCLES_SQLITE_CHECKPOINT_MS=250         (same build, other setting)
 *
 * Options: --a <main.js> (default: this checkout's build)  --b <main.js> (default: --a)
 *          --env-a K=V,K=V  --env-b K=V,K=V  --backend sqlite|sqlite-full|redis|postgres
 *          --op reserve|lifecycle|decide|balances  --connections 50  --depth 3  --tenants 1
 *          --rounds 12  --seconds 2  --warmup 2  --nice=<n>  --out <dir>
 *
 * Prints, for each build, operations per second, the server's CPU time per operation and that of
 * everything else but the load generator (with Redis or PostgreSQL, mostly that server's) over all
 * its bursts, the CPU of the server's busiest thread, and the ratio B/A of each round: its median,
 * its range and in how many rounds B was ahead. Each server's ledger is checked at the end; any
 * failed request or mismatch exits 1.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BACKENDS, OPS, type Backend, type Op } from './plan.js';
import { killAll, ProcessMonitor, serverEntryAt, setNiceness, typedPath, type Started } from './processes.js';
import { Admin, type Tenant } from './provision.js';
import { requestsFor, startBackend } from './runner.js';
import { ratios, round } from './stats.js';
import { checkLedger, Driver, Phase } from './workload.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = resolve(here, '../..');

const { values: args } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    'env-a': { type: 'string' },
    'env-b': { type: 'string' },
    backend: { type: 'string', default: 'sqlite' },
    op: { type: 'string', default: 'reserve' },
    connections: { type: 'string', default: '50' },
    depth: { type: 'string', default: '3' },
    tenants: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '12' },
    seconds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '2' },
    nice: { type: 'string' },
    out: { type: 'string' },
  },
});

const log = (msg: string) => process.stderr.write(msg + '\n');

function positive(name: string, integer = true): number {
  const v = Number(args[name as keyof typeof args]);
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}`);
  return v;
}

/** K=V,K=V into an environment; values may not contain commas. */
function envOf(spec: string | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`expected K=V in "${pair}"`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return env;
}

const backend: Backend | undefined = BACKENDS.find((b) => b.name === args.backend);
if (!backend) throw new Error(`unknown backend ${args.backend}; known: ${BACKENDS.map((b) => b.name).join(', ')}`);
const op = args.op as Op;
const AB_OPS: readonly Op[] = ['reserve', 'lifecycle', 'decide', 'balances'];
if (!AB_OPS.includes(op)) throw new Error(`--op must be one of ${AB_OPS.join(', ')} (known to the harness: ${OPS.join(', ')})`);
const connections = positive('connections');
const depth = positive('depth');
if (depth > 6) throw new Error('--depth must be at most 6');
const tenantCount = positive('tenants');
const rounds = positive('rounds');
const seconds = positive('seconds', false);
const warmupS = positive('warmup', false);
if (args.nice !== undefined) setNiceness(Number(args.nice));

/**
 * One measured burst: successful operations, seconds, the server's CPU seconds, the CPU seconds of
 * everything else but the load generator (with Redis or PostgreSQL, mostly that server's own work
 * for the operations) and the steal (the hypervisor's share, in % of one core) during it; null:
 * unreadable.
 */
interface Round {
  ops: number;
  seconds: number;
  cpuS: number | null;
  otherCpuS: number | null;
  stealPct: number | null;
  /** The server's busiest thread, in % of one core (near 100: that thread bounds the build). */
  busiestPct: number | null;
}

interface Side {
  name: 'A' | 'B';
  entry: string;
  env: Record<string, string>;
  server?: Started;
  driver?: Driver;
  tenants?: Tenant[];
  errors: number;
  errorKinds: Record<string, number>;
  rounds: Round[];
}

const opsPerS = (r: Round): number => (r.seconds > 0 ? r.ops / r.seconds : 0);
/** CPU µs per operation of a burst's CPU seconds `cpuS`. */
const usPerOp = (cpuS: number | null, r: Round): number | null => (cpuS !== null && r.ops > 0 ? (cpuS / r.ops) * 1e6 : null);
const cpuUsPerOp = (r: Round): number | null => usPerOp(r.cpuS, r);
const otherUsPerOp = (r: Round): number | null => usPerOp(r.otherCpuS, r);
/** All of a side's bursts as one. */
const total = (s: Side): Round => {
  const sum = (f: (r: Round) => number | null): number | null => (s.rounds.some((r) => f(r) === null) ? null : s.rounds.reduce((n, r) => n + f(r)!, 0));
  const seconds = sum((r) => r.seconds)!;
  // Weighted by each burst's length: the share over all of a side's bursts.
  const meanPct = (f: (r: Round) => number | null): number | null => {
    const pctS = sum((r) => (f(r) === null ? null : f(r)! * r.seconds));
    return pctS === null ? null : pctS / Math.max(1e-9, seconds);
  };
  return {
    ops: sum((r) => r.ops)!,
    seconds,
    cpuS: sum((r) => r.cpuS),
    otherCpuS: sum((r) => r.otherCpuS),
    stealPct: meanPct((r) => r.stealPct),
    busiestPct: meanPct((r) => r.busiestPct),
  };
};

const sides: Side[] = [
  { name: 'A', entry: serverEntryAt(args.a), env: envOf(args['env-a']), errors: 0, errorKinds: {}, rounds: [] },
  { name: 'B', entry: serverEntryAt(args.b ?? args.a), env: envOf(args['env-b']), errors: 0, errorKinds: {}, rounds: [] },
];
if (sides[0]!.entry === sides[1]!.entry && JSON.stringify(sides[0]!.env) === JSON.stringify(sides[1]!.env)) {
  log('note: A and B are the same build with the same settings (an A/A run: its spread is the noise floor)');
}

const adminKey = `ab-admin-${randomBytes(12).toString('hex')}`;
const runId = randomBytes(4).toString('hex');

async function burst(side: Side, durationS: number, measured: boolean): Promise<void> {
  const phase = new Phase(op === 'lifecycle');
  const monitor = new ProcessMonitor(side.server!.child.pid!);
  await side.driver!.run(phase, { connections, durationS, requests: requestsFor(side.driver!, op as Exclude<Op, 'commit' | 'list'>, phase, side.tenants!) });
  const usage = monitor.stop();
  await side.driver!.reconcile(phase);
  side.errors += phase.errors;
  for (const [k, v] of phase.errorKinds) side.errorKinds[k] = (side.errorKinds[k] ?? 0) + v;
  if (measured) side.rounds.push({ ops: phase.okOps, seconds: phase.elapsedS, cpuS: usage.serverCpuS, otherCpuS: usage.otherCpuS, stealPct: usage.stealCpuPct, busiestPct: usage.busiestThreadPct });
}

const describe = (r: Round): string => {
  const cpu = cpuUsPerOp(r);
  const other = otherUsPerOp(r);
  return `${Math.round(opsPerS(r))} ops/s${cpu === null ? '' : ` ${Math.round(cpu)} µs/op`}${other === null ? '' : ` other ${Math.round(other)} µs/op`}${r.busiestPct === null ? '' : ` busiest thread ${Math.round(r.busiestPct)}%`}${r.stealPct === null ? '' : ` steal ${Math.round(r.stealPct)}%`}`;
};

/**
 * Throughput with nothing stolen: a least-squares line of each round's ops/s against the steal
 * during it (ops/s = at0 + perPct × steal), for machines whose steal moves from round to round.
 * Null without steal figures, with fewer than four rounds, or when the steal hardly varied.
 */
function atZeroSteal(rounds: Round[]): { at0: number; perPct: number; residualSd: number } | null {
  const pts = rounds.filter((r) => r.stealPct !== null).map((r) => [r.stealPct!, opsPerS(r)] as const);
  if (pts.length < 4) return null;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const mx = mean(pts.map((p) => p[0]));
  const my = mean(pts.map((p) => p[1]));
  const sxx = pts.reduce((n, [x]) => n + (x - mx) ** 2, 0);
  if (sxx / pts.length < 25) return null; // steal within about ±5% of a core: the plain figures say it
  const perPct = pts.reduce((n, [x, y]) => n + (x - mx) * (y - my), 0) / sxx;
  const at0 = my - perPct * mx;
  const residualSd = Math.sqrt(mean(pts.map(([x, y]) => (y - at0 - perPct * x) ** 2)));
  return { at0: round(at0, 0), perPct: round(perPct, 1), residualSd: round(residualSd, 0) };
}

process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});

let exitCode = 0;
try {
  await backend.prepare?.(backend.env({ runId, cell: 0 }));
  for (const [i, side] of sides.entries()) {
    const ctx = { entry: side.entry, adminKey, runId, timing: { warmupS, measureS: seconds } };
    const started = await startBackend(ctx, { ...backend, env: (ns) => ({ ...backend.env(ns), ...side.env }) }, i);
    side.server = started;
    const prefix = `ab${runId}-${side.name.toLowerCase()}`;
    side.tenants = await new Admin(started.url, adminKey).tenants(prefix, tenantCount, depth);
    side.driver = new Driver(started.url, prefix);
    log(`${side.name}: ${side.entry}${Object.keys(side.env).length ? ` with ${JSON.stringify(side.env)}` : ''} on ${backend.name}, start-up ${Math.round(started.startupMs)} ms`);
  }
  for (const side of sides) await burst(side, warmupS, false);
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) await burst(side, seconds, true);
    log(`round ${i + 1}/${rounds}: ${sides.map((s) => `${s.name} ${describe(s.rounds.at(-1)!)}`).join(' | ')}`);
  }
  const ledgers = await Promise.all(sides.map((s) => checkLedger(s.server!.url, s.tenants!)));

  const [A, B] = sides as [Side, Side];
  const tput = ratios(A.rounds.map(opsPerS), B.rounds.map(opsPerS), 'up');
  const withCpu = A.rounds.map((r, i) => [cpuUsPerOp(r), cpuUsPerOp(B.rounds[i]!)]).filter((p): p is [number, number] => p[0] !== null && p[1] !== null);
  const cpu = ratios(withCpu.map((p) => p[0]), withCpu.map((p) => p[1]), 'down');
  const fits = [atZeroSteal(A.rounds), atZeroSteal(B.rounds)] as const;
  const stealLine =
    fits[0] && fits[1]
      ? `With nothing stolen (a line of ops/s against steal over each build's rounds): A ${fits[0].at0.toLocaleString('en-US')} ops/s (${fits[0].perPct} per % of a core stolen, residual sd ${fits[0].residualSd}), ` +
        `B ${fits[1].at0.toLocaleString('en-US')} (${fits[1].perPct}, sd ${fits[1].residualSd}): B/A ${round(fits[1].at0 / fits[0].at0, 3)}.`
      : undefined;
  const row = (s: Side, i: number) => {
    const t = total(s);
    const us = cpuUsPerOp(t);
    const other = otherUsPerOp(t);
    return `| ${s.name} | ${Math.round(opsPerS(t)).toLocaleString('en-US')} | ${us === null ? '–' : round(us, 1)} | ${other === null ? '–' : round(other, 1)} | ${t.busiestPct === null ? '–' : Math.round(t.busiestPct)} | ${t.stealPct === null ? '–' : Math.round(t.stealPct)} | ${s.errors} | ${ledgers[i]!.mismatches} / ${ledgers[i]!.scopes} |`;
  };
  const md = [
    `## A/B: ${backend.name} ${op}, ${connections} connections, depth ${depth}, ${tenantCount} tenant(s), ${rounds} rounds of ${seconds} s each`,
    '',
    `A: ${A.entry}${Object.keys(A.env).length ? ` ${JSON.stringify(A.env)}` : ''}`,
    `B: ${B.entry}${Object.keys(B.env).length ? ` ${JSON.stringify(B.env)}` : ''}`,
    '',
    '| build | ops/s | server CPU µs/op | other CPU µs/op | busiest thread % | steal % | errors | ledger mismatches |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    row(A, 0),
    row(B, 1),
    '',
    `Per round, B/A: throughput median ${tput.median} (range ${tput.min}–${tput.max}, B ahead in ${tput.bAhead} of ${rounds}); ` +
      `CPU per operation median ${cpu.median} (range ${cpu.min}–${cpu.max}, B cheaper in ${cpu.bAhead} of ${withCpu.length}).`,
    ...(stealLine ? ['', stealLine] : []),
  ].join('\n');
  process.stdout.write(md + '\n');
  const outDir = args.out === undefined ? join(repoRoot, 'bench/results') : typedPath(args.out);
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-ab.json`);
  const strip = ({ server: _s, driver: _d, tenants: _t, ...rest }: Side) => rest;
  writeFileSync(file, JSON.stringify({ backend: backend.name, op, connections, depth, tenants: tenantCount, rounds, seconds, sides: sides.map(strip), ledgers, throughputRatio: tput, cpuRatio: cpu, atZeroSteal: { A: fits[0], B: fits[1] } }, null, 2));
  log(`JSON: ${file}`);
  if (sides.some((s) => s.errors > 0) || ledgers.some((l) => l.mismatches > 0)) {
    for (const s of sides) if (s.errors > 0) log(`${s.name}: ${s.errors} failed requests: ${JSON.stringify(s.errorKinds)}`);
    exitCode = 1;
  }
} finally {
  for (const s of sides) await s.server?.stop();
}
process.exit(exitCode);
