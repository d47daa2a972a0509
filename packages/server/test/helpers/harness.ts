/**
 * HTTP test harness: starts a real server on a random port with a fresh data dir and a
 * known admin key, and exposes a small client whose every response is checked against
 * the OpenAPI documents (body schema, mandatory headers, ErrorResponse.trace_id echo and
 * the Balance ledger invariant).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { resolveOperation, truncate, validateResponse, validateResponseHeaders } from './spec.js';
import { openTestBackend } from '../backends/backend.js';

// Response bodies are arbitrary JSON; tests index into them freely after asserting on status.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export const ADMIN_KEY = 'test-admin-key-0123456789';

/** Shape of packages/server/src/server.ts (kept structural so this file compiles on its own). */
export interface StartedServer {
  url: string;
  port: number;
  adminKey: string | undefined;
  close(): Promise<void>;
}
interface ServerModule {
  startServer(options?: { config?: Record<string, unknown>; logger?: boolean }): Promise<StartedServer>;
}

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface CallOptions {
  /** JSON body (serialised with JSON.stringify). */
  body?: unknown;
  /** Raw request body, sent verbatim (for malformed-JSON tests). */
  rawBody?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Tenant API key, sent as X-Cycles-API-Key. */
  apiKey?: string;
  /** true = the harness admin key; a string = that value; sent as X-Admin-API-Key. */
  admin?: boolean | string;
  /**
   * Skip body-schema validation (for deliberately weird requests such as unknown routes).
   * The mandatory response headers (X-Cycles-Trace-Id, X-Request-Id) are still checked
   * unless `skipHeaderCheck` is also set.
   */
  skipSpec?: boolean;
  skipHeaderCheck?: boolean;
}

export interface CallResult {
  status: number;
  headers: Headers;
  body: Json;
  text: string;
  /** Convenience accessors. */
  traceId: string | null;
  requestId: string | null;
}

export interface BudgetSpec {
  scope: string;
  unit: string;
  allocated: number;
  overdraft_limit?: number;
  commit_overage_policy?: 'REJECT' | 'ALLOW_IF_AVAILABLE' | 'ALLOW_WITH_OVERDRAFT';
}

export interface ProvisionOptions {
  name?: string;
  budgets?: BudgetSpec[];
  permissions?: string[];
  /** Extra TenantCreateRequest fields (e.g. max_reservation_extensions). */
  tenant?: Record<string, unknown>;
}

export type FundOperation = 'CREDIT' | 'DEBIT' | 'RESET' | 'RESET_SPENT' | 'REPAY_DEBT';

export interface TestServer {
  url: string;
  adminKey: string;
  dataDir: string;
  call(method: Method, path: string, opts?: CallOptions): Promise<CallResult>;
  /** Creates the tenant, one API key and the budgets; returns the key secret. */
  provisionTenant(tenantId: string, opts?: ProvisionOptions): Promise<string>;
  createApiKey(tenantId: string, permissions?: string[]): Promise<string>;
  createBudget(tenantId: string, budget: BudgetSpec): Promise<Json>;
  fund(tenantId: string, scope: string, unit: string, operation: FundOperation, amount: number): Promise<Json>;
  close(): Promise<void>;
}

/** Random lower-case id, safe for tenant ids (^[a-z0-9-]+$) and scope segments. */
export function uid(prefix = 't'): string {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

/** Random idempotency key. */
export function idem(prefix = 'idem'): string {
  return `${prefix}_${crypto.randomUUID()}`;
}

/**
 * Defaults used by every test server; tests may override any field. The store is chosen by
 * CYCLES_TEST_STORE through test/backends/backend.ts (an isolated slice per server), whose
 * config is applied over these defaults.
 */
export function defaultConfig(dataDir: string): Record<string, unknown> {
  return {
    port: 0,
    host: '127.0.0.1',
    store: 'sqlite',
    dataDir,
    adminApiKey: ADMIN_KEY,
    logLevel: 'silent',
  };
}

const SERVER_MODULE = new URL('../../src/server.js', import.meta.url).href;

export async function startTestServer(config: Record<string, unknown> = {}): Promise<TestServer> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'cycles-test-'));
  const mod = (await import(SERVER_MODULE)) as ServerModule;
  // The store under test (CYCLES_TEST_STORE): an isolated slice of it per server.
  const backend = await openTestBackend();
  const server = await mod
    .startServer({ config: { ...defaultConfig(dataDir), ...backend.config, ...config }, logger: false })
    .catch(async (e: unknown) => {
      await backend.cleanup();
      throw e;
    });
  const adminKey = (config.adminApiKey as string | undefined) ?? ADMIN_KEY;
  const base = server.url.replace(/\/$/, '');

  async function call(method: Method, urlPath: string, opts: CallOptions = {}): Promise<CallResult> {
    const headers: Record<string, string> = { accept: 'application/json' };
    let payload: string | undefined;
    if (opts.rawBody !== undefined) {
      payload = opts.rawBody;
      headers['content-type'] = 'application/json';
    } else if (opts.body !== undefined) {
      payload = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    if (opts.apiKey !== undefined) headers['x-cycles-api-key'] = opts.apiKey;
    if (opts.admin !== undefined && opts.admin !== false) {
      headers['x-admin-api-key'] = opts.admin === true ? adminKey : opts.admin;
    }
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;

    const res = await fetch(base + urlPath, { method, headers, body: payload });
    const text = await res.text();
    let body: Json = undefined;
    const problems: string[] = [];
    if (text.length > 0) {
      try {
        body = JSON.parse(text);
      } catch {
        problems.push(`response body is not JSON: ${truncate(text, 300)}`);
      }
    }
    if (!opts.skipHeaderCheck) problems.push(...validateResponseHeaders(method, urlPath, res.status, res.headers));
    if (!opts.skipSpec) {
      if (body !== undefined) {
        const ct = res.headers.get('content-type') ?? '';
        if (!ct.includes('application/json')) problems.push(`content-type is "${ct}", expected application/json`);
      }
      problems.push(...validateResponse(method, urlPath, res.status, body));
      problems.push(...checkErrorTrace(res, body));
      problems.push(...checkLedgerInvariants(body));
      problems.push(...checkEvidenceRefs(body));
      const op = resolveOperation(method, urlPath);
      if (op?.document === 'runtime' && res.status !== 429 && res.headers.get('retry-after') !== null) {
        problems.push(`Retry-After is only valid on 429 LIMIT_EXCEEDED, got it on ${res.status}`);
      }
    }
    if (problems.length > 0) {
      assert.fail(
        `Spec violation in response to ${method} ${urlPath} -> ${res.status}:\n  - ${problems.join('\n  - ')}\n` +
          `  request body: ${truncate(payload, 600)}\n  response body: ${truncate(text)}`,
      );
    }
    return {
      status: res.status,
      headers: res.headers,
      body,
      text,
      traceId: res.headers.get('x-cycles-trace-id'),
      requestId: res.headers.get('x-request-id'),
    };
  }

  async function createApiKey(tenantId: string, permissions?: string[]): Promise<string> {
    const body: Record<string, unknown> = { tenant_id: tenantId, name: `key for ${tenantId}` };
    if (permissions) body.permissions = permissions;
    const res = await call('POST', '/v1/admin/api-keys', { admin: true, body });
    assert.equal(res.status, 201, `createApiKey failed: ${res.text}`);
    assert.equal(typeof res.body.key_secret, 'string');
    return res.body.key_secret as string;
  }

  async function createBudget(tenantId: string, b: BudgetSpec): Promise<Json> {
    const body: Record<string, unknown> = {
      tenant_id: tenantId,
      scope: b.scope,
      unit: b.unit,
      allocated: { unit: b.unit, amount: b.allocated },
    };
    if (b.overdraft_limit !== undefined) body.overdraft_limit = { unit: b.unit, amount: b.overdraft_limit };
    if (b.commit_overage_policy !== undefined) body.commit_overage_policy = b.commit_overage_policy;
    const res = await call('POST', '/v1/admin/budgets', { admin: true, body });
    assert.equal(res.status, 201, `createBudget ${b.scope} ${b.unit} failed: ${res.text}`);
    return res.body;
  }

  async function provisionTenant(tenantId: string, opts: ProvisionOptions = {}): Promise<string> {
    const t = await call('POST', '/v1/admin/tenants', {
      admin: true,
      body: { tenant_id: tenantId, name: opts.name ?? `Tenant ${tenantId}`, ...(opts.tenant ?? {}) },
    });
    assert.ok(t.status === 201 || t.status === 200, `createTenant ${tenantId} failed: ${t.status} ${t.text}`);
    const key = await createApiKey(tenantId, opts.permissions);
    for (const b of opts.budgets ?? []) await createBudget(tenantId, b);
    return key;
  }

  async function fund(tenantId: string, scope: string, unit: string, operation: FundOperation, amount: number): Promise<Json> {
    const q = new URLSearchParams({ scope, unit, tenant_id: tenantId });
    const res = await call('POST', `/v1/admin/budgets/fund?${q.toString()}`, {
      admin: true,
      body: { operation, amount: { unit, amount } },
    });
    assert.equal(res.status, 200, `fund ${operation} ${scope} failed: ${res.text}`);
    return res.body;
  }

  let closed = false;
  return {
    url: base,
    adminKey,
    dataDir,
    call,
    provisionTenant,
    createApiKey,
    createBudget,
    fund,
    async close() {
      if (closed) return;
      closed = true;
      await server.close();
      await backend.cleanup();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every ErrorResponse must carry trace_id equal to X-Cycles-Trace-Id, and request_id equal to X-Request-Id. */
function checkErrorTrace(res: Response, body: Json): string[] {
  if (res.status < 400 || body === null || typeof body !== 'object' || typeof body.error !== 'string') return [];
  const header = res.headers.get('x-cycles-trace-id');
  if (body.trace_id === undefined) return ['ErrorResponse has no trace_id (conformant servers MUST populate it)'];
  const problems: string[] = [];
  if (header !== null && body.trace_id !== header) {
    problems.push(`ErrorResponse.trace_id ${String(body.trace_id)} differs from X-Cycles-Trace-Id ${header}`);
  }
  const requestId = res.headers.get('x-request-id');
  if (requestId !== null && body.request_id !== requestId) {
    problems.push(`ErrorResponse.request_id ${String(body.request_id)} differs from X-Request-Id ${requestId}`);
  }
  return problems;
}

const AMOUNT_FIELDS = ['remaining', 'reserved', 'spent', 'debt', 'allocated', 'overdraft_limit'] as const;

/**
 * Finds every Balance-like object in a response (entries of a `balances` array, or a
 * BudgetLedger with `ledger_id`) and checks unit consistency and
 * remaining = allocated - spent - reserved - debt whenever all five are present.
 */
export function checkLedgerInvariants(body: Json): string[] {
  const problems: string[] = [];
  const visit = (node: Json, where: string): void => {
    if (Array.isArray(node)) {
      node.forEach((n, i) => visit(n, `${where}[${i}]`));
      return;
    }
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node.balances)) node.balances.forEach((b: Json, i: number) => checkBalance(b, `${where}.balances[${i}]`, problems));
    if (typeof node.ledger_id === 'string') checkBalance(node, where, problems);
    for (const [k, v] of Object.entries(node)) if (k !== 'balances' && v && typeof v === 'object') visit(v, `${where}.${k}`);
  };
  visit(body, '$');
  return problems;
}

function checkBalance(b: Json, where: string, problems: string[]): void {
  if (b === null || typeof b !== 'object') return;
  const units = new Set<string>();
  for (const f of AMOUNT_FIELDS) if (b[f] && typeof b[f] === 'object') units.add(String(b[f].unit));
  if (typeof b.unit === 'string') units.add(b.unit);
  if (units.size > 1) problems.push(`${where} (${String(b.scope)}): mixed units ${[...units].join(', ')}`);
  const { remaining, allocated, spent, reserved, debt } = b;
  if (remaining && allocated && spent && reserved && debt) {
    const expected = allocated.amount - spent.amount - reserved.amount - debt.amount;
    if (remaining.amount !== expected) {
      problems.push(
        `${where} (${String(b.scope)}): ledger invariant broken: remaining ${remaining.amount} != allocated ${allocated.amount} - spent ${spent.amount} - reserved ${reserved.amount} - debt ${debt.amount} (= ${expected})`,
      );
    }
  }
}

/**
 * Every cycles_evidence reference (on any response) must point at
 * {server_id}/evidence/{evidence_id}, with server_id already ending in /v1 (never /v1/v1).
 */
export function checkEvidenceRefs(body: Json): string[] {
  const problems: string[] = [];
  const visit = (node: Json, where: string): void => {
    if (Array.isArray(node)) return node.forEach((n, i) => visit(n, `${where}[${i}]`));
    if (node === null || typeof node !== 'object') return;
    for (const [k, v] of Object.entries(node as Record<string, Json>)) {
      if ((k === 'cycles_evidence' || where.endsWith('.evidence')) && v && typeof v === 'object' && 'evidence_id' in v) {
        const url = String(v.cycles_evidence_url);
        if (!url.endsWith(`/evidence/${String(v.evidence_id)}`)) problems.push(`${where}.${k}: cycles_evidence_url ${url} is not {server_id}/evidence/{evidence_id}`);
        if (url.includes('/v1/v1/') || !/\/v1\/evidence\//.test(url)) problems.push(`${where}.${k}: cycles_evidence_url ${url} must contain exactly one /v1 before /evidence`);
      }
      if (v && typeof v === 'object') visit(v, `${where}.${k}`);
    }
  };
  visit(body, '$');
  return problems;
}

/** Polls `fn` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false | null>, timeoutMs = 5000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined | false | null;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
  last = await fn();
  if (last) return last;
  throw new Error(`waitFor: condition not met within ${timeoutMs} ms`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
