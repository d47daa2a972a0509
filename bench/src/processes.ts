/**
 * The processes under test. The server and the ceiling each run in their own Node process, as in a
 * real deployment, so the load generator (this process) never shares an event loop with them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setPriority, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How long a process may take to answer /readyz before it counts as unavailable. */
const READY_TIMEOUT_MS = 20_000;
const READY_POLL_MS = 5;
/** How long a graceful stop may take before the process is killed. */
const STOP_TIMEOUT_MS = 10_000;
const RSS_SAMPLE_MS = 200;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface Started {
  child: ChildProcess;
  url: string;
  /** Spawn until the first 200 from /readyz. */
  startupMs: number;
  stop(): Promise<void>;
}

export class StartError extends Error {}

/** Scheduling priority (nice value) for the harness and every process it starts; see --nice. */
let niceness: number | undefined;

export function setNiceness(value: number): void {
  setPriority(0, value);
  niceness = value;
  // With the kernel's autogroup scheduling, nice only orders processes within one session;
  // the session's own weight against other sessions is set here.
  try {
    writeFileSync('/proc/self/autogroup', String(value));
  } catch {
    // no autogroup scheduling on this system
  }
}

/** Every child still running, so an interrupted run can stop them instead of leaving them behind. */
const running = new Set<ChildProcess>();

export function killAll(): void {
  for (const child of running) child.kill('SIGTERM');
}

interface SpawnSpec {
  args: string[];
  env: Record<string, string | undefined>;
  port: number;
  cleanup?: () => Promise<void>;
  onOutput?: (chunk: string) => void;
}

async function spawnAndWait(spec: SpawnSpec): Promise<Started> {
  const url = `http://127.0.0.1:${spec.port}`;
  const t0 = performance.now();
  const child = spawn(process.execPath, spec.args, { env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => {
    if (output.length < 8192) output += chunk.toString();
    spec.onOutput?.(chunk.toString());
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  running.add(child);
  if (niceness !== undefined && child.pid !== undefined) setPriority(child.pid, niceness);
  let exited: number | null | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      exited = code;
      resolve();
    }),
  );

  const stop = async () => {
    if (exited === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exit;
      clearTimeout(timer);
    }
    await spec.cleanup?.();
  };

  const deadline = t0 + READY_TIMEOUT_MS;
  while (true) {
    if (exited !== undefined) {
      await spec.cleanup?.();
      throw new StartError(`exited with code ${exited} before it was ready: ${firstLines(output)}`);
    }
    if (performance.now() > deadline) {
      await stop();
      throw new StartError(`not ready after ${READY_TIMEOUT_MS} ms: ${firstLines(output)}`);
    }
    try {
      const res = await fetch(`${url}/readyz`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
  return { child, url, startupMs: performance.now() - t0, stop };
}

const firstLines = (s: string): string =>
  s.trim().split('\n').filter((l) => l.trim() !== '').slice(0, 3).map((l) => l.trim()).join(' ').slice(0, 400) || '(no output)';

export interface ServerSpec {
  /** Path of the compiled CLI, packages/server/dist/cli/main.js. */
  entry: string;
  adminKey: string;
  env: Record<string, string>;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  /** Sees everything the server writes to stdout and stderr (--gc reads V8's GC trace from it). */
  onOutput?: (chunk: string) => void;
}

/**
 * The server's abuse limits (requests per minute per address and per API key) would turn a load
 * test into a test of the limiter: they are set as high as they go, so the limiter still runs on
 * every request, as in a default deployment, but never refuses one.
 */
const UNLIMITED = { CYCLES_RATE_LIMIT_PER_IP: '100000000', CYCLES_RATE_LIMIT_PER_KEY: '100000000' };

/** This repository's build of the server. */
export const OWN_SERVER = fileURLToPath(new URL('../../packages/server/dist/cli/main.js', import.meta.url));

/**
 * A path given on the command line, relative to where `npm run` was typed (npm's INIT_CWD), not
 * to bench/, where npm runs the workspace's script.
 */
export const typedPath = (path: string): string => resolve(process.env.INIT_CWD ?? process.cwd(), path);

/** The server build at `path` (default: this repository's), checked to exist. */
export function serverEntryAt(path: string | undefined): string {
  const entry = path === undefined ? OWN_SERVER : typedPath(path);
  if (!existsSync(entry)) throw new Error(`server not built: ${entry} is missing (run npm run build at the repository root)`);
  return entry;
}

/** `cycles serve` on a random port with its own temporary data directory. */
export async function startServer(spec: ServerSpec): Promise<Started> {
  const dataDir = await mkdtemp(join(tmpdir(), 'cycles-bench-'));
  const port = await freePort();
  return spawnAndWait({
    args: [...(spec.nodeArgs ?? []), spec.entry, 'serve', '--port', String(port), '--host', '127.0.0.1', '--data-dir', dataDir],
    env: { ...process.env, LOG_LEVEL: 'warn', ...UNLIMITED, ADMIN_API_KEY: spec.adminKey, ...spec.env },
    port,
    cleanup: () => rm(dataDir, { recursive: true, force: true }),
    onOutput: spec.onOutput,
  });
}

/** The bare Fastify route that defines the machine's ceiling. */
export async function startCeiling(): Promise<Started> {
  const port = await freePort();
  const tsx = import.meta.resolve('tsx');
  const script = fileURLToPath(new URL('./ceiling-server.ts', import.meta.url));
  return spawnAndWait({ args: ['--import', tsx, script], env: { ...process.env, PORT: String(port) }, port });
}

/** Clock ticks per second of /proc CPU times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds (user + system) in a /proc stat file: a process's, or one of its threads'. */
function statCpuS(path: string): number | null {
  try {
    const stat = readFileSync(path, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / USER_HZ;
  } catch {
    return null;
  }
}

/** CPU seconds a process has used (user + system), from /proc/<pid>/stat. */
const processCpuS = (pid: number): number | null => statCpuS(`/proc/${pid}/stat`);

/** CPU seconds of each thread of a process, by thread id (threads that end in between drop out). */
function threadCpuS(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const s = statCpuS(`/proc/${pid}/task/${tid}/stat`);
      if (s !== null) out.set(tid, s);
    }
  } catch {
    // Not Linux, or the process is gone: no per-thread figures.
  }
  return out;
}

/**
 * CPU seconds of the whole machine (all cores), from /proc/stat: busy (this machine's own work),
 * idle (no thread wanted a core) and steal (a thread wanted a core and the hypervisor ran another
 * guest on it). On a shared vCPU steal is a machine slower than it looks, not work of ours.
 */
function machineCpuS(): { busy: number; idle: number; steal: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    // user nice system idle iowait irq softirq steal
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const idle = v[3]! + v[4]!;
    const steal = v[7] ?? 0;
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: (total - idle - steal) / USER_HZ, idle: idle / USER_HZ, steal: steal / USER_HZ };
  } catch {
    return null;
  }
}

/**
 * Waits until the rest of the machine is quiet: CPU busy below `maxBusyPct` of one core over a
 * one-second window, at most `maxWaitS` seconds. Returns the busy share last seen.
 */
export async function waitForQuietMachine(maxBusyPct: number, maxWaitS: number): Promise<{ busyPct: number; waitedS: number }> {
  const t0 = performance.now();
  while (true) {
    const a = machineCpuS();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineCpuS();
    if (!a || !b) return { busyPct: 0, waitedS: 0 };
    const busyPct = Math.round((b.busy - a.busy) * 100);
    const waitedS = Math.round((performance.now() - t0) / 1000);
    if (busyPct <= maxBusyPct || waitedS >= maxWaitS) return { busyPct, waitedS };
  }
}

export interface Usage {
  rssMaxMb: number | null;
  rssMeanMb: number | null;
  /** CPU of the server process, in % of one core. */
  serverCpuPct: number | null;
  /** CPU of the load generator (this process), in % of one core. */
  clientCpuPct: number;
  /** CPU of everything else on the machine, in % of one core: other work that competed for the cores. */
  otherCpuPct: number | null;
  /** Time the hypervisor gave this machine's cores to other guests while ours wanted them, in % of one core. */
  stealCpuPct: number | null;
  /** Time no thread on the machine wanted a core, in % of one core (at most 100 × cores). */
  idleCpuPct: number | null;
  /**
   * CPU of the server's busiest thread, in % of one core. Near 100 that thread bounds the
   * throughput whatever the rest of the machine has left.
   */
  busiestThreadPct: number | null;
  /** Server CPU seconds used during the window (for CPU time per operation). */
  serverCpuS: number | null;
  /** CPU seconds of everything else during the window: with Redis or PostgreSQL, mostly that server's. */
  otherCpuS: number | null;
}

/**
 * Watches the server during a measured run: resident set size sampled from /proc (VmRSS), and
 * CPU time of the server, of this process and of the rest of the machine (Linux only).
 */
export class ProcessMonitor {
  private timer: NodeJS.Timeout | undefined;
  private maxKb = 0;
  private sumKb = 0;
  private n = 0;
  private readonly t0 = performance.now();
  private readonly server0: number | null;
  private readonly client0 = process.cpuUsage();
  private readonly machine0 = machineCpuS();
  private readonly threads0: Map<string, number>;

  constructor(private readonly pid: number) {
    this.server0 = processCpuS(pid);
    this.threads0 = threadCpuS(pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), RSS_SAMPLE_MS);
  }

  static rssKb(pid: number): number | null {
    try {
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  }

  private sample(): void {
    const kb = ProcessMonitor.rssKb(this.pid);
    if (kb === null) return;
    this.maxKb = Math.max(this.maxKb, kb);
    this.sumKb += kb;
    this.n++;
  }

  stop(): Usage {
    clearInterval(this.timer);
    this.sample();
    const wallS = (performance.now() - this.t0) / 1000;
    const pctOf = (cpuS: number) => Math.round((cpuS / wallS) * 1000) / 10;
    const server1 = processCpuS(this.pid);
    const serverCpuS = this.server0 !== null && server1 !== null ? server1 - this.server0 : null;
    const c = process.cpuUsage(this.client0);
    const clientCpuS = (c.user + c.system) / 1e6;
    const machine1 = machineCpuS();
    let busiestS: number | null = null;
    for (const [tid, s1] of threadCpuS(this.pid)) {
      const s0 = this.threads0.get(tid);
      if (s0 !== undefined) busiestS = Math.max(busiestS ?? 0, s1 - s0);
    }
    const otherCpuS = this.machine0 && machine1 && serverCpuS !== null ? Math.max(0, machine1.busy - this.machine0.busy - serverCpuS - clientCpuS) : null;
    return {
      rssMaxMb: this.n ? Math.round(this.maxKb / 102.4) / 10 : null,
      rssMeanMb: this.n ? Math.round(this.sumKb / this.n / 102.4) / 10 : null,
      serverCpuPct: serverCpuS === null ? null : pctOf(serverCpuS),
      clientCpuPct: pctOf(clientCpuS),
      otherCpuPct: otherCpuS === null ? null : pctOf(otherCpuS),
      stealCpuPct: this.machine0 && machine1 ? pctOf(machine1.steal - this.machine0.steal) : null,
      idleCpuPct: this.machine0 && machine1 ? pctOf(machine1.idle - this.machine0.idle) : null,
      busiestThreadPct: busiestS === null ? null : pctOf(busiestS),
      serverCpuS,
      otherCpuS,
    };
  }
}
