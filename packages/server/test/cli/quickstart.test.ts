import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from '../../src/server.js';

const run = promisify(execFile);
const ADMIN = 'quickstart-admin-key-0123456789';
const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
let server: RunningServer;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cycles-qs-'));
  server = await startServer({ config: { port: 0, host: '127.0.0.1', dataDir: dir, adminApiKey: ADMIN, logLevel: 'silent' }, logger: false });
});
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const quickstart = (...args: string[]) => run(process.execPath, ['--import', 'tsx', main, 'quickstart', '--url', server.url, ...args], { timeout: 30_000 });

test('quickstart provisions a tenant, key and budgets and runs reserve -> commit', async () => {
  const { stdout } = await quickstart('--admin-key', ADMIN, '--tenant', 'qs-demo');
  assert.match(stdout, /tenant\s+qs-demo \(created\)/);
  assert.match(stdout, /reserve\s+ALLOW rsv_[0-9a-f]{32}/);
  assert.match(stdout, /commit\s+COMMITTED: charged 420000, released 80000/);
  const key = /api key\s+(cyc_live_[A-Za-z0-9]{32})/.exec(stdout)?.[1];
  assert.ok(key, 'prints the new API key');
  // The printed key works and the budgets show the committed spend.
  const res = await fetch(`${server.url}/v1/balances?tenant=qs-demo&include_children=true`, { headers: { 'x-cycles-api-key': key! } });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { balances: Array<{ scope: string; spent: { amount: number } }> };
  const prod = body.balances.find((b) => b.scope === 'tenant:qs-demo/workspace:prod');
  assert.equal(prod?.spent.amount, 420000);
});

test('quickstart is repeatable against the same tenant', async () => {
  const { stdout } = await quickstart('--admin-key', ADMIN, '--tenant', 'qs-demo');
  assert.match(stdout, /tenant\s+qs-demo \(already existed\)/);
  assert.match(stdout, /commit\s+COMMITTED/);
});

test('quickstart with a wrong admin key fails with a clear message', async () => {
  await assert.rejects(quickstart('--admin-key', 'wrong-admin-key-0123456789'), (err: { stderr: string; code: number }) => {
    assert.match(err.stderr, /create tenant failed: HTTP 401 UNAUTHORIZED/);
    assert.notEqual(err.code, 0);
    return true;
  });
});

test('health endpoints answer without credentials', async () => {
  for (const path of ['/healthz', '/actuator/health/liveness', '/readyz', '/actuator/health/readiness']) {
    const res = await fetch(server.url + path);
    assert.equal(res.status, 200, path);
    assert.equal(((await res.json()) as { status: string }).status, 'UP');
    assert.match(res.headers.get('x-cycles-trace-id') ?? '', /^[0-9a-f]{32}$/);
  }
});
