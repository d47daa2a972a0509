/**
 * Helpers of the operations suite: servers in-process (with their log lines captured) or as a
 * child process (`cycles serve` through tsx), a small HTTP client, provisioning, a ledger
 * snapshot with the invariant check, and a Prometheus text parser.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';

export const ADMIN_KEY = 'ops-admin-key-0123456789abcdef';
export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Response bodies are arbitrary JSON; tests index into them after asserting on status.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export interface Res {
  status: number;
  text: string;
  body: Json;
  headers: Headers;
}

export interface Req {
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
  key?: string;
  admin?: boolean;
  timeoutMs?: number;
}

/** Every credential any response handed out in this process: no log line may ever contain one. */
export const SECRETS = new Set<string>([ADMIN_KEY]);
const SECRET_FIELDS = ['key_secret', 'signing_secret', 'secret'];

function collectSecrets(body: Json): void {
  if (!body || typeof body !== 'object') return;
  for (const f of SECRET_FIELDS) if (typeof body[f] === 'string' && body[f].length >= 8) SECRETS.add(body[f]);
}

/** Lines of `logs` that contain a known secret or anything shaped like a tenant API key. */
export function secretLeaks(logs: string[], extra: string[] = []): string[] {
  const secrets = [...SECRETS, ...extra];
  return logs.filter((l) => /cyc_live_[A-Za-z0-9]{20,}/.test(l) || secrets.some((s) => l.includes(s)));
}

export class Client {
  constructor(readonly base: string) {}

  async call(method: string, p: string, opts: Req = {}): Promise<Res> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.key) headers['x-cycles-api-key'] = opts.key;
    if (opts.admin) headers['x-admin-api-key'] = ADMIN_KEY;
    let body: string | undefined = opts.raw;
    if (body === undefined && opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
    const res = await fetch(this.base + p, { method, headers, body, signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000) });
    const text = await res.text();
    let parsed: Json;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    collectSecrets(parsed);
    return { status: res.status, text, body: parsed, headers: res.headers };
  }

  get = (p: string, opts: Req = {}) => this.call('GET', p, opts);
  post = (p: string, body: unknown, opts: Req = {}) => this.call('POST', p, { ...opts, body });
}

export const show = (r: Res): string => `HTTP ${r.status} ${r.text.slice(0, 500)}`;
export const uid = (prefix = 't'): string => `${prefix}-${randomBytes(5).toString('hex')}`;
export const idem = (prefix = 'k'): string => `${prefix}_${randomUUID()}`;
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Settings that keep abuse limits out of tests that are not about them. */
export const NO_LIMITS: Partial<Config> = { rateLimitPerIp: 0, rateLimitPerKey: 0, authFailureLimit: 0 };

export interface OpsServer {
  server: RunningServer;
  client: Client;
  url: string;
  dataDir: string;
  /** Every log line written so far. */
  logs(): string[];
  close(): Promise<void>;
}

/** startServer on a random port with a fresh data dir; log lines are kept in memory. */
export async function startOps(config: Partial<Config> = {}, env: Record<string, string | undefined> = {}): Promise<OpsServer> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'cycles-ops-'));
  const lines: string[] = [];
  let partial = '';
  const logStream = {
    write(chunk: string) {
      const text = partial + chunk;
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts.filter((l) => l.length > 0));
    },
  };
  const server = await startServer({
    env,
    config: { port: 0, host: '127.0.0.1', dataDir, adminApiKey: ADMIN_KEY, sweepIntervalMs: 50, logLevel: 'trace', logFormat: 'json', ...config },
    logStream,
  });
  return {
    server,
    client: new Client(server.url),
    url: server.url,
    dataDir,
    logs: () => (partial ? [...lines, partial] : [...lines]),
    async close() {
      const pepper = await server.backend.getMeta('api_key_pepper').catch(() => undefined);
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
      // Every ops server's log is scanned for every credential handed out in this process.
      const leaks = secretLeaks(partial ? [...lines, partial] : lines, pepper ? [pepper] : []);
      assert.deepEqual(leaks, [], 'no log line may contain a credential');
    },
  };
}

// ---------------------------------------------------------------- provisioning

export interface Tenant {
  id: string;
  key: string;
  keyId: string;
}

/** A tenant with one default-permission key and budgets (scopes below the tenant, '' = tenant). */
export async function provision(client: Client, budgets: Array<{ at: string; allocated: number; overdraft?: number; unit?: string }>, id = uid()): Promise<Tenant> {
  const t = await client.post('/v1/admin/tenants', { tenant_id: id, name: `tenant ${id}` }, { admin: true });
  assert.equal(t.status, 201, show(t));
  const k = await client.post('/v1/admin/api-keys', { tenant_id: id, name: 'ops' }, { admin: true });
  assert.equal(k.status, 201, show(k));
  for (const b of budgets) {
    const unit = b.unit ?? 'TOKENS';
    const body: Record<string, unknown> = { tenant_id: id, scope: b.at ? `tenant:${id}/${b.at}` : `tenant:${id}`, unit, allocated: { unit, amount: b.allocated } };
    if (b.overdraft !== undefined) body.overdraft_limit = { unit, amount: b.overdraft };
    const r = await client.post('/v1/admin/budgets', body, { admin: true });
    assert.equal(r.status, 201, show(r));
  }
  return { id, key: k.body.key_secret, keyId: k.body.key_id };
}

export const reserveBody = (tenant: string, amount: number, extra: Record<string, unknown> = {}) => ({
  idempotency_key: idem('r'),
  subject: { tenant },
  action: { kind: 'llm.completion', name: 'ops-model' },
  estimate: { unit: 'TOKENS', amount },
  ...extra,
});

// ---------------------------------------------------------------- ledger

export interface Budget {
  scope: string;
  unit: string;
  allocated: number;
  reserved: number;
  spent: number;
  debt: number;
  remaining: number;
  is_over_limit: boolean;
}

export interface Reservation {
  reservation_id: string;
  status: string;
  idempotency_key: string;
  reserved: number;
  committed: number | undefined;
  expires_at_ms: number;
  affected_scopes: string[];
}

async function pages(client: Client, first: string, field: string): Promise<Json[]> {
  const out: Json[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 1000; i++) {
    const sep = first.includes('?') ? '&' : '?';
    const r = await client.get(first + (cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ''), { admin: true });
    assert.equal(r.status, 200, show(r));
    out.push(...r.body[field]);
    if (!r.body.has_more) return out;
    cursor = r.body.next_cursor;
  }
  throw new Error('too many pages');
}

export async function budgetsOf(client: Client, tenant: string): Promise<Budget[]> {
  const rows = await pages(client, `/v1/admin/budgets?tenant_id=${tenant}&limit=100`, 'ledgers');
  return rows.map((b) => ({
    scope: b.scope,
    unit: b.unit,
    allocated: b.allocated.amount,
    reserved: b.reserved.amount,
    spent: b.spent.amount,
    debt: b.debt.amount,
    remaining: b.remaining.amount,
    is_over_limit: b.is_over_limit,
  }));
}

export async function reservationsOf(client: Client, tenant: string): Promise<Reservation[]> {
  const rows = await pages(client, `/v1/reservations?tenant=${tenant}&limit=200&sort_by=reservation_id&sort_dir=asc`, 'reservations');
  return rows.map((r) => ({
    reservation_id: r.reservation_id,
    status: r.status,
    idempotency_key: r.idempotency_key,
    reserved: r.reserved.amount,
    committed: r.committed?.amount,
    expires_at_ms: r.expires_at_ms,
    affected_scopes: r.affected_scopes,
  }));
}

/**
 * The ledger rules at every scope, for a workload without overage (every charge ≤ its hold):
 * remaining = allocated − spent − reserved − debt; reserved = Σ ACTIVE holds covering the scope;
 * spent + debt = Σ committed charges covering the scope (+ `extraSpent` from direct debits).
 */
export function checkLedger(budgets: Budget[], reservations: Reservation[], extraSpent: Map<string, number> = new Map()): string[] {
  const problems: string[] = [];
  for (const b of budgets) {
    if (b.remaining !== b.allocated - b.spent - b.reserved - b.debt) problems.push(`${b.scope}: remaining ${b.remaining} != allocated - spent - reserved - debt`);
    const covering = reservations.filter((r) => r.affected_scopes.includes(b.scope));
    const held = covering.filter((r) => r.status === 'ACTIVE').reduce((s, r) => s + r.reserved, 0);
    const charged = covering.filter((r) => r.status === 'COMMITTED').reduce((s, r) => s + (r.committed ?? 0), 0) + (extraSpent.get(b.scope) ?? 0);
    if (b.reserved !== held) problems.push(`${b.scope}: reserved ${b.reserved} != sum of ACTIVE holds ${held}`);
    if (b.spent + b.debt !== charged) problems.push(`${b.scope}: spent ${b.spent} + debt ${b.debt} != sum of committed charges ${charged}`);
  }
  return problems;
}

/** Everything a rejected request must not change, as one comparable string. */
export async function fingerprint(client: Client, tenants: string[]): Promise<string> {
  const parts: unknown[] = [];
  for (const t of tenants) {
    parts.push(await budgetsOf(client, t));
    parts.push((await reservationsOf(client, t)).map((r) => [r.reservation_id, r.status, r.reserved, r.committed, r.expires_at_ms]));
  }
  return JSON.stringify(parts);
}

// ---------------------------------------------------------------- metrics

/** Sample values of a Prometheus text exposition, keyed by `name{labels}` as printed. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Sum of every sample of `name` whose labels include all of `labels`. */
export function metric(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [k, v] of samples) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    const ls = brace < 0 ? '' : k.slice(brace);
    if (Object.entries(labels).every(([lk, lv]) => ls.includes(`${lk}="${lv}"`))) sum += v;
  }
  return sum;
}

export async function scrape(client: Client, opts: Req = {}): Promise<Map<string, number>> {
  const r = await client.get('/metrics', opts);
  assert.equal(r.status, 200, show(r));
  return parseMetrics(r.text);
}

// ---------------------------------------------------------------- child process

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export interface Child {
  url: string;
  client: Client;
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill9(): Promise<void>;
  term(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `cycles serve` from source (tsx), waiting until /healthz answers. */
export async function spawnServe(dataDir: string, env: Record<string, string> = {}, args: string[] = []): Promise<Child> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(PACKAGE_DIR, 'src/cli/main.ts'), 'serve', ...args], {
    cwd: PACKAGE_DIR,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', CYCLES_DATA_DIR: dataDir, ADMIN_API_KEY: ADMIN_KEY, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const client = new Client(url);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`server exited before ready:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server not ready:\n${out}`);
    }
    try {
      if ((await client.get('/healthz', { timeoutMs: 1000 })).status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  return {
    url,
    client,
    child,
    output: () => out,
    exited,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async term() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cycles-ops-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
