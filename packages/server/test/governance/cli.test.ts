/**
 * `cycles admin ...` against a real server over HTTP: the everyday operations, --json output
 * (the server's JSON as is) and readable tables, and clear errors with a non-zero exit code.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { startTestServer, uid, type Json, type TestServer } from '../helpers/harness.js';
import { expectStatus, reserveBody, reserveOk } from '../helpers/runtime.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

let srv: TestServer;
before(async () => {
  // The audit tail test reads a tenant-key reserve back from the log.
  srv = await startTestServer({ auditRuntimeRequests: true });
});
after(async () => {
  await srv?.close();
});

async function cycles(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', main, 'admin', '--url', srv.url, ...args], {
    timeout: 30_000,
    env: { ...process.env, ADMIN_API_KEY: srv.adminKey },
  });
  return stdout;
}
const json = async (...args: string[]): Promise<Json> => JSON.parse(await cycles('--json', ...args)) as Json;

async function fails(args: string[], env: Record<string, string | undefined> = { ADMIN_API_KEY: srv.adminKey }): Promise<{ stderr: string; code: number }> {
  try {
    await run(process.execPath, ['--import', 'tsx', main, 'admin', '--url', srv.url, ...args], { timeout: 30_000, env: { ...process.env, ...env } });
  } catch (e) {
    return e as { stderr: string; code: number };
  }
  throw new Error(`cycles admin ${args.join(' ')} succeeded`);
}

describe('cycles admin', () => {
  const t = uid('cli');
  let keyId: string;
  let secret: string;

  test('tenants create / get / list / update / suspend / reactivate', async () => {
    const created = await json('tenants', 'create', t, '--name', 'CLI Corp', '--default-ttl', '30000');
    assert.deepEqual([created.tenant_id, created.status, created.default_reservation_ttl_ms], [t, 'ACTIVE', 30000]);
    const table = await cycles('tenants', 'list', '--search', t);
    assert.match(table, /^TENANT\s+NAME\s+STATUS/m);
    assert.match(table, new RegExp(`^${t}\\s+CLI Corp\\s+ACTIVE`, 'm'));
    assert.match(await cycles('tenants', 'suspend', t), new RegExp(`tenant ${t} is SUSPENDED`));
    assert.equal((await json('tenants', 'get', t)).status, 'SUSPENDED');
    await cycles('tenants', 'reactivate', t);
    assert.equal((await json('tenants', 'update', t, '--name', 'CLI Corp 2')).name, 'CLI Corp 2');
    const listed = await json('tenants', 'list', '--search', t, '--all');
    assert.deepEqual(listed.tenants.map((x: Json) => x.tenant_id), [t]);
  });

  test('budgets create / get / list, funding, freeze / unfreeze', async () => {
    const b = await json('budgets', 'create', `tenant:${t}`, 'tokens', '1000', '--overdraft-limit', '50');
    assert.deepEqual([b.allocated.amount, b.overdraft_limit.amount], [1000, 50]);
    await json('budgets', 'create', `tenant:${t}/workspace:eng`, 'TOKENS', '100');
    const funded = await cycles('fund', `tenant:${t}`, 'TOKENS', 'credit', '500', '--reason', 'top-up');
    assert.match(funded, /CREDIT\s+1000 -> 1500/);
    const r = await json('fund', `tenant:${t}`, 'TOKENS', 'RESET_SPENT', '2000', '--spent', '10');
    assert.deepEqual([r.new_allocated.amount, r.new_spent.amount], [2000, 10]);
    assert.match(await cycles('budgets', 'freeze', `tenant:${t}/workspace:eng`, 'TOKENS', '--reason', 'audit'), /is FROZEN/);
    assert.equal((await json('budgets', 'get', `tenant:${t}/workspace:eng`, 'TOKENS')).status, 'FROZEN');
    await cycles('budgets', 'unfreeze', `tenant:${t}/workspace:eng`, 'TOKENS');
    const u = await json('budgets', 'update', `tenant:${t}`, 'TOKENS', '--overage-policy', 'reject');
    assert.equal(u.commit_overage_policy, 'REJECT');
    const table = await cycles('budgets', 'list', '--tenant', t, '--sort-by', 'scope', '--sort-dir', 'asc');
    assert.match(table, /^SCOPE\s+UNIT\s+STATUS\s+ALLOCATED\s+REMAINING/m);
    assert.match(table, new RegExp(`^tenant:${t}\\s+TOKENS\\s+ACTIVE\\s+2000\\s+1990`, 'm'));
  });

  test('keys create (secret shown once) / list / update / rotate / revoke / validate', async () => {
    const created = await cycles('keys', 'create', '--tenant', t, '--name', 'agents', '--permission', 'reservations:create,balances:read', '--scope-filter', 'workspace:eng');
    secret = /secret\s+(cyc_live_[A-Za-z0-9]{32})/.exec(created)?.[1] ?? '';
    keyId = /key_id\s+(key_[0-9a-f]+)/.exec(created)?.[1] ?? '';
    assert.ok(secret && keyId, created);
    assert.match(created, /shown once/);
    const v = await json('keys', 'validate', secret);
    assert.deepEqual([v.valid, v.tenant_id, v.permissions, v.scope_filter], [true, t, ['reservations:create', 'balances:read'], ['workspace:eng']]);
    const updated = await json('keys', 'update', keyId, '--permission', 'reservations:create', '--permission', 'reservations:commit,balances:read');
    assert.deepEqual(updated.permissions, ['reservations:create', 'reservations:commit', 'balances:read']);
    const rotated = await json('keys', 'rotate', keyId);
    assert.equal(rotated.rotated_from, keyId);
    assert.deepEqual(rotated.permissions, ['reservations:create', 'reservations:commit', 'balances:read']);
    assert.equal((await json('keys', 'validate', secret)).reason, 'KEY_REVOKED');
    assert.equal((await json('keys', 'validate', rotated.key_secret)).valid, true);
    const list = await cycles('keys', 'list', '--tenant', t);
    assert.match(list, new RegExp(`^${keyId}\\s+${t}\\s+agents\\s+REVOKED`, 'm'));
    assert.match(await cycles('keys', 'revoke', rotated.key_id, '--reason', 'done'), /is REVOKED/);
  });

  test('policies create / list / update, and the runtime applies them', async () => {
    const p = await json('policies', 'create', '--tenant', t, '--name', 'caps', '--scope-pattern', `tenant:${t}/*`, '--max-tokens', '512', '--priority', '3');
    assert.deepEqual([p.caps, p.priority], [{ max_tokens: 512 }, 3]);
    const list = await cycles('policies', 'list', '--tenant', t);
    assert.match(list, new RegExp(`^${p.policy_id}\\s+caps\\s+tenant:${t}/\\*\\s+3\\s+ACTIVE`, 'm'));
    assert.equal((await json('policies', 'update', p.policy_id, '--status', 'disabled')).status, 'DISABLED');
  });

  test('audit tail shows the latest entries, oldest first; overview summarizes', async () => {
    const key = (await json('keys', 'create', '--tenant', t, '--name', 'runtime')).key_secret as string;
    const r = await reserveOk(srv, key, reserveBody({ tenant: t }, 5));
    expectStatus(await srv.call('POST', `/v1/reservations/${r.reservation_id}/release`, { admin: true, body: { idempotency_key: uid('rel') } }), 200);
    const tail = await cycles('audit', 'tail', '--tenant', t, '-n', '3');
    const lines = tail.trim().split('\n');
    assert.match(lines[0]!, /^TIME\s+TENANT\s+OPERATION\s+STATUS/);
    assert.equal(lines.length, 5, tail);
    assert.match(lines[4]!, /releaseReservation\s+200\s+rsv_/);
    const asJson = (await cycles('--json', 'audit', 'tail', '--tenant', t, '-n', '2')).trim().split('\n').map((l) => JSON.parse(l) as Json);
    assert.deepEqual(asJson.map((e) => e.operation), ['createReservation', 'releaseReservation']);
    await fails(['budgets', 'freeze', `tenant:${t}/app:none`, 'TOKENS']);
    const errors = (await cycles('--json', 'audit', 'tail', '--errors', '-n', '5')).trim().split('\n').map((l) => JSON.parse(l) as Json);
    assert.ok(errors.length >= 1 && errors.every((e) => e.status >= 400));
    const overview = await cycles('overview');
    assert.match(overview, /^tenants\s+\d+ total, \d+ active/m);
  });

  test('close needs --yes; errors carry the protocol code and exit non-zero; a missing admin key is exit 2', async () => {
    const noYes = await fails(['tenants', 'close', t]);
    assert.equal(noYes.code, 2);
    assert.match(noYes.stderr, /--yes/);
    assert.match(await cycles('tenants', 'close', t, '--yes'), new RegExp(`tenant ${t} is CLOSED`));
    const closed = await fails(['budgets', 'freeze', `tenant:${t}`, 'TOKENS']);
    assert.equal(closed.code, 1);
    assert.match(closed.stderr, /TENANT_CLOSED: .*\(HTTP 409, request req_/);
    const noKey = await fails(['tenants', 'list'], { ADMIN_API_KEY: '' });
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /admin key is required/);
    const badUnit = await fails(['budgets', 'get', `tenant:${t}`, 'EUROS']);
    assert.equal(badUnit.code, 2);
  });
});
