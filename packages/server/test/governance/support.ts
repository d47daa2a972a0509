/**
 * Helpers of the governance suite. Every call goes through the harness, so every response is
 * validated against the upstream governance spec (body schema for the declared status, headers).
 */
import assert from 'node:assert/strict';
import { uid, type CallResult, type Json, type Method, type TestServer } from '../helpers/harness.js';
import { expectStatus, qs } from '../helpers/runtime.js';

export type Params = Record<string, string | number | boolean | undefined>;

export const adminCall = (srv: TestServer, method: Method, path: string, body?: unknown): Promise<CallResult> =>
  srv.call(method, path, body === undefined ? { admin: true } : { admin: true, body });

export async function createTenant(srv: TestServer, extra: Record<string, unknown> = {}): Promise<string> {
  const id = uid('g');
  expectStatus(await adminCall(srv, 'POST', '/v1/admin/tenants', { tenant_id: id, name: `Tenant ${id}`, ...extra }), 201);
  return id;
}

export async function createKey(srv: TestServer, tenant: string, extra: Record<string, unknown> = {}): Promise<{ key_id: string; secret: string }> {
  const res = expectStatus(await adminCall(srv, 'POST', '/v1/admin/api-keys', { tenant_id: tenant, name: 'k', ...extra }), 201);
  return { key_id: res.key_id as string, secret: res.key_secret as string };
}

export async function createBudget(srv: TestServer, tenant: string, suffix: string, allocated: number, extra: Record<string, unknown> = {}, unit = 'TOKENS'): Promise<Json> {
  const scope = suffix ? `tenant:${tenant}/${suffix}` : `tenant:${tenant}`;
  return expectStatus(
    await adminCall(srv, 'POST', '/v1/admin/budgets', { tenant_id: tenant, scope, unit, allocated: { unit, amount: allocated }, ...extra }),
    201,
  );
}

export async function lookup(srv: TestServer, scope: string, unit = 'TOKENS'): Promise<Json> {
  return expectStatus(await adminCall(srv, 'GET', `/v1/admin/budgets/lookup${qs({ scope, unit })}`), 200);
}

export async function fund(srv: TestServer, tenant: string, scope: string, body: Record<string, unknown>, unit = 'TOKENS'): Promise<CallResult> {
  return adminCall(srv, 'POST', `/v1/admin/budgets/fund${qs({ tenant_id: tenant, scope, unit })}`, body);
}

/** Every row of a list, following next_cursor; asserts the page contract on the way. */
export async function pageAll(srv: TestServer, path: string, wrapper: string, params: Params = {}, opts: { apiKey?: string } = {}): Promise<Json[]> {
  const rows: Json[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 200; i++) {
    const res = await srv.call('GET', `${path}${qs({ ...params, cursor })}`, opts.apiKey ? { apiKey: opts.apiKey } : { admin: true });
    const body = expectStatus(res, 200);
    assert.ok(Array.isArray(body[wrapper]), `${wrapper} must be an array`);
    assert.equal(typeof body.has_more, 'boolean', 'has_more must be present');
    rows.push(...(body[wrapper] as Json[]));
    if (!body.has_more) {
      assert.equal(body.next_cursor, undefined, 'no next_cursor on the last page');
      return rows;
    }
    assert.equal(typeof body.next_cursor, 'string', 'has_more=true needs a next_cursor');
    cursor = body.next_cursor as string;
  }
  throw new Error('pageAll: too many pages');
}

/** Events recorded by the server (GET /v1/admin/events), oldest first. */
export async function events(srv: TestServer, params: Params): Promise<Json[]> {
  return (await pageAll(srv, '/v1/admin/events', 'events', { ...params, sort_by: 'timestamp', sort_dir: 'asc', limit: 100 })) as Json[];
}

export async function auditLogs(srv: TestServer, params: Params): Promise<Json[]> {
  return pageAll(srv, '/v1/admin/audit/logs', 'logs', { limit: 100, ...params });
}

export const iso = (ms: number): string => new Date(ms).toISOString();
