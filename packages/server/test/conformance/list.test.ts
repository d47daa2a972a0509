/**
 * listReservations: filters, time windows, sorting, cursor pagination and include projections.
 * Spec: listReservations (RECOVERY, SUBJECT FILTERS, TIME-RANGE FILTERS, sort_by/sort_dir,
 * include FIELD PROJECTION, cursor invalidation), ReservationSummary.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, startTestServer, type Json, type TestServer } from '../helpers/harness.js';
import {
  commit,
  commitBody,
  expectError,
  expectStatus,
  listReservations,
  newTenant,
  release,
  reserveBody,
  reserveOk,
  type TenantCtx,
} from '../helpers/runtime.js';

let srv: TestServer;
let t: TenantCtx;
let t0: number;
let tMid: number;
/** reservation_id -> expected row facts */
const rows = new Map<string, { status: string; amount: number; workspace: string; agent: string; key: string; afterMid: boolean }>();

const iso = (ms: number): string => new Date(ms).toISOString();

before(async () => {
  srv = await startTestServer();
  t = await newTenant(srv, [{ at: '', allocated: 1_000_000 }]);
  t0 = Date.now() - 2000;
  const specs: Array<[string, string, number, 'ACTIVE' | 'COMMITTED' | 'RELEASED']> = [
    ['prod', 'a1', 30, 'ACTIVE'],
    ['prod', 'a2', 10, 'COMMITTED'],
    ['dev', 'a1', 50, 'RELEASED'],
    ['prod', 'a1', 20, 'ACTIVE'],
    ['dev', 'a3', 70, 'COMMITTED'],
    ['prod', 'a2', 40, 'ACTIVE'],
    ['dev', 'a1', 60, 'RELEASED'],
    // Ties on every sort key but reservation_id/created_at_ms, to exercise keyset tie-breaking.
    ['prod', 'a1', 30, 'ACTIVE'],
    ['prod', 'a1', 30, 'ACTIVE'],
    // Byte order and linguistic collation disagree on these ("x-z" < "xa" < "xb" bytewise only).
    ['x-z', 'a1', 5, 'ACTIVE'],
    ['xa', 'a1', 6, 'ACTIVE'],
  ];
  let i = 0;
  for (const [workspace, agent, amount, status] of specs) {
    if (i === 4) {
      await sleep(20);
      tMid = Date.now();
      await sleep(20);
    }
    i++;
    const body = reserveBody({ tenant: t.tenant, workspace, agent }, amount, 'TOKENS', { metadata: { idx: i } });
    const r = await reserveOk(srv, t.key, body);
    if (status === 'COMMITTED') expectStatus(await commit(srv, t.key, r.reservation_id, commitBody(amount - 1, 'TOKENS', { metadata: { done: i } })), 200);
    if (status === 'RELEASED') expectStatus(await release(srv, t.key, r.reservation_id), 200);
    rows.set(r.reservation_id, { status, amount, workspace, agent, key: body.idempotency_key as string, afterMid: i > 4 });
    await sleep(3);
  }
});
after(async () => {
  await srv?.close();
});

async function list(params: Record<string, string | number | undefined> = {}): Promise<Json[]> {
  const res = await listReservations(srv, t.key, { limit: 200, ...params });
  return expectStatus(res, 200).reservations as Json[];
}
const ids = (rs: Json[]): string[] => rs.map((r) => r.reservation_id as string).sort();
const expectedIds = (pred: (r: { status: string; amount: number; workspace: string; agent: string; afterMid: boolean }) => boolean): string[] =>
  [...rows.entries()].filter(([, r]) => pred(r)).map(([id]) => id).sort();

const keyOf = (r: Json, by: string): string | number => {
  switch (by) {
    case 'reserved':
      return r.reserved.amount;
    case 'tenant':
      return r.subject.tenant ?? '';
    default:
      return r[by];
  }
};
const isSorted = (rs: Json[], by: string, dir: 'asc' | 'desc'): boolean =>
  rs.every((r, i) => {
    if (i === 0) return true;
    const a = keyOf(rs[i - 1], by);
    const b = keyOf(r, by);
    return dir === 'asc' ? a <= b : a >= b;
  });

/** Follows next_cursor to the end; asserts has_more/next_cursor consistency. */
async function paginate(params: Record<string, string | number | undefined>): Promise<Json[]> {
  const out: Json[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 50; page++) {
    const res = expectStatus(await listReservations(srv, t.key, { ...params, cursor }), 200);
    assert.ok(res.reservations.length <= Number(params.limit ?? 50), 'page size <= limit');
    out.push(...res.reservations);
    if (res.next_cursor) {
      if (res.has_more !== undefined) assert.equal(res.has_more, true, 'has_more is true when next_cursor is present');
      cursor = res.next_cursor;
    } else {
      if (res.has_more !== undefined) assert.equal(res.has_more, false);
      return out;
    }
  }
  assert.fail('pagination did not terminate');
}

describe('filters', () => {
  test('unfiltered list returns every row of the tenant with required fields', async () => {
    const rs = await list();
    assert.deepEqual(ids(rs), expectedIds(() => true));
    for (const r of rs) {
      const exp = rows.get(r.reservation_id)!;
      assert.equal(r.status, exp.status);
      assert.deepEqual(r.reserved, { unit: 'TOKENS', amount: exp.amount });
      assert.equal(r.scope_path, `tenant:${t.tenant}/workspace:${exp.workspace}/agent:${exp.agent}`);
      if (exp.status === 'ACTIVE') assert.equal(r.finalized_at_ms, undefined, 'finalized_at_ms absent on ACTIVE rows');
      else assert.equal(typeof r.finalized_at_ms, 'number', 'finalized_at_ms present on COMMITTED/RELEASED rows');
    }
  });

  test('status filter', async () => {
    for (const status of ['ACTIVE', 'COMMITTED', 'RELEASED', 'EXPIRED']) {
      assert.deepEqual(ids(await list({ status })), expectedIds((r) => r.status === status), status);
    }
  });

  test('invalid status value: 400 INVALID_REQUEST', async () => {
    expectError(await listReservations(srv, t.key, { status: 'DONE' }), 400, 'INVALID_REQUEST');
  });

  test('subject filters (workspace, agent) combine with AND', async () => {
    assert.deepEqual(ids(await list({ workspace: 'prod' })), expectedIds((r) => r.workspace === 'prod'));
    assert.deepEqual(ids(await list({ agent: 'a1' })), expectedIds((r) => r.agent === 'a1'));
    assert.deepEqual(ids(await list({ workspace: 'dev', agent: 'a1' })), expectedIds((r) => r.workspace === 'dev' && r.agent === 'a1'));
    assert.deepEqual(ids(await list({ workspace: 'dev', status: 'COMMITTED' })), expectedIds((r) => r.workspace === 'dev' && r.status === 'COMMITTED'));
    assert.deepEqual(await list({ workspace: 'nowhere' }), []);
  });

  test('idempotency_key recovers exactly one reservation', async () => {
    const [id, r] = [...rows.entries()][3]!;
    const rs = await list({ idempotency_key: r.key });
    assert.deepEqual(ids(rs), [id]);
  });

  test('an unrecognised query parameter is ignored', async () => {
    assert.deepEqual(ids(await list({ frobnicate: 'yes' })), expectedIds(() => true));
  });

  test('limit outside 1..200: 400 INVALID_REQUEST', async () => {
    expectError(await listReservations(srv, t.key, { limit: 0 }), 400, 'INVALID_REQUEST');
    expectError(await listReservations(srv, t.key, { limit: 201 }), 400, 'INVALID_REQUEST');
  });
});

describe('time windows', () => {
  test('from/to bind to created_at_ms (inclusive)', async () => {
    const all = await list();
    assert.deepEqual(ids(await list({ from: iso(t0) })), ids(all));
    assert.deepEqual(await list({ from: iso(Date.now() + 60_000) }), []);
    assert.deepEqual(await list({ to: iso(t0) }), []);
    const after = await list({ from: iso(tMid) });
    const before = await list({ to: iso(tMid) });
    assert.deepEqual(ids(after), expectedIds((r) => r.afterMid));
    assert.deepEqual(ids(before), expectedIds((r) => !r.afterMid));
    for (const r of after) assert.ok(r.created_at_ms >= tMid);
    for (const r of before) assert.ok(r.created_at_ms <= tMid);
    // Inclusive bounds: a window of exactly one row's created_at_ms returns that row.
    const one = all[0]!;
    const exact = await list({ from: iso(one.created_at_ms), to: iso(one.created_at_ms) });
    assert.ok(ids(exact).includes(one.reservation_id));
  });

  test('blank window values mean unset (never 400)', async () => {
    const all = ids(await list());
    assert.deepEqual(ids(await list({ from: '', to: '' })), all);
    assert.deepEqual(ids(await list({ from: '', to: '', expires_from: '', expires_to: '', finalized_from: '', finalized_to: '' })), all);
  });

  test('from > to in any pair: 400 INVALID_REQUEST', async () => {
    const [lo, hi] = [iso(t0), iso(t0 + 1000)];
    for (const [a, b] of [
      ['from', 'to'],
      ['expires_from', 'expires_to'],
      ['finalized_from', 'finalized_to'],
    ] as const) {
      expectError(await listReservations(srv, t.key, { [a]: hi, [b]: lo }), 400, 'INVALID_REQUEST');
    }
  });

  test('malformed date-time: 400 INVALID_REQUEST', async () => {
    for (const p of ['from', 'to', 'expires_from', 'expires_to', 'finalized_from', 'finalized_to']) {
      expectError(await listReservations(srv, t.key, { [p]: 'not-a-date' }), 400, 'INVALID_REQUEST');
    }
  });

  test('finalized_* excludes ACTIVE (and EXPIRED) rows', async () => {
    assert.deepEqual(ids(await list({ finalized_from: iso(t0) })), expectedIds((r) => r.status === 'COMMITTED' || r.status === 'RELEASED'));
    assert.deepEqual(ids(await list({ finalized_to: iso(Date.now() + 60_000) })), expectedIds((r) => r.status === 'COMMITTED' || r.status === 'RELEASED'));
  });

  test('expires_* bind to expires_at_ms; windows combine with AND', async () => {
    const all = await list();
    const minExp = Math.min(...all.map((r) => r.expires_at_ms as number));
    assert.deepEqual(ids(await list({ expires_from: iso(minExp) })), ids(all));
    assert.deepEqual(await list({ expires_to: iso(minExp - 1) }), []);
    const combined = await list({ from: iso(tMid), finalized_from: iso(t0) });
    for (const r of combined) {
      assert.ok(r.created_at_ms >= tMid);
      assert.ok(r.status === 'COMMITTED' || r.status === 'RELEASED');
    }
    assert.deepEqual(ids(combined), expectedIds((r) => r.afterMid && (r.status === 'COMMITTED' || r.status === 'RELEASED')));
  });
});

describe('sorting', () => {
  test('every sort_by key in both directions', async () => {
    for (const by of ['reservation_id', 'tenant', 'scope_path', 'status', 'reserved', 'created_at_ms', 'expires_at_ms']) {
      for (const dir of ['asc', 'desc'] as const) {
        const rs = await list({ sort_by: by, sort_dir: dir });
        assert.equal(rs.length, rows.size);
        assert.ok(isSorted(rs, by, dir), `${by} ${dir}: ${rs.map((r) => keyOf(r, by)).join(', ')}`);
      }
    }
  });

  test('reserved sorts by integer amount, and sort_dir defaults to desc when sort_by is given', async () => {
    const rs = await list({ sort_by: 'reserved' });
    assert.deepEqual(
      rs.map((r) => r.reserved.amount),
      [...rows.values()].map((r) => r.amount).sort((x, y) => y - x),
    );
  });

  test('invalid sort_by or sort_dir: 400 INVALID_REQUEST', async () => {
    expectError(await listReservations(srv, t.key, { sort_by: 'amount' }), 400, 'INVALID_REQUEST');
    expectError(await listReservations(srv, t.key, { sort_by: 'reserved', sort_dir: 'up' }), 400, 'INVALID_REQUEST');
  });
});

describe('cursor pagination', () => {
  test('default order: pages never skip or repeat rows', async () => {
    const rs = await paginate({ limit: 2 });
    assert.equal(rs.length, rows.size);
    assert.equal(new Set(rs.map((r) => r.reservation_id)).size, rows.size);
    assert.deepEqual(ids(rs), expectedIds(() => true));
  });

  test('sorted: for every sort key and direction, pages continue in sort order without skips or repeats (ties included)', async () => {
    for (const by of ['reservation_id', 'tenant', 'scope_path', 'status', 'reserved', 'created_at_ms', 'expires_at_ms']) {
      for (const dir of ['asc', 'desc'] as const) {
        for (const limit of [1, 3]) {
          const rs = await paginate({ limit, sort_by: by, sort_dir: dir });
          const label = `${by} ${dir} limit=${limit}`;
          assert.equal(rs.length, rows.size, `${label}: ${rs.length} rows`);
          assert.equal(new Set(rs.map((r) => r.reservation_id)).size, rows.size, `${label}: no repeats`);
          assert.ok(isSorted(rs, by, dir), `${label}: order across pages`);
        }
      }
    }
  });

  test('filtered pagination returns exactly the filtered set', async () => {
    const rs = await paginate({ limit: 1, workspace: 'prod' });
    assert.deepEqual(ids(rs), expectedIds((r) => r.workspace === 'prod'));
  });

  test('a sorted cursor reused with a different window is 400; changing include is allowed', async () => {
    const first = expectStatus(await listReservations(srv, t.key, { limit: 2, sort_by: 'created_at_ms', from: iso(t0) }), 200);
    assert.ok(first.next_cursor, 'more than one page');
    const cursor = first.next_cursor as string;
    expectError(await listReservations(srv, t.key, { limit: 2, sort_by: 'created_at_ms', from: iso(t0 + 1), cursor }), 400, 'INVALID_REQUEST');
    const withInclude = expectStatus(
      await listReservations(srv, t.key, { limit: 2, sort_by: 'created_at_ms', from: iso(t0), cursor, include: 'metadata' }),
      200,
    );
    const plain = expectStatus(await listReservations(srv, t.key, { limit: 2, sort_by: 'created_at_ms', from: iso(t0), cursor }), 200);
    assert.deepEqual(ids(withInclude.reservations), ids(plain.reservations));
    assert.ok(!ids(plain.reservations).some((id) => ids(first.reservations).includes(id)));
  });

  test('a garbage cursor is 400 INVALID_REQUEST', async () => {
    expectError(await listReservations(srv, t.key, { cursor: '%%%not-a-cursor%%%' }), 400, 'INVALID_REQUEST');
  });
});

describe('include projections', () => {
  test('committed is always projected on COMMITTED rows; metadata maps are opt-in', async () => {
    const rs = await list();
    for (const r of rs) {
      const exp = rows.get(r.reservation_id)!;
      if (exp.status === 'COMMITTED') assert.deepEqual(r.committed, { unit: 'TOKENS', amount: exp.amount - 1 });
      else assert.equal(r.committed, undefined);
      assert.equal(r.metadata, undefined, 'metadata omitted by default');
      assert.equal(r.committed_metadata, undefined, 'committed_metadata omitted by default');
      assert.equal(r.evidence, undefined, 'evidence omitted by default');
    }
  });

  test('include=metadata,committed_metadata projects both', async () => {
    const rs = await list({ include: 'metadata,committed_metadata' });
    for (const r of rs) {
      const exp = rows.get(r.reservation_id)!;
      assert.equal(typeof r.metadata?.idx, 'number', 'reserve-time metadata projected');
      if (exp.status === 'COMMITTED') assert.equal(typeof r.committed_metadata?.done, 'number');
      else assert.equal(r.committed_metadata, undefined);
    }
    const onlyCommitted = await list({ include: 'committed_metadata' });
    for (const r of onlyCommitted) assert.equal(r.metadata, undefined);
  });

  test('unknown tokens, empty tokens and whitespace are ignored (never 400)', async () => {
    const rs = await list({ include: ' metadata , ,bogus,' });
    assert.equal(rs.length, rows.size);
    for (const r of rs) assert.equal(typeof r.metadata?.idx, 'number');
    assert.equal((await list({ include: '' })).length, rows.size);
    assert.equal((await list({ include: 'nothing-known' })).length, rows.size);
  });
});
