/**
 * Runtime-plane helpers shared by the conformance suite: request builders, common flows
 * and precise ErrorResponse assertions.
 */
import assert from 'node:assert/strict';
import { idem, uid, type BudgetSpec, type CallResult, type Json, type ProvisionOptions, type TestServer } from './harness.js';

export type Unit = 'USD_MICROCENTS' | 'TOKENS' | 'CREDITS' | 'RISK_POINTS';

export interface Subject {
  tenant?: string;
  workspace?: string;
  app?: string;
  workflow?: string;
  agent?: string;
  toolset?: string;
  dimensions?: Record<string, string>;
}

export const ACTION = { kind: 'llm.completion', name: 'test-model' } as const;

export function reserveBody(subject: Subject, amount: number, unit: Unit = 'TOKENS', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('rsv'), subject, action: ACTION, estimate: { unit, amount }, ...extra };
}

export function decideBody(subject: Subject, amount: number, unit: Unit = 'TOKENS', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('dec'), subject, action: ACTION, estimate: { unit, amount }, ...extra };
}

export function eventBody(subject: Subject, amount: number, unit: Unit = 'TOKENS', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('evt'), subject, action: ACTION, actual: { unit, amount }, ...extra };
}

export function commitBody(amount: number, unit: Unit = 'TOKENS', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('cmt'), actual: { unit, amount }, ...extra };
}

export function releaseBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('rel'), ...extra };
}

export function extendBody(extendByMs: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { idempotency_key: idem('ext'), extend_by_ms: extendByMs, ...extra };
}

const describeRes = (res: CallResult): string => `HTTP ${res.status} ${res.text}`;

/**
 * Asserts an error response precisely: HTTP status, ErrorResponse.error code, a non-empty
 * message, request_id, and trace_id equal to the X-Cycles-Trace-Id header.
 */
export function expectError(res: CallResult, status: number, code: string): Json {
  assert.equal(res.status, status, `expected HTTP ${status} ${code}, got ${describeRes(res)}`);
  assert.ok(res.body && typeof res.body === 'object', `expected an ErrorResponse body, got ${describeRes(res)}`);
  assert.equal(res.body.error, code, `expected error=${code}, got ${describeRes(res)}`);
  assert.equal(typeof res.body.message, 'string');
  assert.ok(res.body.message.length > 0, 'ErrorResponse.message must not be empty');
  assert.equal(typeof res.body.request_id, 'string');
  assert.ok(res.body.request_id.length > 0, 'ErrorResponse.request_id must not be empty');
  assert.equal(res.body.trace_id, res.traceId, 'ErrorResponse.trace_id must equal X-Cycles-Trace-Id');
  assert.equal(res.body.request_id, res.requestId, 'ErrorResponse.request_id must equal X-Request-Id');
  return res.body;
}

export function expectStatus(res: CallResult, status: number): Json {
  assert.equal(res.status, status, `expected HTTP ${status}, got ${describeRes(res)}`);
  return res.body;
}

/** A fresh tenant with an API key and budgets at (tenant-relative) scopes. */
export interface TenantCtx {
  tenant: string;
  key: string;
  /** "tenant:<id>" + optional suffix, e.g. scope('workspace:prod'). */
  scope(suffix?: string): string;
}

export interface BudgetDef {
  /** Scope suffix relative to the tenant root ('' = the tenant root). */
  at: string;
  allocated: number;
  unit?: Unit;
  overdraft_limit?: number;
  commit_overage_policy?: BudgetSpec['commit_overage_policy'];
}

export async function newTenant(srv: TestServer, budgets: BudgetDef[] = [], opts: Omit<ProvisionOptions, 'budgets'> = {}): Promise<TenantCtx> {
  const tenant = uid('t');
  const scope = (suffix = ''): string => (suffix ? `tenant:${tenant}/${suffix}` : `tenant:${tenant}`);
  const key = await srv.provisionTenant(tenant, {
    ...opts,
    budgets: budgets.map((b) => ({
      scope: scope(b.at),
      unit: b.unit ?? 'TOKENS',
      allocated: b.allocated,
      ...(b.overdraft_limit !== undefined ? { overdraft_limit: b.overdraft_limit } : {}),
      ...(b.commit_overage_policy !== undefined ? { commit_overage_policy: b.commit_overage_policy } : {}),
    })),
  });
  return { tenant, key, scope };
}

export async function reserve(srv: TestServer, key: string, body: Record<string, unknown>, headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', '/v1/reservations', { apiKey: key, body, ...(headers ? { headers } : {}) });
}

/** Reserves and asserts a live 200 ALLOW; returns the response body. */
export async function reserveOk(srv: TestServer, key: string, body: Record<string, unknown>): Promise<Json> {
  const res = await reserve(srv, key, body);
  const b = expectStatus(res, 200);
  assert.ok(b.decision === 'ALLOW' || b.decision === 'ALLOW_WITH_CAPS', `expected ALLOW, got ${res.text}`);
  assert.equal(typeof b.reservation_id, 'string');
  return b;
}

export async function commit(srv: TestServer, key: string, id: string, body: Record<string, unknown>, headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', `/v1/reservations/${encodeURIComponent(id)}/commit`, { apiKey: key, body, ...(headers ? { headers } : {}) });
}

export async function release(srv: TestServer, key: string, id: string, body: Record<string, unknown> = releaseBody(), headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', `/v1/reservations/${encodeURIComponent(id)}/release`, { apiKey: key, body, ...(headers ? { headers } : {}) });
}

export async function extend(srv: TestServer, key: string, id: string, body: Record<string, unknown>, headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', `/v1/reservations/${encodeURIComponent(id)}/extend`, { apiKey: key, body, ...(headers ? { headers } : {}) });
}

export async function getReservation(srv: TestServer, key: string, id: string): Promise<CallResult> {
  return srv.call('GET', `/v1/reservations/${encodeURIComponent(id)}`, { apiKey: key });
}

export async function decide(srv: TestServer, key: string, body: Record<string, unknown>, headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', '/v1/decide', { apiKey: key, body, ...(headers ? { headers } : {}) });
}

export async function postEvent(srv: TestServer, key: string, body: Record<string, unknown>, headers?: Record<string, string>): Promise<CallResult> {
  return srv.call('POST', '/v1/events', { apiKey: key, body, ...(headers ? { headers } : {}) });
}

export function qs(params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

export async function listReservations(srv: TestServer, key: string, params: Record<string, string | number | boolean | undefined> = {}): Promise<CallResult> {
  return srv.call('GET', `/v1/reservations${qs(params)}`, { apiKey: key });
}

/** Subject-filter query parameters for a canonical scope path ("tenant:a/workspace:b" -> {tenant:a, workspace:b}). */
export function scopeFilter(scope: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const seg of scope.split('/')) {
    const i = seg.indexOf(':');
    out[seg.slice(0, i)] = seg.slice(i + 1);
  }
  return out;
}

/**
 * Balances visible for a subject filter, keyed by `${scope_path}|${unit}`, following every cursor.
 */
export async function balances(srv: TestServer, key: string, filter: Record<string, string>): Promise<Map<string, Json>> {
  const out = new Map<string, Json>();
  let cursor: string | undefined;
  for (let page = 0; page < 50; page++) {
    const res = await srv.call('GET', `/v1/balances${qs({ ...filter, limit: 200, cursor })}`, { apiKey: key });
    const body = expectStatus(res, 200);
    for (const b of body.balances as Json[]) out.set(`${b.scope_path}|${b.remaining.unit}`, b);
    if (!body.next_cursor) break;
    cursor = body.next_cursor;
  }
  return out;
}

/** The Balance for one scope/unit, queried with the scope's own subject filter (asserts it exists). */
export async function balanceOf(srv: TestServer, ctx: TenantCtx, scope: string, unit: Unit = 'TOKENS'): Promise<Json> {
  const map = await balances(srv, ctx.key, scopeFilter(scope));
  const b = map.get(`${scope}|${unit}`);
  assert.ok(b, `no balance for ${scope} ${unit}; have: ${[...map.keys()].join(', ')}`);
  return b;
}

/** Shorthand: {remaining, reserved, spent, debt} amounts of a Balance (missing = 0). */
export function amounts(b: Json): { remaining: number; reserved: number; spent: number; debt: number; allocated: number; over: boolean } {
  return {
    remaining: b.remaining.amount,
    reserved: b.reserved?.amount ?? 0,
    spent: b.spent?.amount ?? 0,
    debt: b.debt?.amount ?? 0,
    allocated: b.allocated?.amount ?? 0,
    over: b.is_over_limit === true,
  };
}

/** Everything of a JSON body except the listed keys (for replay comparisons). */
export function without(body: Json, ...keys: string[]): Json {
  const copy = { ...body };
  for (const k of keys) delete copy[k];
  return copy;
}
