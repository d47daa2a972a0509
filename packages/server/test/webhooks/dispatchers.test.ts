/**
 * Dispatchers as separate processes on one store: several deliver each (event, subscription)
 * pair once, and a dispatcher killed mid-delivery loses nothing: after a restart the leased
 * work is taken up again and completed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { ADMIN_KEY, waitFor, type Json } from '../helpers/harness.js';
import { freePort, removeDir, REPO_ROOT, PACKAGE_DIR, tempDir } from '../support/server.js';
import { decideBody } from '../helpers/runtime.js';
import { startReceiver, type Receiver } from './receiver.js';
import path from 'node:path';

interface Proc {
  url: string;
  child: ChildProcess;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

const MAIN = path.join(PACKAGE_DIR, 'src', 'cli', 'main.ts');

async function spawnRole(dataDir: string, role: 'all' | 'api' | 'dispatcher', env: Record<string, string> = {}): Promise<Proc> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve'], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      CYCLES_DATA_DIR: dataDir,
      ADMIN_API_KEY: ADMIN_KEY,
      LOG_LEVEL: 'warn',
      CYCLES_ROLE: role,
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
      WEBHOOK_DISPATCH_POLL_MS: '50',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`server exited: ${out}`);
    return fetch(`${url}/healthz`).then((r) => r.ok).catch(() => undefined);
  }, 30_000);
  const signal = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return { url, child, kill9: () => signal('SIGKILL'), stop: () => signal('SIGTERM') };
}

const admin = { 'x-admin-api-key': ADMIN_KEY, 'content-type': 'application/json' };
async function post(url: string, p: string, body: unknown, headers: Record<string, string> = admin): Promise<Json> {
  const r = await fetch(url + p, { method: 'POST', headers, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

/** A tenant with a key, a tiny budget and a subscription to its denials. */
async function setup(api: string, rx: Receiver, tenant: string): Promise<{ key: string; sub: string }> {
  assert.equal((await post(api, '/v1/admin/tenants', { tenant_id: tenant, name: tenant })).status, 201);
  assert.equal((await post(api, '/v1/admin/budgets', { tenant_id: tenant, scope: `tenant:${tenant}`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 1 } })).status, 201);
  const key = (await post(api, '/v1/admin/api-keys', { tenant_id: tenant, name: 'k' })).body.key_secret as string;
  const sub = await post(api, `/v1/admin/webhooks?tenant_id=${tenant}`, { url: rx.url, event_types: ['reservation.denied'], retry_policy: { max_retries: 10, initial_delay_ms: 100, max_delay_ms: 1000 } });
  assert.equal(sub.status, 201);
  return { key, sub: sub.body.subscription.subscription_id };
}

async function deny(api: string, key: string, tenant: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await post(api, '/v1/decide', decideBody({ tenant }, 5), { 'x-cycles-api-key': key, 'content-type': 'application/json' });
    assert.equal(r.body.decision, 'DENY');
  }
}

async function deliveries(api: string, sub: string): Promise<Json[]> {
  const r = await fetch(`${api}/v1/admin/webhooks/${sub}/deliveries?limit=100`, { headers: admin });
  return ((await r.json()) as Json).deliveries;
}

let rx: Receiver;
let dataDir: string;
const procs: Proc[] = [];
before(async () => {
  rx = await startReceiver();
});
after(async () => {
  await Promise.all(procs.map((p) => p.kill9()));
  await rx.close();
  if (dataDir) await removeDir(dataDir);
});

test('three dispatchers in separate processes deliver each event once', async () => {
  dataDir = await tempDir('cycles-dispatch-');
  const api = await spawnRole(dataDir, 'all');
  procs.push(api, await spawnRole(dataDir, 'dispatcher'), await spawnRole(dataDir, 'dispatcher'));
  const tenant = `multi-${Date.now().toString(36)}`;
  const { key, sub } = await setup(api.url, rx, tenant);
  await deny(api.url, key, tenant, 30);
  const mine = () => rx.received.filter((r) => (JSON.parse(r.body) as Json).tenant_id === tenant);
  await waitFor(async () => (mine().length >= 30 ? true : undefined), 20_000);
  await new Promise((r) => setTimeout(r, 500));
  const ids = mine().map((r) => r.headers['x-cycles-event-id']);
  assert.equal(ids.length, 30, 'no duplicates across dispatchers');
  assert.equal(new Set(ids).size, 30);
  assert.ok((await deliveries(api.url, sub)).every((d) => d.status === 'SUCCESS'));
  await Promise.all(procs.splice(0).map((p) => p.stop()));
});

test('a dispatcher killed mid-delivery loses nothing and completes after restart', async () => {
  dataDir = await tempDir('cycles-dispatch-crash-');
  const api = await spawnRole(dataDir, 'api');
  procs.push(api);
  const tenant = `crash-${Date.now().toString(36)}`;
  const { key, sub } = await setup(api.url, rx, tenant);
  const mine = () => rx.received.filter((r) => (JSON.parse(r.body) as Json).tenant_id === tenant);
  // The receiver holds every request open: the dispatcher dies with deliveries in flight.
  rx.respond = (r) => ((JSON.parse(r.body) as Json).tenant_id === tenant ? 'hang' : 200);
  try {
    const dispatcher = await spawnRole(dataDir, 'dispatcher', { WEBHOOK_TIMEOUT_MS: '1000' });
    await deny(api.url, key, tenant, 5);
    await waitFor(async () => (mine().length >= 1 ? true : undefined), 10_000);
    await dispatcher.kill9();
    const inFlight = new Set(mine().map((r) => r.headers['x-cycles-event-id']));
    assert.ok(inFlight.size >= 1);
    rx.respond = () => 200;
    const restarted = await spawnRole(dataDir, 'dispatcher', { WEBHOOK_TIMEOUT_MS: '1000' });
    procs.push(restarted);
    const list = await waitFor(async () => {
      const d = await deliveries(api.url, sub);
      return d.length === 5 && d.every((x) => x.status === 'SUCCESS') ? d : undefined;
    }, 20_000);
    assert.equal(list.length, 5, 'every event has its delivery');
    const delivered = new Set(mine().filter((r) => r.headers['x-cycles-event-id']).map((r) => r.headers['x-cycles-event-id']));
    assert.equal(delivered.size, 5, 'every event reached the receiver');
    for (const id of inFlight) assert.ok(delivered.has(id), 'the interrupted deliveries were completed');
  } finally {
    rx.respond = () => 200;
  }
});
