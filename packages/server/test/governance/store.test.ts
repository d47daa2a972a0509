/**
 * Store-level rules of the governance plane on the embedded SQLite store: audit retention (stamped
 * at write time, purged by the sweeper's hourly purge), and last_used_at written at most once a
 * minute and never on a revoked key.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { auditRetention } from '../../src/admin/audit.js';
import type { Config } from '../../src/config.js';
import { SqliteStore } from '../../src/store/sqlite/store.js';
import type { AuditRecord } from '../../src/store/types.js';
import { startTestServer } from '../helpers/harness.js';
import { expectStatus } from '../helpers/runtime.js';
import { adminCall } from './support.js';

const DAY = 86_400_000;
let dir: string;
let now = 1_800_000_000_000;
let store: SqliteStore;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'cycles-gov-store-'));
  store = new SqliteStore({ dataDir: dir, sync: 'normal', clock: () => now });
});
after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const entry = (id: string, timestamp: number, expiresAt: number): AuditRecord => ({
  log_id: id,
  timestamp,
  tenant_id: '__admin__',
  operation: 'createTenant',
  status: 201,
  expires_at: expiresAt,
});

test('the hourly purge deletes audit rows past their retention and keeps the rest', async () => {
  await store.appendAudit([entry('log_old', now - 401 * DAY, now - DAY), entry('log_new', now - DAY, now + 399 * DAY), entry('log_edge', now - 400 * DAY, now)]);
  await store.purge(30 * DAY);
  const left = await store.queryAudit({ sortBy: 'timestamp', sortDir: 'asc', limit: 10 });
  assert.deepEqual(left.rows.map((r) => r.log_id), ['log_edge', 'log_new']);
  now += 1;
  await store.purge(30 * DAY);
  assert.deepEqual((await store.queryAudit({ sortBy: 'timestamp', sortDir: 'asc', limit: 10 })).rows.map((r) => r.log_id), ['log_new']);
});

test('last_used_at: at most once a minute per key, and never on a revoked key', async () => {
  const ctx = { actor: { type: 'admin' as const } };
  await store.openTenant({ tenant_id: 'acme', name: 'Acme', status: 'ACTIVE', created_at: 0 }, ctx);
  const key = (id: string) => ({
    key_id: id,
    tenant_id: 'acme',
    key_prefix: 'cyc_live_x',
    key_hash: `hash-${id}`,
    name: id,
    permissions: [],
    scope_filter: [],
    status: 'ACTIVE' as const,
    created_at: now,
    expires_at: now + 90 * DAY,
  });
  await store.issueApiKey(key('key_a'), ctx);
  await store.touchApiKey('key_a', now);
  assert.equal((await store.getApiKey('key_a'))?.last_used_at, now);
  await store.touchApiKey('key_a', now + 30_000);
  assert.equal((await store.getApiKey('key_a'))?.last_used_at, now, 'within the minute nothing is written');
  await store.touchApiKey('key_a', now + 61_000);
  assert.equal((await store.getApiKey('key_a'))?.last_used_at, now + 61_000);

  await store.issueApiKey(key('key_b'), ctx);
  // A touch queued in the same commit group right after a revoke must not resurrect or alter the key.
  await Promise.all([store.revokeApiKey('key_b', 'test', ctx), store.touchApiKey('key_b', now + 120_000)]);
  const b = await store.getApiKey('key_b');
  assert.deepEqual([b?.status, b?.last_used_at], ['REVOKED', undefined]);
});

test('retention is configurable: AUDIT_RETENTION_DAYS / config, and a bad value is refused', async () => {
  const base = {} as Config;
  assert.equal(auditRetention(base, {}).authenticatedMs, 400 * DAY);
  assert.equal(auditRetention(base, {}).unauthenticatedMs, 30 * DAY);
  assert.equal(auditRetention(base, { AUDIT_RETENTION_DAYS: '7' }).authenticatedMs, 7 * DAY);
  assert.equal(auditRetention({ auditRetentionDays: 2 } as unknown as Config, { AUDIT_RETENTION_DAYS: '7' }).authenticatedMs, 2 * DAY);
  assert.throws(() => auditRetention(base, { AUDIT_RETENTION_DAYS: 'forever' }), /AUDIT_RETENTION_DAYS/);

  const srv = await startTestServer({ auditRetentionDays: 3 });
  try {
    const res = await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: 'retention-check', name: 'r' });
    expectStatus(res, 201);
    await new Promise((r) => setTimeout(r, 50));
    const db = new Database(join(srv.dataDir, 'cycles.db'), { readonly: true });
    try {
      const row = db.prepare('SELECT timestamp, expires_at FROM audit_logs WHERE request_id = ?').get(res.requestId) as { timestamp: number; expires_at: number };
      assert.equal(row.expires_at - row.timestamp, 3 * DAY);
    } finally {
      db.close();
    }
  } finally {
    await srv.close();
  }
});
