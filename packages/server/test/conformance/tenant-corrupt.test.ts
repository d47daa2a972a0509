/**
 * A tenant record whose status cannot be determined MUST fail closed with 500 INTERNAL_ERROR on
 * both the persisting surface and the non-persisting one (dry_run, decide).
 * Spec: ERROR SEMANTICS, closed-tenant binding ("Guard evaluation (both surfaces)").
 * White-box: the record is corrupted directly in the SQLite store; skipped if the layout differs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import {
  commit,
  commitBody,
  decide,
  decideBody,
  eventBody,
  expectError,
  expectStatus,
  getReservation,
  newTenant,
  postEvent,
  reserve,
  reserveBody,
  reserveOk,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

test('corrupt tenant status: 500 INTERNAL_ERROR on create, dry-run, decide, commit and events; reads still work', async (t) => {
  const ctx = await newTenant(srv, [{ at: '', allocated: 1000 }]);
  const r = await reserveOk(srv, ctx.key, reserveBody({ tenant: ctx.tenant }, 10));
  const file = path.join(srv.dataDir, 'cycles.db');
  if (!fs.existsSync(file)) {
    t.skip('store layout unknown (no cycles.db)');
    return;
  }
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 2000');
    const cols = db.prepare("SELECT name FROM pragma_table_info('tenants')").all() as Array<{ name: string }>;
    if (!cols.some((c) => c.name === 'status')) {
      t.skip('store layout unknown (no tenants.status)');
      return;
    }
    const changed = db.prepare('UPDATE tenants SET status = ? WHERE tenant_id = ?').run('GARBLED', ctx.tenant);
    assert.equal(changed.changes, 1);
  } finally {
    db.close();
  }
  expectError(await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant }, 1)), 500, 'INTERNAL_ERROR');
  expectError(await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant }, 1, 'TOKENS', { dry_run: true })), 500, 'INTERNAL_ERROR');
  expectError(await decide(srv, ctx.key, decideBody({ tenant: ctx.tenant }, 1)), 500, 'INTERNAL_ERROR');
  expectError(await commit(srv, ctx.key, r.reservation_id, commitBody(1)), 500, 'INTERNAL_ERROR');
  expectError(await postEvent(srv, ctx.key, eventBody({ tenant: ctx.tenant }, 1)), 500, 'INTERNAL_ERROR');
  assert.equal(expectStatus(await getReservation(srv, ctx.key, r.reservation_id), 200).status, 'ACTIVE');
});
