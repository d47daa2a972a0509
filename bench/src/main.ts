/**
 * `npm run bench` — load benchmarks of the Cycles server on every available backend against the
 * machine's ceiling (a bare Fastify route driven by the same client in the same run).
 *
 *   npm run bench                      full matrix (about 5 minutes per available backend)
 *   npm run bench -- --quick           the target cells at 50 connections, depth 3 (about 2 minutes with every backend)
 *   npm run bench -- --profile         CPU profile of the server under a reserve load, summarised
 *   npm run bench -- --gc              the server's garbage collection per thread under the same load
 *
 * Options: --backends sqlite,sqlite-full  --ops reserve,lifecycle  --connections 50,200
 *          --duration <s>  --warmup <s>  --server <path to dist/cli/main.js>  --out <dir>
 *          --profile-op <op>  --profile-tenants <1|100> (also for --gc)  --label <text, kept in the JSON>  --strict (exit 1 when a target fails)
 *          --wait-quiet <pct>  before each cell, wait until the rest of the machine uses less
 *                              than <pct>% of one core (at most --wait-max seconds, default 120)
 *          --nice=<n>          run the harness, server and ceiling at this scheduling priority
 *                              (negative needs root): a shared machine's other work yields to them
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BACKENDS, FULL_TIMING, fullMatrix, LIST_SORTS, OP_METHOD, OPS, QUICK_TIMING, type Backend, type Cell, type CellShape, type Op } from './plan.js';
import { killAll, serverEntryAt, setNiceness, startCeiling, StartError, typedPath, waitForQuietMachine } from './processes.js';
import { formatGcSummary, summarizeGcTrace } from './gc-summary.js';
import { formatSummary, summarizeProfile, type CpuProfile } from './profile-summary.js';
import { applyAdjacentCeiling, applyCeilings, ceilingTable, evaluateTargets, isTargetCell, resultsTable, targetsTable, type SkippedBackend } from './report.js';
import { failedResult, runCeilingCell, runCell, runListGroup, type CeilingResult, type CeilingWhen, type CellResult, type RunContext } from './runner.js';

/** How long --wait-quiet waits before each cell before measuring anyway (--wait-max). */
const QUIET_MAX_WAIT_S = 120;

const here = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = resolve(here, '../..');

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    gc: { type: 'boolean', default: false },
    'profile-op': { type: 'string', default: 'reserve' },
    'profile-tenants': { type: 'string', default: '1' },
    backends: { type: 'string' },
    ops: { type: 'string' },
    connections: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    server: { type: 'string' },
    out: { type: 'string' },
    strict: { type: 'boolean', default: false },
    label: { type: 'string' },
    'wait-quiet': { type: 'string' },
    'wait-max': { type: 'string' },
    nice: { type: 'string' },
  },
});

const log = (msg: string) => process.stderr.write(msg + '\n');
const list = (s: string | undefined) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined);

/** The commit the server was built from, when it is this repository's own build. */
function serverRevision(entry: string): string {
  if (!entry.startsWith(repoRoot + '/')) return `build at ${entry}`;
  try {
    const git = (...a: string[]) => execFileSync('git', a, { cwd: repoRoot, encoding: 'utf8' }).trim();
    const dirty = git('status', '--porcelain', '--', 'packages/server/src') !== '';
    return `commit ${git('rev-parse', '--short', 'HEAD')}${dirty ? ' (packages/server/src modified)' : ''}`;
  } catch {
    return `build at ${entry}`;
  }
}

function machine(entry: string) {
  const cpuModel = (() => {
    try {
      return /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim();
    } catch {
      return undefined;
    }
  })() ?? cpus()[0]?.model;
  const commit = serverRevision(entry);
  return {
    cpu: cpuModel,
    cpus: cpus().length,
    memTotalGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    memFreeGb: Math.round((freemem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadavg: loadavg().map((v) => Math.round(v * 100) / 100),
    commit,
  };
}

function selectedBackends(): Backend[] {
  const names = list(args.backends);
  if (!names) return BACKENDS;
  const unknown = names.filter((n) => !BACKENDS.some((b) => b.name === n));
  if (unknown.length) throw new Error(`unknown backend(s) ${unknown.join(', ')}; known: ${BACKENDS.map((b) => b.name).join(', ')}`);
  return BACKENDS.filter((b) => names.includes(b.name));
}

function shapesFor(backend: Backend): CellShape[] {
  let shapes = args.quick ? backend.quick : fullMatrix();
  const ops = list(args.ops);
  if (ops) {
    const bad = ops.filter((o) => !(OPS as readonly string[]).includes(o));
    if (bad.length) throw new Error(`unknown op(s) ${bad.join(', ')}; known: ${OPS.join(', ')}`);
    shapes = shapes.filter((s) => ops.includes(s.op));
  }
  const conns = list(args.connections)?.map(Number);
  if (conns) shapes = shapes.filter((s) => conns.includes(s.connections));
  return shapes;
}

function serverEntry(): string {
  return serverEntryAt(args.server ?? process.env.CYCLES_BENCH_SERVER);
}

function num(s: string | undefined, fallback: number): number {
  if (s === undefined) return fallback;
  const v = Number(s);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`expected a positive number, got "${s}"`);
  return v;
}

const cellName = (c: { backend: Backend | string; op: Op; connections: number; depth: number; tenants: number }) =>
  `${typeof c.backend === 'string' ? c.backend : c.backend.name} ${c.op} c=${c.connections} d=${c.depth} t=${c.tenants}`;

function progress(r: CellResult): string {
  if (r.status === 'failed') return `FAILED ${r.reason}`;
  const ledger = r.ledger ? `ledger ${r.ledger.mismatches} mismatches` : '';
  return `${Math.round(r.opsPerS)} ops/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms, ${r.errors} errors, ${ledger}, RSS ${r.rssMaxMb} MB, start ${r.startupMs} ms`;
}

async function runBenchmarks(ctx: RunContext, outDir: string): Promise<number> {
  const startedAt = new Date();
  const info = machine(ctx.entry);
  const backends = selectedBackends();
  const plan = backends.map((b) => ({ backend: b, shapes: shapesFor(b) }));
  const needed = new Set<string>();
  for (const p of plan) for (const s of p.shapes) needed.add(`${OP_METHOD[s.op]} ${s.connections}`);
  const ceilingCells = [...needed]
    .map((k) => k.split(' ') as ['GET' | 'POST', string])
    .map(([m, c]) => ({ method: m, connections: Number(c) }))
    .sort((a, b) => a.method.localeCompare(b.method) || a.connections - b.connections);

  log(`cycles bench: ${args.quick ? 'quick' : 'full'} mode, ${info.cpus} CPUs (${info.cpu}), node ${info.node}, load ${info.loadavg.join(' ')}`);
  log(`${info.commit}${args.label ? ` (${args.label})` : ''}; warm-up ${ctx.timing.warmupS} s, measure ${ctx.timing.measureS} s per cell`);

  const ceilings: CeilingResult[] = [];
  const ceiling = await startCeiling();
  const quietPct = args['wait-quiet'] === undefined ? undefined : num(args['wait-quiet'], 25);
  const quiet = async () => {
    if (quietPct === undefined) return;
    const q = await waitForQuietMachine(quietPct, num(args['wait-max'], QUIET_MAX_WAIT_S));
    if (q.busyPct > quietPct) log(`  machine still busy after ${q.waitedS} s (${q.busyPct}% of a core): measuring anyway`);
    else if (q.waitedS > 1) log(`  waited ${q.waitedS} s for a quiet machine`);
  };
  const measureCeiling = async (when: 'start' | 'end') => {
    for (const c of ceilingCells) {
      await quiet();
      const r = await runCeilingCell(ceiling, c.method, c.connections, ctx.timing, when);
      ceilings.push(r);
      log(`  ceiling ${c.method} c=${c.connections} (${when}): ${Math.round(r.requestsPerS)} req/s, p99 ${r.latencyMs.p99} ms`);
    }
  };
  /** One POST burst at 50 connections on the warm ceiling server, kept with the run's ceilings. */
  const adjacentCeiling = async (when: CeilingWhen) => {
    const r = await runCeilingCell(ceiling, 'POST', 50, { warmupS: 0, measureS: ctx.timing.measureS }, when);
    ceilings.push(r);
    log(`  ceiling POST c=50 (${when}): ${Math.round(r.requestsPerS)} req/s`);
    return r;
  };
  const results: CellResult[] = [];
  const skipped: SkippedBackend[] = [];
  try {
    await measureCeiling('start');
    let index = 0;
    for (const { backend, shapes } of plan) {
      log(`${backend.name}: ${backend.description}`);
      try {
        await backend.prepare?.(backend.env({ runId: ctx.runId, cell: 0 }));
      } catch (e) {
        log(`  preparing ${backend.name} failed (${(e as Error).message}); trying to start it anyway`);
      }
      const listShapes = shapes.filter((s) => s.op === 'list');
      const others = shapes.filter((s) => s.op !== 'list');
      let available = false;
      const unavailable = (e: unknown) => {
        const reason = e instanceof Error ? e.message : String(e);
        skipped.push({ backend: backend.name, reason });
        log(`  SKIPPED ${backend.name}: ${reason}`);
      };
      let lastBurstAfterTarget: CeilingResult | undefined;
      for (const shape of others) {
        const cell: Cell = { ...shape, backend };
        try {
          await quiet();
          // A target cell's own ceiling, just before and just after it: over a run of many
          // minutes the machine's speed drifts more than the targets' margins.
          // Two target cells in a row share the burst between them.
          const bracket = isTargetCell({ ...shape, backend: backend.name });
          const before = bracket ? (lastBurstAfterTarget ?? (await adjacentCeiling(`before ${cellName(cell)}`))) : undefined;
          lastBurstAfterTarget = undefined;
          const r = await runCell(ctx, cell, index++);
          available = true;
          if (before) {
            lastBurstAfterTarget = await adjacentCeiling(`after ${cellName(cell)}`);
            applyAdjacentCeiling(r, before, lastBurstAfterTarget);
          }
          results.push(r);
          log(`  ${cellName(cell)}: ${progress(r)}`);
        } catch (e) {
          if (!available && e instanceof StartError) {
            unavailable(e);
            break;
          }
          results.push(failedResult(cell, e instanceof Error ? e.message : String(e)));
          log(`  ${cellName(cell)}: FAILED ${e instanceof Error ? e.stack : e}`);
        }
      }
      if (listShapes.length && !skipped.some((s) => s.backend === backend.name)) {
        const sorts = args.quick ? LIST_SORTS.slice(0, 1) : LIST_SORTS;
        try {
          await quiet();
          const rs = await runListGroup(ctx, backend, listShapes, sorts, index++);
          for (const r of rs) {
            results.push(r);
            log(`  ${cellName(r)} ${r.label}: ${progress(r)}`);
          }
        } catch (e) {
          if (!available && e instanceof StartError) unavailable(e);
          else {
            for (const s of listShapes) results.push(failedResult({ ...s, backend }, e instanceof Error ? e.message : String(e)));
            log(`  list: FAILED ${e instanceof Error ? e.stack : e}`);
          }
        }
      }
    }
    if (!args.quick) await measureCeiling('end');
  } finally {
    await ceiling.stop();
  }

  applyCeilings(results, ceilings);
  const targets = evaluateTargets(results, skipped, backends.map((b) => b.name));
  const finishedAt = new Date();
  const report = {
    mode: args.quick ? 'quick' : 'full',
    label: args.label,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationS: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
    machine: { ...info, loadavgEnd: loadavg().map((v) => Math.round(v * 100) / 100) },
    settings: {
      ...ctx.timing,
      client: 'autocannon 8 (programmatic API, one process, no pipelining)',
      nice: args.nice === undefined ? undefined : Number(args.nice),
      serverEntry: ctx.entry,
      backends: backends.map((b) => ({ name: b.name, description: b.description })),
    },
    ceilings,
    results,
    skipped,
    targets,
  };
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `${startedAt.toISOString().replace(/[:.]/g, '-')}${args.quick ? '-quick' : ''}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');

  const measured = [...results, ...ceilings];
  const busiestOf = (pick: (r: { otherCpuPct: number | null; stealCpuPct?: number | null }) => number | null | undefined) =>
    Math.max(0, ...measured.map(pick).filter((v): v is number => typeof v === 'number'));
  const busiest = busiestOf((r) => r.otherCpuPct);
  const steal = busiestOf((r) => r.stealCpuPct);
  const noise = [
    busiest > 25
      ? `Warning: other processes on the machine used up to ${Math.round(busiest)}% of a core during measured runs (column "other CPU %"); the figures of those cells are depressed accordingly.`
      : `Other processes on the machine used at most ${Math.round(busiest)}% of a core during measured runs.`,
    steal > 25
      ? `Warning: the hypervisor took up to ${Math.round(steal)}% of a core from this machine during measured runs (column "steal %"); those cells ran on a slower machine.`
      : `The hypervisor took at most ${Math.round(steal)}% of a core during measured runs (steal).`,
  ].join(' ');
  const md = [
    `## Cycles benchmark (${report.mode}, ${report.startedAt})`,
    '',
    `Machine: ${info.cpus} × ${info.cpu}, ${info.memTotalGb} GB RAM, node ${info.node}, ${info.platform}; load average ${info.loadavg.join(' ')} at start, ${report.machine.loadavgEnd.join(' ')} at end.`,
    `Server: ${info.commit}${args.label ? ` (${args.label})` : ''}, a fresh process per cell, LOG_LEVEL=warn; client: autocannon in one process on the same machine; warm-up ${ctx.timing.warmupS} s, measured ${ctx.timing.measureS} s per cell${args.nice === undefined ? '' : `; harness, server and ceiling at nice ${args.nice}`}.`,
    noise,
    '',
    '### Ceiling',
    '',
    ceilingTable(ceilings),
    '',
    '### Results',
    '',
    'ops/s counts successful operations (a reserve+commit lifecycle is one operation of two requests); ratio = ops/s ÷ ceiling req/s at the same connection count (POST ceiling for writes and decide, GET for reads; in a full run the higher of its start and end); the cells of the throughput targets also have a ceiling of their own, the mean of two POST bursts just before and just after them ("ceiling around", "ratio around"), on which their targets are judged; latency is per operation; ledger = mismatches / scopes checked.',
    '',
    resultsTable(results, skipped),
    '',
    '### Targets',
    '',
    targetsTable(targets),
    '',
    `JSON: ${file}`,
  ].join('\n');
  process.stdout.write(md + '\n');

  const correctness = targets.filter((t) => t.target.startsWith('0 ') && t.status === 'FAIL').length;
  const failedTargets = targets.filter((t) => t.status === 'FAIL').length;
  return correctness > 0 || (args.strict && failedTargets > 0) ? 1 : 0;
}

/** The one cell --profile and --gc run: --profile-op, --profile-tenants, the first backend and connection count. */
function diagnosticCell(): Cell {
  const op = args['profile-op'] as Op;
  if (!(OPS as readonly string[]).includes(op) || op === 'list') throw new Error(`--profile-op must be one of ${OPS.filter((o) => o !== 'list').join(', ')}`);
  const tenants = Number(args['profile-tenants']);
  if (tenants !== 1 && tenants !== 100) throw new Error('--profile-tenants must be 1 or 100');
  return { backend: selectedBackends()[0]!, op, connections: Number(list(args.connections)?.[0] ?? 50), depth: 3, tenants };
}

/** Runs one cell with the server under --trace-gc-nvp and prints its garbage collection per thread. */
async function runGc(ctx: RunContext, outDir: string): Promise<number> {
  const cell = diagnosticCell();
  log(`tracing the garbage collection of ${cellName(cell)} with node --trace-gc-nvp`);
  let output = '';
  const r = await runCell({ ...ctx, nodeArgs: ['--trace-gc-nvp'], onServerOutput: (chunk) => (output += chunk) }, cell, 0);
  log(`  ${progress(r)} (traced)`);
  const rows = summarizeGcTrace(output);
  if (rows.length === 0) throw new Error('the server wrote no GC trace');
  mkdirSync(outDir, { recursive: true });
  const dest = join(outDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${cell.backend.name}-${cell.op}.gc.json`);
  writeFileSync(dest, JSON.stringify({ cell: cellName(cell), result: r, threads: rows }, null, 2) + '\n');
  process.stdout.write(
    `## Garbage collection: ${cellName(cell)}\n\nThe whole cell (provisioning, warm-up and the measured run); ${r.opsPerS.toLocaleString('en-US')} ops/s measured.\n\n${formatGcSummary(rows)}\n\nJSON: ${dest}\n`,
  );
  return 0;
}

/** Runs one cell with the server under --cpu-prof and prints where its time goes. */
async function runProfile(ctx: RunContext, outDir: string): Promise<number> {
  const cell = diagnosticCell();
  const { backend, op } = cell;
  const dir = mkdtempSync(join(tmpdir(), 'cycles-prof-'));
  log(`profiling ${cellName(cell)} with node --cpu-prof`);
  const r = await runCell({ ...ctx, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`] }, cell, 0);
  log(`  ${progress(r)} (under the profiler)`);
  // One file per thread: with the SQLite store thread on, the store's work is in a profile of its own.
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ f, profile: JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile }))
    .sort((a, b) => a.profile.startTime - b.profile.startTime);
  if (files.length === 0) throw new Error(`no .cpuprofile written in ${dir}`);
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  for (const [i, { f, profile }] of files.entries()) {
    // The main thread starts first; any later profile is a worker's (the store thread).
    const thread = i === 0 ? 'request thread' : `worker thread ${i}`;
    const dest = join(outDir, `${stamp}-${backend.name}-${op}${i === 0 ? '' : `-worker${i}`}.cpuprofile`);
    copyFileSync(join(dir, f), dest);
    const summary = summarizeProfile(profile, 30);
    writeFileSync(dest.replace(/\.cpuprofile$/, '.summary.json'), JSON.stringify({ cell: cellName(cell), thread, result: r, summary }, null, 2) + '\n');
    process.stdout.write(`## CPU profile: ${cellName(cell)}, ${thread}\n\n${formatSummary(summary)}\n\nProfile: ${dest} (open in Chrome DevTools > Performance)\n\n`);
  }
  rmSync(dir, { recursive: true, force: true });
  return 0;
}

async function main(): Promise<number> {
  if (args.nice !== undefined) {
    const n = Number(args.nice);
    if (!Number.isInteger(n) || n < -20 || n > 19) throw new Error(`--nice must be an integer from -20 to 19, got "${args.nice}"`);
    setNiceness(n);
  }
  const timing = {
    warmupS: num(args.warmup, (args.quick ? QUICK_TIMING : FULL_TIMING).warmupS),
    measureS: num(args.duration, (args.quick ? QUICK_TIMING : FULL_TIMING).measureS),
  };
  const ctx: RunContext = {
    entry: serverEntry(),
    adminKey: `bench-admin-${randomBytes(12).toString('hex')}`,
    runId: randomBytes(3).toString('hex'),
    timing,
  };
  const outDir = args.out === undefined ? join(repoRoot, 'bench/results') : typedPath(args.out);
  if (args.profile) return runProfile(ctx, outDir);
  if (args.gc) return runGc(ctx, outDir);
  return runBenchmarks(ctx, outDir);
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping the server and ceiling processes`);
    killAll();
    process.exit(130);
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(2);
  },
);
