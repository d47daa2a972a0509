/**
 * `cycles migrate` and `cycles store check` as an operator runs them: on the embedded store, on
 * a fresh PostgreSQL schema (pending migration reported, exit 1; migrate applies it; check is
 * then clean, exit 0) and on Redis. The networked backends' modules are loaded only by these
 * commands, so this also shows the lazy loading works from the CLI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openTestBackend } from '../backends/backend.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

async function cycles(env: Record<string, string>, ...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', main, ...args], { timeout: 60_000, env: { ...process.env, ...env, LOG_LEVEL: 'silent' } });
    return { code: 0, out: stdout };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

test('embedded store: migrate creates the schema, store check reports it reachable', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cycles-cli-store-'));
  try {
    const env = { CYCLES_STORE: 'sqlite', CYCLES_DATA_DIR: dir };
    const m = await cycles(env, 'migrate');
    assert.equal(m.code, 0, m.out);
    assert.match(m.out, /SQLite schema is created and upgraded when the store opens: done/);
    const c = await cycles(env, 'store', 'check');
    assert.equal(c.code, 0, c.out);
    assert.match(c.out, /reachable: yes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PostgreSQL: check reports the pending migration (exit 1), migrate applies it, check is then clean', { skip: process.env.CYCLES_TEST_DATABASE_URL ? false : 'CYCLES_TEST_DATABASE_URL is not set' }, async () => {
  const backend = await openTestBackend('postgres');
  try {
    const before = await cycles(backend.env, 'store', 'check');
    assert.equal(before.code, 1, before.out);
    assert.match(before.out, /reachable: yes/);
    assert.match(before.out, /run `cycles migrate`/);
    const m = await cycles(backend.env, 'migrate');
    assert.equal(m.code, 0, m.out);
    assert.match(m.out, /applied migration 1: /);
    const again = await cycles(backend.env, 'migrate');
    assert.match(again.out, /nothing to do/);
    const after = await cycles(backend.env, 'store', 'check');
    assert.equal(after.code, 0, after.out);
    assert.match(after.out, /\(up to date\)/);
  } finally {
    await backend.cleanup();
  }
});

test('Redis: store check reports the server and its durability settings', { skip: process.env.CYCLES_TEST_REDIS_URL ? false : 'CYCLES_TEST_REDIS_URL is not set' }, async () => {
  const backend = await openTestBackend('redis');
  try {
    const c = await cycles(backend.env, 'store', 'check');
    assert.match(c.out, /reachable: yes .*single server/);
    assert.match(c.out, /Redis \d+\.\d+/);
  } finally {
    await backend.cleanup();
  }
});
