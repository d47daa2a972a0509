/**
 * The embedded SQLite store at the store level: what the HTTP suites cannot arrange. A file of
 * an older schema version is upgraded on open and its reservations stay readable and
 * settleable; in one commit group, a member whose buffered writes SQLite refuses fails alone
 * (the group is rolled back and run again member by member), and members see each other's
 * writes (a same-key retry in the same group replays the first).
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { requestHash } from '../../src/ledger/ops/shared.js';
import { deriveScopes, type Subject } from '../../src/ledger/scopes.js';
import type { BudgetRecord, ReservationRecord } from '../../src/ledger/types.js';
import { budgetToRow, reservationToRow, tenantToRow } from '../../src/store/sqlite/rows.js';
import { SCHEMA_VERSION } from '../../src/store/sqlite/schema.js';
import { SqliteStore } from '../../src/store/sqlite/store.js';
import { IDLE_PASS_MAX_MS, nextPassDelay } from '../../src/store/sqlite/checkpointer.js';
import { CALLS_PER_MESSAGE, openSqliteThread } from '../../src/store/sqlite/thread.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'cycles-sqlite-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const V1_SCHEMA = readFileSync(new URL('./fixtures/sqlite-schema-v1.sql', import.meta.url), 'utf8');
const ctx = { actor: { type: 'api_key' as const, key_id: 'key_1' }, traceId: 'a'.repeat(32) };
const NOW = Date.now();

const budget = (scope: string, allocated: number, reserved = 0): BudgetRecord => ({
  ledger_id: `led_${scope}`,
  tenant_id: 't1',
  scope,
  unit: 'TOKENS',
  allocated,
  reserved,
  spent: 0,
  debt: 0,
  overdraft_limit: 0,
  is_over_limit: false,
  status: 'ACTIVE',
  created_at: NOW,
  updated_at: NOW,
});

const insert = (db: Database.Database, table: string, row: Record<string, unknown>) =>
  db.prepare(`INSERT INTO ${table} (${Object.keys(row).join(',')}) VALUES (${Object.keys(row).map((c) => '@' + c).join(',')})`).run(row);

function reserveCmd(subject: Subject, amount: number, key: string) {
  const request = { idempotency_key: key, subject, action: { kind: 'llm', name: 'x' }, estimate: { unit: 'TOKENS' as const, amount } };
  return { ctx, tenantId: 't1', request, scopes: deriveScopes(subject), hash: requestHash('reserve', request) };
}

function commitCmd(id: string, amount: number, key: string) {
  const request = { idempotency_key: key, actual: { unit: 'TOKENS' as const, amount } };
  return { ctx, reservationId: id, callerTenant: 't1', request, hash: requestHash('commit', request, id) };
}

describe('schema upgrade', () => {
  test('a version 1 file is upgraded on open; its reservations and idempotency records stay usable', async () => {
    const dir = tempDir();
    const old = new Database(join(dir, 'cycles.db'));
    old.pragma('journal_mode = WAL');
    old.exec(V1_SCHEMA);
    old.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', '1');
    insert(old, 'tenants', tenantToRow({ tenant_id: 't1', name: 'T1', status: 'ACTIVE', created_at: NOW }));
    insert(old, 'budgets', budgetToRow(budget('tenant:t1', 1000, 100)));
    insert(old, 'budgets', budgetToRow(budget('tenant:t1/workspace:w', 500, 100)));
    const held: ReservationRecord = {
      reservation_id: 'rsv_old',
      tenant_id: 't1',
      status: 'ACTIVE',
      subject: { tenant: 't1', workspace: 'W' },
      action: { kind: 'llm', name: 'x' },
      unit: 'TOKENS',
      reserved: 100,
      scope_path: 'tenant:t1/workspace:w',
      affected_scopes: ['tenant:t1', 'tenant:t1/workspace:w'],
      budgeted_scopes: ['tenant:t1', 'tenant:t1/workspace:w'],
      overage_policy: 'REJECT',
      idempotency_key: 'idem-old',
      created_at_ms: NOW,
      expires_at_ms: NOW + 600_000,
      ttl_ms: 600_000,
      grace_period_ms: 5_000,
      max_extensions: 10,
      extension_count: 0,
      metadata: { a: 1 },
    };
    insert(old, 'reservations', reservationToRow(held));
    // The reply of the reserve that created it, kept for a retry with the same key.
    const original = reserveCmd({ tenant: 't1', workspace: 'w' }, 100, 'idem-old');
    const storedReply = JSON.stringify({ decision: 'ALLOW', reservation_id: 'rsv_old', marker: 'from-v1' });
    insert(old, 'idempotency', {
      tenant_id: 't1',
      endpoint: 'reserve',
      key: 'idem-old',
      request_hash: original.hash,
      status: 200,
      body: storedReply,
      reservation_id: 'rsv_old',
      created_at: NOW,
      expires_at: NOW + 86_400_000,
    });
    const indexes = (db: Database.Database) =>
      (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reservations'").all() as Array<{ name: string }>).map((r) => r.name);
    assert.ok(indexes(old).includes('reservations_id') && indexes(old).includes('reservations_idem'));
    old.close();

    const store = new SqliteStore({ dataDir: dir, sync: 'normal' });
    try {
      assert.equal(await store.getMeta('schema_version'), String(SCHEMA_VERSION));
      const db = (store as unknown as { db: Database.Database }).db;
      assert.deepEqual(
        indexes(db).filter((n) => n === 'reservations_id' || n === 'reservations_idem'),
        [],
      );
      // v3: the purge of expired reservations has its index.
      assert.ok(indexes(db).includes('reservations_expired'));
      const plan = db.prepare("EXPLAIN QUERY PLAN DELETE FROM reservations WHERE status = 'EXPIRED' AND expired_at_ms < ?").all(1) as Array<{ detail: string }>;
      assert.match(plan.map((p) => p.detail).join(' '), /USING INDEX reservations_expired/);
      // v4: idempotency is a rowid table (its rows off the key's B-tree), with its rows kept.
      const idemSql = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'idempotency'").pluck().get() as string;
      assert.doesNotMatch(idemSql, /WITHOUT ROWID/i);
      const idemIndexes = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'idempotency'").all() as Array<{ name: string }>).map((r) => r.name);
      assert.ok(idemIndexes.includes('idempotency_expiry'), idemIndexes.join(','));
      assert.equal(db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'idempotency_v4'").pluck().get(), 0);
      const retried = await store.reserve(reserveCmd({ tenant: 't1', workspace: 'w' }, 100, 'idem-old'));
      assert.equal(retried.status, 200);
      assert.equal(JSON.parse(retried.body).marker, 'from-v1', 'the retry replays the reply stored before the upgrade');
      const mismatch = store.reserve(reserveCmd({ tenant: 't1', workspace: 'w' }, 99, 'idem-old'));
      await assert.rejects(mismatch, /different request payload/);
      assert.deepEqual(JSON.parse(JSON.stringify(await store.getReservation('rsv_old'))), held);
      for (const sortBy of ['reservation_id', 'created_at_ms', 'reserved'] as const) {
        const page = await store.listReservations({ tenantId: 't1', subject: {}, sortBy, sortDir: 'desc', limit: 10, idempotencyKey: 'idem-old' });
        assert.deepEqual(
          page.rows.map((r) => r.reservation_id),
          ['rsv_old'],
          sortBy,
        );
      }
      const res = await store.commit(commitCmd('rsv_old', 60, 'commit-old'));
      assert.equal(res.status, 200, res.body);
      const r = await store.getReservation('rsv_old');
      assert.equal(r?.status, 'COMMITTED');
      assert.equal(r?.committed, 60);
      for (const scope of ['tenant:t1', 'tenant:t1/workspace:w']) {
        const b = await store.getBudget(scope, 'TOKENS');
        assert.equal(b?.reserved, 0, scope);
        assert.equal(b?.spent, 60, scope);
      }
      // The sweeper's queue no longer holds it; the upgraded file takes new reservations.
      assert.equal(db.prepare('SELECT due_at_ms FROM reservations WHERE reservation_id = ?').pluck().get('rsv_old'), null);
      const fresh = await store.reserve(reserveCmd({ tenant: 't1', workspace: 'w' }, 10, 'new-1'));
      assert.equal(fresh.status, 200, fresh.body);
    } finally {
      await store.close();
    }
    // Opening again finds the current version and changes nothing.
    const again = new SqliteStore({ dataDir: dir, sync: 'normal' });
    try {
      assert.equal(await again.getMeta('schema_version'), String(SCHEMA_VERSION));
      assert.equal((await again.getReservation('rsv_old'))?.status, 'COMMITTED');
    } finally {
      await again.close();
    }
  });
});

describe('page cache', () => {
  test('8 MiB by default, CYCLES_SQLITE_CACHE_MB otherwise (SQLite alone keeps 2 MiB)', async () => {
    const cacheKib = async (store: SqliteStore) => {
      const db = (store as unknown as { db: Database.Database }).db;
      const v = db.pragma('cache_size', { simple: true }) as number;
      await store.close();
      return v;
    };
    assert.equal(await cacheKib(new SqliteStore({ dataDir: tempDir(), sync: 'normal' })), -8192);
    assert.equal(await cacheKib(new SqliteStore({ dataDir: tempDir(), sync: 'normal', cacheMb: 24 })), -24576);
  });
});

/** The committing connection's checkpoint window, in WAL pages. */
const windowOf = (store: SqliteStore): number => (store as unknown as { db: Database.Database }).db.pragma('wal_autocheckpoint', { simple: true }) as number;
const windowThenClose = async (store: SqliteStore): Promise<number> => {
  const v = windowOf(store);
  await store.close();
  return v;
};
/** Pages the WAL file holds (each frame: a 4 KiB page and its 24-byte header). */
const walPages = (dir: string): number => statSync(join(dir, 'cycles.db-wal')).size / (4096 + 24);

describe('checkpoint window', () => {
  test("SQLite's 1,000 WAL pages by default, CYCLES_SQLITE_CHECKPOINT_PAGES otherwise", async () => {
    assert.equal(await windowThenClose(new SqliteStore({ dataDir: tempDir(), sync: 'normal' })), 1_000);
    assert.equal(await windowThenClose(new SqliteStore({ dataDir: tempDir(), sync: 'normal', checkpointPages: 2_500 })), 2_500);
  });

  test('past the window, a commit group checkpoints and the WAL is written again from its start', async () => {
    const dir = tempDir();
    const store = new SqliteStore({ dataDir: dir, sync: 'normal', checkpointPages: 100 });
    try {
      await store.createTenant({ tenant_id: 't1', name: 'T1', status: 'ACTIVE', created_at: NOW });
      await store.createBudget(budget('tenant:t1', 1e12));
      // One group per reserve: each appends a few pages (the budget row, the reservation and
      // its index entries, the idempotency record) to the WAL.
      for (let i = 0; i < 300; i++) {
        const r = await store.reserve(reserveCmd({ tenant: 't1', workspace: `w${i % 7}` }, 1, `wal-${i}`));
        assert.equal(r.status, 200);
      }
      // Without checkpoints the WAL would hold every group's pages (over a thousand); with a
      // window of 100 pages it never holds much more than that plus one group.
      const pages = walPages(dir);
      assert.ok(pages <= 150, `the WAL holds ${pages} pages`);
      const page = await store.listReservations({ tenantId: 't1', subject: {}, sortBy: 'created_at_ms', sortDir: 'desc', limit: 500 });
      assert.equal(page.rows.length, 300);
    } finally {
      await store.close();
    }
  });
});

describe('checkpointer thread', () => {
  /** Reservations in the database file alone, without its WAL: what checkpoints copied there (-1: torn copy). */
  const inFile = (dir: string): number => {
    const copy = join(tempDir(), 'copy.db');
    copyFileSync(join(dir, 'cycles.db'), copy);
    let db: Database.Database;
    try {
      db = new Database(copy);
    } catch {
      return -1;
    }
    try {
      // No table yet: not even the schema has been checkpointed.
      if (!db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'reservations'").get()) return 0;
      return (db.prepare('SELECT count(*) AS n FROM reservations').get() as { n: number }).n;
    } catch (e) {
      // Copied in the middle of a pass: a torn file. The next poll copies it again.
      if ((e as { code?: string }).code === 'SQLITE_CORRUPT' || (e as { code?: string }).code === 'SQLITE_NOTADB') return -1;
      throw e;
    } finally {
      db.close();
    }
  };
  const until = async (what: string, done: () => boolean) => {
    const deadline = Date.now() + 10_000;
    while (!done()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const open = async (opts: { checkpointMs?: number; checkpointPages?: number; onWarning?: (message: string) => void }) => {
    const dir = tempDir();
    const store = new SqliteStore({ dataDir: dir, sync: 'normal', ...opts });
    await store.createTenant({ tenant_id: 't1', name: 'T1', status: 'ACTIVE', created_at: NOW });
    await store.createBudget(budget('tenant:t1', 1e12));
    return { dir, store };
  };
  /** One group per reserve: each appends a few pages to the WAL. */
  const reserveMany = async (store: SqliteStore, from: number, n: number) => {
    for (let i = from; i < from + n; i++) {
      const r = await store.reserve(reserveCmd({ tenant: 't1', workspace: `w${i % 7}` }, 1, `ckpt-${i}`));
      assert.equal(r.status, 200);
    }
  };

  test('the committing connection keeps a 10,000-page backstop window while the thread runs; an explicit window wins', async () => {
    assert.equal(await windowThenClose(new SqliteStore({ dataDir: tempDir(), sync: 'normal', checkpointMs: 50 })), 10_000);
    assert.equal(await windowThenClose(new SqliteStore({ dataDir: tempDir(), sync: 'normal', checkpointMs: 50, checkpointPages: 3_000 })), 3_000);
    assert.equal(await windowThenClose(new SqliteStore({ dataDir: tempDir(), sync: 'normal', checkpointMs: 0 })), 1_000);
  });

  test('the thread copies committed pages into the file, which the committing connection alone would not do yet', async () => {
    const withThread = await open({ checkpointMs: 10 });
    const without = await open({ checkpointPages: 10_000 });
    try {
      await reserveMany(withThread.store, 0, 200);
      await reserveMany(without.store, 0, 200);
      await until('the thread has copied every reservation into the file', () => inFile(withThread.dir) === 200);
      // The control: with a 10,000-page window and no thread, nothing has been checkpointed.
      assert.equal(inFile(without.dir), 0);
    } finally {
      await withThread.store.close();
      await without.store.close();
    }
  });

  test('once a pass has copied everything, the next commit writes the WAL from its start again', async () => {
    const { dir, store } = await open({ checkpointMs: 10 });
    try {
      const batch = 60;
      let first = 0;
      for (let b = 0; b < 8; b++) {
        await reserveMany(store, b * batch, batch);
        if (b === 0) first = walPages(dir);
        await until(`batch ${b} is in the file`, () => inFile(dir) === (b + 1) * batch);
      }
      // Each batch appends about as many pages as the first. Written from its start after each
      // catch-up, the WAL holds about one batch's worth (its file keeps its largest size);
      // appended to throughout, it would hold eight.
      const pages = walPages(dir);
      assert.ok(pages < 2 * first, `the WAL holds ${pages} pages, a batch ${first}`);
    } finally {
      await store.close();
    }
  });

  test('while nothing is committed the passes space out to IDLE_PASS_MAX_MS; a pass with work returns to the interval', () => {
    let d = 10;
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) seen.push((d = nextPassDelay(d, true, 10)));
    assert.deepEqual(seen, [20, 40, 80, 160, IDLE_PASS_MAX_MS, IDLE_PASS_MAX_MS, IDLE_PASS_MAX_MS, IDLE_PASS_MAX_MS]);
    assert.equal(nextPassDelay(IDLE_PASS_MAX_MS, false, 10), 10);
    // An interval longer than the idle ceiling is never shortened.
    assert.equal(nextPassDelay(1_000, true, 1_000), 1_000);
    assert.equal(nextPassDelay(1_000, false, 1_000), 1_000);
  });

  test('after an idle spell the thread copies new commits again', async () => {
    const { dir, store } = await open({ checkpointMs: 10 });
    try {
      await reserveMany(store, 0, 40);
      await until('the first reservations are in the file', () => inFile(dir) === 40);
      // Long enough for the passes to have spaced out to their ceiling.
      await new Promise((r) => setTimeout(r, 4 * IDLE_PASS_MAX_MS));
      await reserveMany(store, 40, 40);
      await until('the reservations committed after the idle spell are in the file', () => inFile(dir) === 80);
    } finally {
      await store.close();
    }
  });

  test("close stops the thread's connection first, so the last one checkpoints and removes the WAL; no warning", async () => {
    const warnings: string[] = [];
    const { dir, store } = await open({ checkpointMs: 10, onWarning: (m) => warnings.push(m) });
    await reserveMany(store, 0, 50);
    assert.ok(existsSync(join(dir, 'cycles.db-wal')));
    await store.close();
    assert.deepEqual(warnings, []);
    assert.equal(existsSync(join(dir, 'cycles.db-wal')), false);
    assert.equal(inFile(dir), 50);
  });

  test("if the thread stops, commit groups checkpoint for themselves again at SQLite's window, with a warning", async () => {
    const warnings: string[] = [];
    const { store } = await open({ checkpointMs: 10, onWarning: (m) => warnings.push(m) });
    try {
      assert.equal(await store.pragma('wal_autocheckpoint'), 10_000);
      const exited = new Promise((r) => store.checkpointer!.thread.once('exit', r));
      await store.checkpointer!.thread.terminate();
      await exited;
      await until('the window is back to 1,000', () => windowOf(store) === 1_000);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /^The SQLite checkpoint thread stopped \(exit code \d+\); commit groups now checkpoint the WAL themselves, every 1000 pages$/);
      await reserveMany(store, 0, 5);
    } finally {
      await store.close();
    }
  });
});

describe('commit group', () => {
  const open = async () => {
    const store = new SqliteStore({ dataDir: tempDir(), sync: 'normal' });
    await store.createTenant({ tenant_id: 't1', name: 'T1', status: 'ACTIVE', created_at: NOW });
    await store.createBudget(budget('tenant:t1', 1000));
    await store.createBudget(budget('tenant:t1/workspace:w', 500));
    return store;
  };
  const subject = { tenant: 't1', workspace: 'w' };

  test('a member whose writes SQLite refuses fails alone; the others commit; nothing of it is written', async () => {
    const store = await open();
    try {
      const db = (store as unknown as { db: Database.Database }).db;
      db.exec("CREATE TRIGGER refuse BEFORE INSERT ON reservations WHEN NEW.idempotency_key = 'boom' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END");
      // Issued in one turn: one commit group.
      const results = await Promise.allSettled([
        store.reserve(reserveCmd(subject, 10, 'ok-1')),
        store.reserve(reserveCmd(subject, 20, 'boom')),
        store.reserve(reserveCmd(subject, 30, 'ok-2')),
        // Refused by the ledger rules (over budget) in the same group: fails alone, as always.
        store.reserve(reserveCmd(subject, 10_000, 'too-big')),
      ]);
      assert.equal(results[0]!.status, 'fulfilled');
      assert.equal(results[2]!.status, 'fulfilled');
      assert.equal(results[1]!.status, 'rejected');
      assert.match(String((results[1] as PromiseRejectedResult).reason), /refused by trigger/);
      assert.equal(results[3]!.status, 'rejected');
      assert.equal(((results[3] as PromiseRejectedResult).reason as { code?: string }).code, 'BUDGET_EXCEEDED');
      for (const scope of ['tenant:t1', 'tenant:t1/workspace:w']) assert.equal((await store.getBudget(scope, 'TOKENS'))?.reserved, 40, scope);
      const page = await store.listReservations({ tenantId: 't1', subject: {}, sortBy: 'created_at_ms', sortDir: 'desc', limit: 10 });
      assert.deepEqual(page.rows.map((r) => r.idempotency_key).sort(), ['ok-1', 'ok-2']);
      assert.equal(db.prepare("SELECT COUNT(*) FROM idempotency WHERE key = 'boom'").pluck().get(), 0);
    } finally {
      await store.close();
    }
  });

  test('members see earlier members’ writes: a same-key retry in the same group replays the first', async () => {
    const store = await open();
    try {
      const [a, b] = await Promise.all([store.reserve(reserveCmd(subject, 10, 'same')), store.reserve(reserveCmd(subject, 10, 'same'))]);
      assert.equal(a.status, 200);
      assert.equal(b.replayed, true);
      assert.equal(JSON.parse(b.body).reservation_id, JSON.parse(a.body).reservation_id);
      assert.equal((await store.getBudget('tenant:t1', 'TOKENS'))?.reserved, 10);
      // Reserve and commit of one reservation in one group: the row is written once, committed.
      const id = JSON.parse(a.body).reservation_id as string;
      const [c, r2] = await Promise.all([store.commit(commitCmd(id, 4, 'c1')), store.reserve(reserveCmd(subject, 5, 'other'))]);
      assert.equal(c.status, 200, c.body);
      assert.equal(r2.status, 200, r2.body);
      const budgetRow = await store.getBudget('tenant:t1/workspace:w', 'TOKENS');
      assert.deepEqual([budgetRow?.reserved, budgetRow?.spent], [5, 4]);
      assert.equal((await store.getReservation(id))?.status, 'COMMITTED');
    } finally {
      await store.close();
    }
  });
});

describe('store thread', () => {
  test(`the calls of one turn leave in messages of at most ${CALLS_PER_MESSAGE}; a read in a later message still sees the writes sent before it`, async () => {
    const { store } = await openSqliteThread({ dataDir: tempDir(), sync: 'normal', checkpointMs: 0 });
    try {
      await store.createTenant({ tenant_id: 't1', name: 'T1', status: 'ACTIVE', created_at: NOW });
      await store.createBudget(budget('tenant:t1', 1e6));
      const worker = (store as unknown as { thread: Worker }).thread;
      const sizes: number[] = [];
      const post = worker.postMessage.bind(worker);
      worker.postMessage = (calls: unknown[]) => {
        sizes.push(calls.length);
        post(calls);
      };
      const writes = 2 * CALLS_PER_MESSAGE + 1;
      const reserves = Array.from({ length: writes }, (_, i) => store.reserve(reserveCmd({ tenant: 't1' }, 10, `turn-${i}`)));
      const read = store.getBudget('tenant:t1', 'TOKENS');
      const results = await Promise.all(reserves);
      assert.deepEqual(
        results.map((r) => r.status),
        Array.from({ length: writes }, () => 200),
      );
      // The read left in the last message, behind the writes of the earlier ones, and waited for their group.
      assert.equal((await read)?.reserved, 10 * writes);
      assert.deepEqual(sizes, [CALLS_PER_MESSAGE, CALLS_PER_MESSAGE, 2]);
    } finally {
      await store.close();
    }
  });
});
