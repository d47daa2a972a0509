/**
 * Store failures on the embedded store. A full disk (simulated with SQLite's max_page_count) and
 * a lost database connection answer fast 503s with a clear ErrorResponse, write nothing partial
 * (the ledger rules hold and no idempotency record of a failed mutation exists), take readiness
 * DOWN, and, once the disk has room again, service resumes by itself.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type Database from 'better-sqlite3';
import { budgetsOf, checkLedger, idem, metric, NO_LIMITS, provision, reservationsOf, reserveBody, scrape, show, startOps, type Res } from './support.js';

type Server = { server: { backend: unknown } };
/** A PRAGMA on the store's connection, wherever it runs (this thread or the store thread). */
const pragma = (s: Server, source: string): Promise<unknown> => (s.server.backend as { pragma(source: string): Promise<unknown> }).pragma(source);
const dbOf = (s: Server): Database.Database => (s.server.backend as unknown as { db: Database.Database }).db;
/** Both ways the embedded store runs: on a thread of its own (the default) and in-process. */
const MODES = [
  { name: 'store thread', sqliteThread: true },
  { name: 'in-process', sqliteThread: false },
] as const;

function assertUnavailable(r: Res, tookMs: number): void {
  assert.equal(r.status, 503, show(r));
  assert.equal(r.body.error, 'INTERNAL_ERROR');
  assert.match(r.body.message, /store|Store/);
  assert.equal(r.body.request_id, r.headers.get('x-request-id'));
  assert.match(r.body.trace_id, /^[0-9a-f]{32}$/);
  assert.match(r.headers.get('retry-after') ?? '', /^\d+$/);
  assert.ok(tookMs < 2000, `answered in ${tookMs} ms`);
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const v = await f();
  return [v, Date.now() - t0];
}

for (const mode of MODES) describe(`disk full (${mode.name})`, () => {
  test('writes fail fast with 503, nothing partial, readiness DOWN; recovery when space returns', async () => {
    const s = await startOps({ ...NO_LIMITS, sqliteThread: mode.sqliteThread });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 10_000_000 }, { at: 'workspace:w1', allocated: 5_000_000 }]);
      const pages = (await pragma(s, 'page_count')) as number;
      await pragma(s, `max_page_count = ${pages}`);
      const subject = { tenant: t.id, workspace: 'w1' };
      // Fill the remaining free space: reservations succeed until one no longer fits.
      const acked: string[] = [];
      let failed: { res: Res; took: number; key: string } | undefined;
      for (let i = 0; i < 2000 && !failed; i++) {
        // Several at once: they share one commit group, which must fail or succeed as a whole per operation.
        const batch = Array.from({ length: 8 }, () => reserveBody(t.id, 10, { subject, metadata: { pad: 'p'.repeat(200) } }));
        const results = await Promise.all(batch.map((b) => timed(() => s.client.post('/v1/reservations', b, { key: t.key }))));
        results.forEach(([res, took], j) => {
          if (res.status === 200) acked.push(res.body.reservation_id);
          else if (!failed) failed = { res, took, key: batch[j]!.idempotency_key };
          else assert.equal(res.status, 503, show(res));
        });
      }
      assert.ok(failed, 'the disk filled up');
      assertUnavailable(failed.res, failed.took);
      assert.match(failed.res.body.message, /full/);
      // The group that failed may have needed more new pages (index splits) than readiness's
      // write probe does; a full disk has no room at all, so take what the file has left.
      await pragma(s, `max_page_count = ${(await pragma(s, 'page_count')) as number}`);
      // A write that fits in the free space of existing pages still succeeds, and rightly tells
      // readiness the store writes again: on the store thread a later, smaller group of the batch
      // above can do that. One that needs new pages (32 KB of metadata) now fails for certain, so
      // the store has just seen a write fail.
      const big = { ...reserveBody(t.id, 10, { subject }), metadata: { pad: 'p'.repeat(32 * 1024) } };
      const bigRes = await s.client.post('/v1/reservations', big, { key: t.key });
      assert.equal(bigRes.status, 503, show(bigRes));

      // Readiness says why; liveness is unaffected; the gauge shows the store down.
      const ready = await s.client.get('/readyz');
      assert.equal(ready.status, 503, show(ready));
      assert.equal(ready.body.status, 'DOWN');
      assert.match(ready.body.error, /full/);
      assert.equal((await s.client.get('/healthz')).status, 200);
      assert.equal(metric(await scrape(s.client), 'cycles_store_up'), 0);

      // Reads still answer: nothing partial was written, every acknowledged hold is there.
      const reservations = await reservationsOf(s.client, t.id);
      assert.deepEqual(new Set(reservations.map((r) => r.reservation_id)), new Set(acked));
      assert.ok(!reservations.some((r) => r.idempotency_key === failed!.key), 'the failed reservation does not exist');
      const budgets = await budgetsOf(s.client, t.id);
      assert.deepEqual(checkLedger(budgets, reservations), []);
      for (const b of budgets) assert.equal(b.reserved, acked.length * 10, b.scope);

      // Still full: readiness keeps probing and keeps saying DOWN.
      assert.equal((await s.client.get('/actuator/health/readiness')).status, 503);
      // Space returns: readiness notices by itself (its write probe succeeds), before any traffic.
      await pragma(s, 'max_page_count = 1073741823');
      const back = await s.client.get('/readyz');
      assert.equal(back.status, 200, show(back));
      assert.equal(metric(await scrape(s.client), 'cycles_store_up'), 1);
      // The same request (same idempotency key) now succeeds, once.
      const retryBody = { ...reserveBody(t.id, 10, { subject }), idempotency_key: failed.key };
      const retry = await s.client.post('/v1/reservations', retryBody, { key: t.key });
      assert.equal(retry.status, 200, show(retry));
      const after = await reservationsOf(s.client, t.id);
      assert.equal(after.length, acked.length + 1);
      assert.deepEqual(checkLedger(await budgetsOf(s.client, t.id), after), []);
      const replay = await s.client.post('/v1/reservations', retryBody, { key: t.key });
      assert.equal(replay.body.reservation_id, retry.body.reservation_id, 'the retry was applied exactly once');
    } finally {
      await s.close();
    }
  });
});

for (const mode of MODES) describe(`lost connection (${mode.name})`, () => {
  test('every call answers 503 fast with a clear error, probes report DOWN, nothing is written', async () => {
    const s = await startOps({ ...NO_LIMITS, sqliteThread: mode.sqliteThread });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
      const ok = await s.client.post('/v1/reservations', reserveBody(t.id, 100), { key: t.key });
      assert.equal(ok.status, 200, show(ok));
      // In-process the connection closes; on its own thread, the thread that holds it stops.
      if (mode.sqliteThread) await (s.server.backend as unknown as { thread: { terminate(): Promise<number> } }).thread.terminate();
      else dbOf(s).close();
      const calls: Array<() => Promise<Res>> = [
        () => s.client.post('/v1/reservations', reserveBody(t.id, 1), { key: t.key }),
        () => s.client.post(`/v1/reservations/${ok.body.reservation_id}/commit`, { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 5 } }, { key: t.key }),
        () => s.client.get(`/v1/balances?tenant=${t.id}`, { key: t.key }),
        () => s.client.get(`/v1/admin/tenants/${t.id}`, { admin: true }),
        () => s.client.post('/v1/admin/tenants', { tenant_id: 'never-created', name: 'x' }, { admin: true }),
      ];
      for (const call of calls) {
        const [r, took] = await timed(call);
        assertUnavailable(r, took);
        assert.match(r.body.message, mode.sqliteThread ? /store thread stopped.*unavailable/ : /not open|unavailable/);
      }
      const ready = await s.client.get('/actuator/health/readiness');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.status, 'DOWN');
      assert.equal((await s.client.get('/actuator/health/liveness')).status, 200);
    } finally {
      await s.close();
    }
  });
});
