/**
 * The embedded store alone, without HTTP: concurrent reserves straight into the built SqliteStore
 * (in this process), for changes to the store whose effect the HTTP benchmark's noise would hide.
 *
 *   npm run bench:store -- [--tenants 1|100] [--concurrency 50] [--duration 6] [--checkpoint-ms 50]
 *                          [--sync normal|full] [--dist <packages/server/dist>] [--b <other dist> --rounds 12]
 *
 * Prints reserves/s and the latency of each reserve (p50, p99, max), from the call to its group's
 * commit. Depth 3 (tenant, workspace, app), as in the HTTP benchmark's target cells.
 *
 * With --b, two builds' stores (--dist, default this checkout's, and --b) run in this one process
 * in alternating bursts of --duration seconds (A B, B A, ...), and the per-round ratios B/A of
 * reserves/s and of this process's CPU time per reserve are printed: a store change of a few
 * percent that an HTTP A/B cannot separate from a shared vCPU's steal shows here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { distOf, loadBuild, provisionTenant, reserveRequest } from './builds.js';
import { ratios, round, Samples } from './stats.js';

const { values: args } = parseArgs({
  options: {
    tenants: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '50' },
    duration: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '1' },
    'checkpoint-ms': { type: 'string', default: '50' },
    sync: { type: 'string', default: 'normal' },
    dist: { type: 'string' },
    b: { type: 'string' },
    rounds: { type: 'string', default: '12' },
  },
});
const tenants = Number(args.tenants);
const concurrency = Number(args.concurrency);
const checkpointMs = Number(args['checkpoint-ms']);
if (!(tenants >= 1 && concurrency >= 1 && checkpointMs >= 0) || (args.sync !== 'normal' && args.sync !== 'full')) {
  throw new Error('--tenants and --concurrency must be at least 1, --checkpoint-ms at least 0, --sync normal or full');
}

const rounds = Number(args.rounds);
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error('--rounds must be a positive integer');

interface Burst {
  reserves: number;
  seconds: number;
  cpuUs: number;
  latency: ReturnType<Samples['summary']>;
}

/** One build's SqliteStore on a fresh file, provisioned, with concurrent reserve loops that run only during a burst. */
async function openBench(dist: string, name: string) {
  const build = await loadBuild(dist, 'store/sqlite/store.js', 'SqliteStore');
  const dir = mkdtempSync(join(tmpdir(), 'cycles-store-bench-'));
  const store = new build.store({ dataDir: dir, sync: args.sync, checkpointMs });
  const now = Date.now();
  const subjects: Array<Awaited<ReturnType<typeof provisionTenant>>> = [];
  for (let t = 0; t < tenants; t++) subjects.push(await provisionTenant(store, `bench-${t}`, now));
  let next = 0;
  const burst = async (durationS: number): Promise<Burst> => {
    let stop = false;
    let reserves = 0;
    const latencies = new Samples();
    const client = async () => {
      while (!stop) {
        const i = next++;
        const subject = subjects[i % tenants]!;
        const request = reserveRequest(`k-${i}`, subject);
        const t0 = performance.now();
        const r = await store.reserve({ ctx: { actor: { type: 'system' } }, tenantId: subject.tenant, request, scopes: build.deriveScopes(subject), hash: build.requestHash('reserve', request) });
        if (r.status !== 200) throw new Error(`${name}: reserve answered ${r.status}: ${r.body}`);
        latencies.add(performance.now() - t0);
        reserves++;
      }
    };
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const clients = Promise.all(Array.from({ length: concurrency }, client));
    await new Promise((r) => setTimeout(r, durationS * 1000));
    stop = true;
    await clients;
    const cpu = process.cpuUsage(cpu0);
    return { reserves, seconds: (performance.now() - t0) / 1000, cpuUs: cpu.user + cpu.system, latency: latencies.summary() };
  };
  const close = async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { name, dist, burst, close };
}

const setting = `sqlite (${args.sync}) store level, ${tenants} tenant(s), ${concurrency} concurrent, checkpoint thread ${checkpointMs > 0 ? `every ${checkpointMs} ms` : 'off'}`;
const warmupS = Number(args.warmup);
const durationS = Number(args.duration);
const perS = (b: Burst) => b.reserves / b.seconds;
const cpuPer = (b: Burst) => b.cpuUs / Math.max(1, b.reserves);

if (args.b === undefined) {
  const a = await openBench(distOf(args.dist), 'A');
  try {
    if (warmupS > 0) await a.burst(warmupS);
    const m = await a.burst(durationS);
    console.log(`${setting}: ${Math.round(perS(m))} reserves/s, p50 ${m.latency.p50} p99 ${m.latency.p99} max ${m.latency.max} ms`);
  } finally {
    await a.close();
  }
} else {
  const sides = [await openBench(distOf(args.dist), 'A'), await openBench(distOf(args.b), 'B')] as const;
  const results: [Burst[], Burst[]] = [[], []];
  try {
    for (const side of sides) if (warmupS > 0) await side.burst(warmupS);
    for (let i = 0; i < rounds; i++) {
      const order = i % 2 === 0 ? [0, 1] : [1, 0];
      for (const k of order) results[k as 0 | 1].push(await sides[k as 0 | 1].burst(durationS));
      const [a, b] = [results[0].at(-1)!, results[1].at(-1)!];
      console.error(`round ${i + 1}/${rounds}: A ${Math.round(perS(a))}/s ${Math.round(cpuPer(a))} µs | B ${Math.round(perS(b))}/s ${Math.round(cpuPer(b))} µs`);
    }
  } finally {
    for (const side of sides) await side.close();
  }
  const sum = (bs: Burst[], f: (b: Burst) => number) => bs.reduce((n, b) => n + f(b), 0);
  const tput = ratios(results[0].map(perS), results[1].map(perS), 'up');
  const cpu = ratios(results[0].map(cpuPer), results[1].map(cpuPer), 'down');
  console.log(`${setting}, ${rounds} alternating rounds of ${durationS} s`);
  for (const [k, side] of sides.entries()) {
    const bs = results[k]!;
    console.log(`${side.name} (${side.dist}): ${Math.round(sum(bs, (b) => b.reserves) / sum(bs, (b) => b.seconds))} reserves/s, ${round(sum(bs, (b) => b.cpuUs) / sum(bs, (b) => b.reserves), 1)} µs of CPU per reserve`);
  }
  console.log(`Per round, B/A: reserves/s median ${tput.median} (range ${tput.min}–${tput.max}, B ahead in ${tput.bAhead} of ${rounds}); CPU per reserve median ${cpu.median} (range ${cpu.min}–${cpu.max}, B cheaper in ${cpu.bAhead} of ${rounds}).`);
}
