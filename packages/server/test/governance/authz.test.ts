/**
 * The authorization matrix: every governance endpoint under the admin key, a tenant key with and
 * without the needed permission, another tenant's key, a revoked key, an expired key, and no key.
 * Admin-only endpoints refuse every tenant key with 401 (the admin key is missing); dual-auth
 * endpoints refuse a key without the permission with 403 INSUFFICIENT_PERMISSIONS and another
 * tenant's objects with 403 FORBIDDEN; a revoked or expired key and no key are 401.
 */
import { before, after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { idem, sleep, startTestServer, uid, type CallOptions, type Method, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, qs } from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant, iso } from './support.js';

type Who = 'admin' | 'tenant';
interface Req {
  method: Method;
  path: string;
  body?: unknown;
}
interface Endpoint {
  op: string;
  /** Tenant permission of a dual-auth endpoint; undefined = admin key only. */
  perm?: string;
  /** "any" = any valid tenant key (introspect). */
  dual?: 'any';
  make: (who: Who) => Promise<Req>;
  ok: number;
  /** Status for another tenant's key holding the permission (dual endpoints). */
  foreign?: [number, string] | 'own-rows';
}

let srv: TestServer;
let A: string;
let B: string;
const keys: Record<string, string> = {};
let policyA: string;

before(async () => {
  // This suite fails authentication on purpose, many times: the per-address throttle stays off.
  srv = await startTestServer({ authFailureLimit: 0 });
  A = await createTenant(srv);
  B = await createTenant(srv);
  await createBudget(srv, A, '', 1000);
  await createBudget(srv, B, '', 1000);
  policyA = expectStatus(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: A, name: 'pa', scope_pattern: `tenant:${A}/*` }), 201).policy_id;
  keys.full = (await createKey(srv, A)).secret;
  keys.none = (await createKey(srv, A, { permissions: ['reservations:list'] })).secret;
  keys.other = (await createKey(srv, B)).secret;
  const revoked = await createKey(srv, A);
  expectStatus(await adminCall(srv, 'DELETE', `/v1/admin/api-keys/${revoked.key_id}`), 200);
  keys.revoked = revoked.secret;
  keys.expired = (await createKey(srv, A, { expires_at: iso(Date.now() + 1500) })).secret;
  await sleep(1600);
});
after(async () => {
  await srv?.close();
});

const T = (n: number) => ({ unit: 'TOKENS', amount: n });
const freshBudgetScope = async () => {
  const s = `app:${uid('b')}`;
  await createBudget(srv, A, s, 10);
  return `tenant:${A}/${s}`;
};

const ENDPOINTS: Endpoint[] = [
  { op: 'createTenant', ok: 201, make: async () => ({ method: 'POST', path: '/v1/admin/tenants', body: { tenant_id: uid('m'), name: 'm' } }) },
  { op: 'listTenants', ok: 200, make: async () => ({ method: 'GET', path: '/v1/admin/tenants' }) },
  { op: 'getTenant', ok: 200, make: async () => ({ method: 'GET', path: `/v1/admin/tenants/${A}` }) },
  { op: 'updateTenant', ok: 200, make: async () => ({ method: 'PATCH', path: `/v1/admin/tenants/${A}`, body: { name: uid('n') } }) },
  { op: 'bulkActionTenants', ok: 200, make: async () => ({ method: 'POST', path: '/v1/admin/tenants/bulk-action', body: { filter: { search: uid('none') }, action: 'SUSPEND', idempotency_key: idem() } }) },
  { op: 'updateBudget', ok: 200, make: async () => ({ method: 'PATCH', path: `/v1/admin/budgets${qs({ scope: await freshBudgetScope(), unit: 'TOKENS' })}`, body: { overdraft_limit: T(5) } }) },
  { op: 'freezeBudget', ok: 200, make: async () => ({ method: 'POST', path: `/v1/admin/budgets/freeze${qs({ scope: await freshBudgetScope(), unit: 'TOKENS' })}`, body: {} }) },
  {
    op: 'unfreezeBudget',
    ok: 200,
    make: async () => {
      const scope = await freshBudgetScope();
      expectStatus(await adminCall(srv, 'POST', `/v1/admin/budgets/freeze${qs({ scope, unit: 'TOKENS' })}`, {}), 200);
      return { method: 'POST', path: `/v1/admin/budgets/unfreeze${qs({ scope, unit: 'TOKENS' })}`, body: {} };
    },
  },
  { op: 'bulkActionBudgets', ok: 200, make: async () => ({ method: 'POST', path: '/v1/admin/budgets/bulk-action', body: { filter: { tenant_id: A, search: uid('none') }, action: 'CREDIT', amount: T(1), idempotency_key: idem() } }) },
  { op: 'createApiKey', ok: 201, make: async () => ({ method: 'POST', path: '/v1/admin/api-keys', body: { tenant_id: A, name: 'x' } }) },
  { op: 'listApiKeys', ok: 200, make: async () => ({ method: 'GET', path: '/v1/admin/api-keys' }) },
  { op: 'updateApiKey', ok: 200, make: async () => ({ method: 'PATCH', path: `/v1/admin/api-keys/${(await createKey(srv, A)).key_id}`, body: { name: 'renamed' } }) },
  { op: 'revokeApiKey', ok: 200, make: async () => ({ method: 'DELETE', path: `/v1/admin/api-keys/${(await createKey(srv, A)).key_id}` }) },
  { op: 'validateApiKey', ok: 200, make: async () => ({ method: 'POST', path: '/v1/auth/validate', body: { key_secret: keys.full } }) },
  { op: 'listAuditLogs', ok: 200, make: async () => ({ method: 'GET', path: '/v1/admin/audit/logs' }) },
  { op: 'getAdminOverview', ok: 200, make: async () => ({ method: 'GET', path: '/v1/admin/overview' }) },
  // Dual-auth endpoints.
  {
    op: 'createBudget',
    perm: 'budgets:write',
    ok: 201,
    foreign: [403, 'FORBIDDEN'],
    make: async (who) => ({ method: 'POST', path: '/v1/admin/budgets', body: { ...(who === 'admin' ? { tenant_id: A } : {}), scope: `tenant:${A}/app:${uid('c')}`, unit: 'TOKENS', allocated: T(1) } }),
  },
  { op: 'listBudgets', perm: 'budgets:read', ok: 200, foreign: 'own-rows', make: async () => ({ method: 'GET', path: `/v1/admin/budgets${qs({ tenant_id: A })}` }) },
  { op: 'lookupBudget', perm: 'budgets:read', ok: 200, foreign: [403, 'FORBIDDEN'], make: async () => ({ method: 'GET', path: `/v1/admin/budgets/lookup${qs({ scope: `tenant:${A}`, unit: 'TOKENS' })}` }) },
  {
    op: 'fundBudget',
    perm: 'budgets:write',
    ok: 200,
    foreign: [403, 'FORBIDDEN'],
    make: async (who) => ({ method: 'POST', path: `/v1/admin/budgets/fund${qs({ scope: `tenant:${A}`, unit: 'TOKENS', tenant_id: who === 'admin' ? A : undefined })}`, body: { operation: 'CREDIT', amount: T(1) } }),
  },
  {
    op: 'createPolicy',
    perm: 'policies:write',
    ok: 201,
    foreign: [403, 'FORBIDDEN'],
    make: async (who) => ({ method: 'POST', path: '/v1/admin/policies', body: { ...(who === 'admin' ? { tenant_id: A } : {}), name: uid('p'), scope_pattern: `tenant:${A}` } }),
  },
  { op: 'listPolicies', perm: 'policies:read', ok: 200, foreign: 'own-rows', make: async () => ({ method: 'GET', path: `/v1/admin/policies${qs({ tenant_id: A })}` }) },
  { op: 'updatePolicy', perm: 'policies:write', ok: 200, foreign: [403, 'FORBIDDEN'], make: async () => ({ method: 'PATCH', path: `/v1/admin/policies/${policyA}`, body: { priority: 7 } }) },
  { op: 'introspectAuth', dual: 'any', ok: 200, foreign: 'own-rows', make: async () => ({ method: 'GET', path: '/v1/auth/introspect' }) },
];

async function send(r: Req, who: { admin?: true; apiKey?: string }) {
  const opts: CallOptions = { ...who };
  if (r.body !== undefined) opts.body = r.body;
  return srv.call(r.method, r.path, opts);
}

describe('authorization matrix', () => {
  for (const e of ENDPOINTS) {
    const dual = e.perm !== undefined || e.dual === 'any';
    test(`${e.op}: admin, key with / without permission, another tenant's key, revoked, expired, none`, async () => {
      expectStatus(await send(await e.make('admin'), { admin: true }), e.ok);
      for (const k of ['revoked', 'expired']) expectError(await send(await e.make('tenant'), { apiKey: keys[k]! }), 401, 'UNAUTHORIZED');
      expectError(await send(await e.make('tenant'), {}), 401, 'UNAUTHORIZED');
      if (!dual) {
        for (const k of ['full', 'none', 'other']) {
          const res = expectError(await send(await e.make('tenant'), { apiKey: keys[k]! }), 401, 'UNAUTHORIZED');
          assert.match(res.message, /X-Admin-API-Key/);
        }
        return;
      }
      expectStatus(await send(await e.make('tenant'), { apiKey: keys.full! }), e.ok);
      if (e.perm) {
        const denied = expectError(await send(await e.make('tenant'), { apiKey: keys.none! }), 403, 'INSUFFICIENT_PERMISSIONS');
        assert.match(denied.message, new RegExp(e.perm));
      }
      const foreign = await send(await e.make('tenant'), { apiKey: keys.other! });
      if (e.foreign === 'own-rows') {
        const body = expectStatus(foreign, 200);
        const text = JSON.stringify(body);
        assert.equal(text.includes(`tenant:${A}`) || body.tenant_id === A, false, `another tenant's key sees nothing of ${A}`);
      } else if (e.foreign) {
        expectError(foreign, e.foreign[0], e.foreign[1]);
      }
    });
  }

  test('the admin key is not accepted in place of a tenant key on tenant-only endpoints', async () => {
    expectError(await srv.call('GET', `/v1/balances${qs({ tenant: A })}`, { admin: true }), 401, 'UNAUTHORIZED');
  });

  test('a wrong admin key is 401; admin:write on a tenant key satisfies *:write, admin:read never does', async () => {
    expectError(await srv.call('GET', '/v1/admin/tenants', { admin: 'not-the-admin-key-123' }), 401, 'UNAUTHORIZED');
    const writer = (await createKey(srv, A, { permissions: ['admin:write', 'admin:read'] })).secret;
    const reader = (await createKey(srv, A, { permissions: ['admin:read'] })).secret;
    expectStatus(await srv.call('POST', `/v1/admin/budgets/fund${qs({ scope: `tenant:${A}`, unit: 'TOKENS' })}`, { apiKey: writer, body: { operation: 'CREDIT', amount: T(1) } }), 200);
    expectStatus(await srv.call('GET', `/v1/admin/budgets/lookup${qs({ scope: `tenant:${A}`, unit: 'TOKENS' })}`, { apiKey: reader }), 200);
    expectError(await srv.call('POST', `/v1/admin/budgets/fund${qs({ scope: `tenant:${A}`, unit: 'TOKENS' })}`, { apiKey: reader, body: { operation: 'CREDIT', amount: T(1) } }), 403, 'INSUFFICIENT_PERMISSIONS');
    // Granular admin permissions are not endpoint wildcards.
    const granular = (await createKey(srv, A, { permissions: ['admin:budgets:read'] })).secret;
    expectError(await srv.call('GET', `/v1/admin/budgets/lookup${qs({ scope: `tenant:${A}`, unit: 'TOKENS' })}`, { apiKey: granular }), 403, 'INSUFFICIENT_PERMISSIONS');
  });
});
