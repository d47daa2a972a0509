/**
 * Keyset pagination of every governance list: while rows are added between pages (sorting before
 * and after the cursor), every row that existed when paging began is returned exactly once and
 * no row is ever repeated; filters apply before the limit, so every page but the last is full.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, uid, type Json, type TestServer } from '../helpers/harness.js';
import { expectStatus, qs } from '../helpers/runtime.js';
import { adminCall, auditLogs, createBudget, createKey, createTenant } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

/**
 * Pages through `path` with `limit`, calling `grow` after every page; checks that pages are full,
 * that nothing repeats, and returns the ids seen in order.
 */
async function walk(path: string, wrapper: string, idOf: (r: Json) => string, params: Record<string, string | number | undefined>, limit: number, grow: (page: number) => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const body = expectStatus(await adminCall(srv, 'GET', `${path}${qs({ ...params, limit, cursor })}`), 200);
    const rows = body[wrapper] as Json[];
    if (body.has_more) assert.equal(rows.length, limit, 'filters apply before the limit: a page with more to come is full');
    for (const r of rows) {
      assert.ok(!seen.includes(idOf(r)), `row ${idOf(r)} was returned twice`);
      seen.push(idOf(r));
    }
    if (!body.has_more) return seen;
    cursor = body.next_cursor;
    await grow(page);
  }
  throw new Error('too many pages');
}

const includesAll = (seen: string[], expected: string[]) => {
  for (const id of expected) assert.ok(seen.includes(id), `row ${id} present before paging began was skipped`);
};

describe('no skips, no repeats while rows are added', () => {
  test('tenants, sorted by id both ways and by creation time, with inserts on both sides of the cursor', async () => {
    const tag = uid('pg');
    const made: string[] = [];
    const add = async (suffix: string) => {
      const id = `${tag}-${suffix}`;
      expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: `n-${suffix}` }), 201);
      return id;
    };
    for (const s of ['b', 'd', 'f', 'h', 'j', 'l', 'n']) made.push(await add(s));
    let extra = 0;
    const grow = async () => {
      // One row before and one after anything seen so far.
      await add(`a${extra}`);
      await add(`z${extra++}`);
    };
    for (const [sort_by, sort_dir] of [['tenant_id', 'asc'], ['tenant_id', 'desc'], ['created_at', 'desc'], ['name', 'asc']] as const) {
      const seen = await walk('/v1/admin/tenants', 'tenants', (r) => r.tenant_id, { search: tag, sort_by, sort_dir }, 2, grow);
      includesAll(seen, made);
    }
  });

  test('budgets across tenants sorted by utilization (ties broken by id) while budgets are added', async () => {
    const t = await createTenant(srv);
    const made: string[] = [];
    for (let i = 0; i < 9; i++) made.push((await createBudget(srv, t, `app:a${i}`, 100)).ledger_id as string);
    const grow = async (page: number) => {
      await createBudget(srv, t, `app:new${page}-${uid('x')}`, 100);
    };
    for (const sort_by of ['utilization', 'scope', 'debt']) {
      const seen = await walk('/v1/admin/budgets', 'ledgers', (r) => r.ledger_id, { tenant_id: t, sort_by }, 2, grow);
      includesAll(seen, made);
    }
  });

  test('API keys, policies and audit entries while more are written', async () => {
    const t = await createTenant(srv);
    const keys: string[] = [];
    for (let i = 0; i < 5; i++) keys.push((await createKey(srv, t, { name: `k${i}` })).key_id);
    const seenKeys = await walk('/v1/admin/api-keys', 'keys', (r) => r.key_id, { tenant_id: t, sort_by: 'name', sort_dir: 'asc' }, 2, async () => {
      await createKey(srv, t, { name: 'a-first' });
      await createKey(srv, t, { name: 'z-last' });
    });
    includesAll(seenKeys, keys);

    const pols: string[] = [];
    for (let i = 0; i < 5; i++) {
      pols.push(expectStatus(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: t, name: `p${i}`, scope_pattern: `tenant:${t}/app:a${i}` }), 201).policy_id);
    }
    const seenPols = await walk('/v1/admin/policies', 'policies', (r) => r.policy_id, { tenant_id: t }, 2, async () => {
      expectStatus(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: t, name: uid('q'), scope_pattern: `tenant:${t}` }), 201);
    });
    includesAll(seenPols, pols);

    const before = (await auditLogs(srv, { tenant_id: t })).map((r) => r.log_id as string);
    assert.ok(before.length >= 10);
    const seenAudit = await walk('/v1/admin/audit/logs', 'logs', (r) => r.log_id, { tenant_id: t }, 3, async () => {
      // Every mutation adds an audit row for this tenant.
      expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/tenants/${t}`, { name: uid('r') }), 200);
    });
    includesAll(seenAudit, before);
  });
});
