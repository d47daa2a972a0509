/**
 * Starting servers for the property, crash and input suites: in-process (startServer on a
 * random port with a fresh data dir) or as a real child process (`cycles serve`), plus
 * provisioning through the admin API.
 */
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_KEY, Client, show, sleep } from './http.js';
import { openTestBackend, type TestBackend } from '../backends/backend.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = path.resolve(here, '../..');
export const REPO_ROOT = path.resolve(PACKAGE_DIR, '../..');

export async function tempDir(prefix = 'cycles-test-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  const backend = backends.get(dir);
  backends.delete(dir);
  await backend?.cleanup().catch(() => undefined);
  await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * The store under test (CYCLES_TEST_STORE) is tied to a data dir: every server started on the
 * same dir (a restart after kill -9) finds the same state, and removeDir(dir) drops it.
 */
const backends = new Map<string, TestBackend>();
async function backendFor(dataDir: string): Promise<TestBackend> {
  let b = backends.get(dataDir);
  if (!b) backends.set(dataDir, (b = await openTestBackend()));
  return b;
}

// ---------------------------------------------------------------- in-process

interface RunningServer {
  url: string;
  close(): Promise<void>;
}
interface ServerModule {
  startServer(options: { config?: Record<string, unknown>; logger?: boolean }): Promise<RunningServer>;
}

export interface InProcessServer {
  url: string;
  dataDir: string;
  client: Client;
  close(): Promise<void>;
}

/** startServer() on 127.0.0.1:0 with a fresh temp data dir. */
export async function startInProcess(config: Record<string, unknown> = {}): Promise<InProcessServer> {
  const dataDir = await tempDir();
  const mod = (await import('../../src/server.js')) as unknown as ServerModule;
  const backend = await backendFor(dataDir);
  const s = await mod
    .startServer({
      config: { port: 0, host: '127.0.0.1', dataDir, adminApiKey: ADMIN_KEY, sweepIntervalMs: 50, logLevel: 'silent', ...backend.config, ...config },
      logger: false,
    })
    .catch(async (e: unknown) => {
      await removeDir(dataDir);
      throw e;
    });
  return {
    url: s.url,
    dataDir,
    client: new Client(s.url),
    async close() {
      await s.close();
      await removeDir(dataDir);
    },
  };
}

// ---------------------------------------------------------------- provisioning

export type Unit = 'USD_MICROCENTS' | 'TOKENS' | 'CREDITS' | 'RISK_POINTS';

export interface BudgetSpec {
  /** Scope below the tenant, e.g. "workspace:w1/agent:a1"; '' is the tenant scope itself. */
  at: string;
  allocated: number;
  overdraft?: number;
  unit?: Unit;
}

export const scopeOf = (tenant: string, at: string): string => (at === '' ? `tenant:${tenant}` : `tenant:${tenant}/${at}`);

/** Creates the tenant, one API key with default permissions and the budgets; returns the key secret. */
export async function provision(client: Client, tenant: string, budgets: BudgetSpec[], tenantExtra: Record<string, unknown> = {}): Promise<string> {
  const t = await client.post('/v1/admin/tenants', { tenant_id: tenant, name: `tenant ${tenant}`, ...tenantExtra }, { admin: true });
  assert.equal(t.status, 201, `create tenant: ${show(t)}`);
  const k = await client.post('/v1/admin/api-keys', { tenant_id: tenant, name: `key ${tenant}` }, { admin: true });
  assert.equal(k.status, 201, `create api key: ${show(k)}`);
  const key = k.body.key_secret as string;
  assert.equal(typeof key, 'string');
  for (const b of budgets) {
    const unit = b.unit ?? 'TOKENS';
    const body: Record<string, unknown> = { tenant_id: tenant, scope: scopeOf(tenant, b.at), unit, allocated: { unit, amount: b.allocated } };
    if (b.overdraft !== undefined) body.overdraft_limit = { unit, amount: b.overdraft };
    const r = await client.post('/v1/admin/budgets', body, { admin: true });
    assert.equal(r.status, 201, `create budget ${String(body.scope)}: ${show(r)}`);
  }
  return key;
}

// ---------------------------------------------------------------- child process

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function listFiles(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, ext));
    else if (e.name.endsWith(ext)) out.push(p);
  }
  return out;
}

/** True when every src/**\/*.ts has a dist/**\/*.js at least as new. */
export function distIsFresh(): boolean {
  const src = path.join(PACKAGE_DIR, 'src');
  const dist = path.join(PACKAGE_DIR, 'dist');
  if (!fs.existsSync(path.join(dist, 'cli', 'main.js'))) return false;
  for (const f of listFiles(src, '.ts')) {
    const out = path.join(dist, path.relative(src, f)).replace(/\.ts$/, '.js');
    if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(f).mtimeMs) return false;
  }
  return true;
}

export interface ServerEntry {
  /** Node arguments that start `cycles serve`. */
  args: string[];
  description: string;
}

/**
 * The compiled CLI (`node packages/server/dist/cli/main.js serve`), built first with
 * `npm run build` when dist is missing or older than src. If the build fails the source
 * entry is used through tsx so the crash tests still exercise the current code.
 */
export function serverEntry(): ServerEntry {
  const distMain = path.join(PACKAGE_DIR, 'dist', 'cli', 'main.js');
  const srcEntry: ServerEntry = {
    args: ['--import', 'tsx', path.join(PACKAGE_DIR, 'src', 'cli', 'main.ts'), 'serve'],
    description: 'src/cli/main.ts via tsx',
  };
  // A different CLI entry (e.g. a deliberately broken copy, to check that these tests catch it).
  const custom = process.env.CYCLES_TEST_SERVER_MAIN;
  if (custom) return { args: [...(custom.endsWith('.ts') ? ['--import', 'tsx'] : []), custom, 'serve'], description: custom };
  if (process.env.CYCLES_TEST_ENTRY === 'src') return srcEntry;
  if (!distIsFresh()) {
    try {
      execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'pipe', timeout: 180_000 });
    } catch (e) {
      const err = e as { stdout?: Buffer; stderr?: Buffer; message: string };
      console.error(`[crash tests] npm run build failed; falling back to tsx: ${err.message}\n${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`);
      return srcEntry;
    }
  }
  return { args: [distMain, 'serve'], description: 'dist/cli/main.js' };
}

export interface ChildServer {
  url: string;
  port: number;
  client: Client;
  child: ChildProcess;
  /** Everything the process wrote to stderr/stdout (for diagnostics). */
  output(): string;
  /** SIGKILL and wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  entry: ServerEntry;
  dataDir: string;
  port?: number;
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** Spawns `cycles serve` and waits until it answers HTTP. */
export async function spawnServer(opts: SpawnOptions): Promise<ChildServer> {
  const port = opts.port ?? (await freePort());
  const backend = await backendFor(opts.dataDir);
  const child = spawn(process.execPath, opts.entry.args, {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      CYCLES_DATA_DIR: opts.dataDir,
      ADMIN_API_KEY: ADMIN_KEY,
      LOG_LEVEL: 'warn',
      ...backend.env,
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const client = new Client(url);
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  let ready = false;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    try {
      // Any HTTP answer means the server listens; 401 is the expected one without a key.
      const r = await client.get('/v1/balances?tenant=probe', { timeoutMs: 1000 });
      if (r.status === 401) {
        ready = true;
        break;
      }
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  const alive = () => child.exitCode === null && child.signalCode === null;
  const signal = async (sig: NodeJS.Signals) => {
    if (alive()) child.kill(sig);
    await exited;
  };
  if (!ready) {
    await signal('SIGKILL');
    throw new Error(`server (${opts.entry.description}) did not become ready on ${url}; output:\n${out}`);
  }
  return { url, port, client, child, output: () => out, kill9: () => signal('SIGKILL'), stop: () => signal('SIGTERM') };
}
