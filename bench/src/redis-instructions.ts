/**
 * Redis's side of the Redis backend, counted in instructions: a redis-server of its own runs under
 * valgrind's callgrind, the built RedisStore (in this process, no HTTP) sends it reserves or
 * reserve+commit lifecycles from 50 concurrent loops, and the instructions Redis executed per
 * operation are read off callgrind's counters, zeroed after a warm-up. An instruction count hardly
 * depends on what else the machine is doing, so a change of a few percent in a script shows here
 * where the machine's steal hides it in operations per second (docs/benchmarks.md, "Machine").
 * It counts Redis's own user-space work only: the kernel's part of its socket reads and writes is
 * not in it.
 *
 *   npm run bench:redis -- [--op reserve|lifecycle] [--ops 1000] [--dist <packages/server/dist>] [--b <other dist>]
 *
 * With --b, both builds are counted, each against a fresh Redis, and their ratio B/A printed.
 * Needs valgrind (callgrind_control included) and redis-server on the PATH.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'redis';
import { distOf, loadBuild, provisionTenant, reserveRequest } from './builds.js';
import { freePort } from './processes.js';
import { round } from './stats.js';

const { values: args } = parseArgs({
  options: {
    op: { type: 'string', default: 'reserve' },
    ops: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '50' },
    dist: { type: 'string' },
    b: { type: 'string' },
  },
});
const op = args.op;
if (op !== 'reserve' && op !== 'lifecycle') throw new Error('--op must be reserve or lifecycle');
const count = (name: 'ops' | 'warmup' | 'concurrency'): number => {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  return v;
};
const [ops, warmup, concurrency] = [count('ops'), count('warmup'), count('concurrency')];
for (const tool of ['valgrind', 'callgrind_control', 'redis-server']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is not on the PATH (bench:redis runs redis-server under valgrind)`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A redis-server under callgrind on a free port; `dump` writes the counters since the last zero. */
async function startCountedRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'cycles-redis-instr-'));
  const port = await freePort();
  const child = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${join(dir, 'cg.out')}`, 'redis-server', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  const probe = createClient({ url, socket: { reconnectStrategy: false } });
  probe.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      if (i >= 600 || child.exitCode !== null) throw new Error('redis-server under valgrind did not answer within a minute');
      await sleep(100);
    }
  }
  const control = (flag: string) => {
    const r = spawnSync('callgrind_control', [flag, String(child.pid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`callgrind_control ${flag} failed: ${r.stderr || r.stdout}`);
  };
  return {
    url,
    zero: () => control('-z'),
    /** Instructions counted since the last zero. */
    dump(): number {
      control('-d');
      const file = readdirSync(dir).filter((f) => f.startsWith('cg.out.')).sort().at(-1);
      if (!file) throw new Error(`no callgrind dump in ${dir}`);
      const m = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(dir, file), 'utf8'));
      if (!m) throw new Error(`no instruction total in ${file}`);
      return Number(m[1]);
    },
    async stop() {
      await probe.sendCommand(['SHUTDOWN', 'NOSAVE']).catch(() => undefined);
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Instructions Redis executes per operation of one build's RedisStore. */
async function instructionsPerOp(dist: string): Promise<number> {
  const build = await loadBuild(dist, 'store/redis/store.js', 'RedisStore');
  const redis = await startCountedRedis();
  const store = new build.store({ url: redis.url, prefix: 'bench:' });
  try {
    const subject = await provisionTenant(store, 'bench-0', Date.now());
    const tenantId = subject.tenant;
    const scopes = build.deriveScopes(subject);
    const ctx = { requestId: 'req_0123456789abcdef01234567', traceId: '0123456789abcdef0123456789abcdef', actor: { type: 'api_key', key_id: 'key_0123456789abcdef', source_ip: '127.0.0.1' } };
    let next = 0;
    const one = async () => {
      const i = next++;
      const request = reserveRequest(`k-${i}`, subject);
      const r = await store.reserve({ ctx, tenantId, request, scopes, hash: build.requestHash('reserve', request) });
      if (r.status !== 200) throw new Error(`reserve answered ${r.status}: ${r.body}`);
      if (op !== 'lifecycle') return;
      const reservationId = (JSON.parse(r.body) as { reservation_id: string }).reservation_id;
      const commit = { idempotency_key: `c-${i}`, actual: { unit: 'TOKENS', amount: 80 } };
      const c = await store.commit({ ctx, reservationId, callerTenant: tenantId, request: commit, hash: build.requestHash('commit', commit, reservationId) });
      if (c.status !== 200) throw new Error(`commit answered ${c.status}: ${c.body}`);
    };
    // Each loop takes the next operation's number before it awaits, so exactly n run.
    const run = async (n: number) => {
      const end = next + n;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < end) await one();
      }));
    };
    await run(warmup);
    redis.zero();
    await run(ops);
    return redis.dump() / ops;
  } finally {
    await store.close();
    await redis.stop();
  }
}

const label = op === 'lifecycle' ? 'reserve+commit' : 'reserve';
const a = await instructionsPerOp(distOf(args.dist));
console.log(`A (${distOf(args.dist)}): ${Math.round(a).toLocaleString('en-US')} Redis instructions per ${label} (${ops} measured, ${concurrency} concurrent, depth 3, one tenant)`);
if (args.b !== undefined) {
  const b = await instructionsPerOp(distOf(args.b));
  console.log(`B (${distOf(args.b)}): ${Math.round(b).toLocaleString('en-US')} Redis instructions per ${label}`);
  console.log(`B/A: ${round(b / a, 3)}`);
}
