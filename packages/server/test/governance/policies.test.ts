/**
 * Policies: create, list, update, and what they govern at reserve time. The highest-priority
 * ACTIVE policy whose scope_pattern matches the reservation's scope path, inside its effective
 * window, applies alone: caps -> ALLOW_WITH_CAPS (reserve, dry-run, decide), its
 * commit_overage_policy is the default (request > policy > budget > tenant), and its
 * reservation_ttl_override sets the default TTL, the max TTL and max_extensions.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import {
  commit,
  commitBody,
  decide,
  decideBody,
  expectError,
  expectStatus,
  extend,
  extendBody,
  qs,
  reserve,
  reserveBody,
  reserveOk,
} from '../helpers/runtime.js';
import { adminCall, createBudget, createKey, createTenant, events, iso, pageAll } from './support.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

async function tenantWithBudget(budgetExtra: Record<string, unknown> = {}, tenantExtra: Record<string, unknown> = {}) {
  const t = await createTenant(srv, tenantExtra);
  await createBudget(srv, t, '', 1_000_000, budgetExtra);
  const key = (await createKey(srv, t)).secret;
  return { t, key };
}

const policy = async (t: string, body: Record<string, unknown>) =>
  expectStatus(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: t, name: `p-${Math.random()}`, ...body }), 201);

describe('createPolicy / listPolicies / updatePolicy', () => {
  test('create returns the Policy shape (no tenant_id) and emits policy.created; duplicate name is 409', async () => {
    const { t } = await tenantWithBudget();
    const p = expectStatus(
      await adminCall(srv, 'POST', '/v1/admin/policies', {
        tenant_id: t,
        name: 'eng',
        description: 'engineering defaults',
        scope_pattern: `tenant:${t}/Workspace:Eng/*`.replace('Workspace', 'workspace'),
        priority: 5,
        caps: { max_tokens: 100 },
        rate_limits: { max_reservations_per_minute: 60 },
      }),
      201,
    );
    assert.match(p.policy_id, /^pol_/);
    assert.equal(p.scope_pattern, `tenant:${t}/workspace:eng/*`);
    assert.deepEqual([p.status, p.priority, p.tenant_id], ['ACTIVE', 5, undefined]);
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: t, name: 'eng', scope_pattern: `tenant:${t}` }), 409, 'DUPLICATE_RESOURCE');
    const [e] = await events(srv, { tenant_id: t, event_type: 'policy.created' });
    assert.deepEqual(e.data, { policy_id: p.policy_id, name: 'eng', scope_pattern: p.scope_pattern, changed_fields: [] });
    assert.equal(e.scope, p.scope_pattern);
  });

  test('invalid patterns, windows and TTL overrides are 400; admin needs tenant_id, a tenant key must not send it', async () => {
    const { t, key } = await tenantWithBudget();
    for (const scope_pattern of ['workspace:x', `tenant:${t}/*/agent:a`, `tenant:${t}/agent:*/toolset:x`, 'tenant:other', `tenant:${t}/agent:a/workspace:b`, '*']) {
      expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: t, name: 'x', scope_pattern }), 400, 'INVALID_REQUEST');
    }
    const base = { tenant_id: t, name: 'w', scope_pattern: `tenant:${t}` };
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { ...base, effective_from: iso(2000), effective_until: iso(1000) }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { ...base, reservation_ttl_override: { default_ttl_ms: 9000, max_ttl_ms: 5000 } }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { ...base, caps: { max_tokens: -1 } }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { name: 'w', scope_pattern: `tenant:${t}` }), 400, 'INVALID_REQUEST');
    expectError(await srv.call('POST', '/v1/admin/policies', { apiKey: key, body: base }), 400, 'INVALID_REQUEST');
    const own = expectStatus(await srv.call('POST', '/v1/admin/policies', { apiKey: key, body: { name: 'mine', scope_pattern: `tenant:${t}/agent:*` } }), 201);
    assert.equal(own.scope_pattern, `tenant:${t}/agent:*`);
    expectError(await adminCall(srv, 'POST', '/v1/admin/policies', { tenant_id: 'no-such-tenant', name: 'x', scope_pattern: 'tenant:no-such-tenant' }), 400, 'INVALID_REQUEST');
  });

  test('list: admin needs tenant_id; filters by status and exact pattern; tenant keys see their own', async () => {
    const { t, key } = await tenantWithBudget();
    const a = await policy(t, { scope_pattern: `tenant:${t}` });
    const b = await policy(t, { scope_pattern: `tenant:${t}/*` });
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/policies/${b.policy_id}`, { status: 'DISABLED' }), 200);
    expectError(await adminCall(srv, 'GET', '/v1/admin/policies'), 400, 'INVALID_REQUEST');
    const all = await pageAll(srv, '/v1/admin/policies', 'policies', { tenant_id: t, limit: 1 });
    assert.deepEqual(all.map((p) => p.policy_id).sort(), [a.policy_id, b.policy_id].sort());
    assert.deepEqual((await pageAll(srv, '/v1/admin/policies', 'policies', { tenant_id: t, status: 'DISABLED' })).map((p) => p.policy_id), [b.policy_id]);
    assert.deepEqual((await pageAll(srv, '/v1/admin/policies', 'policies', { tenant_id: t, scope_pattern: `tenant:${t}` })).map((p) => p.policy_id), [a.policy_id]);
    const mine = await pageAll(srv, '/v1/admin/policies', 'policies', { tenant_id: 'ignored' }, { apiKey: key });
    assert.equal(mine.length, 2);
  });

  test('update: 404 unknown, 403 another tenant\'s policy, changed_fields lists real changes only', async () => {
    const { t, key } = await tenantWithBudget();
    const { t: other } = await tenantWithBudget();
    const p = await policy(t, { scope_pattern: `tenant:${t}`, priority: 1 });
    const theirs = await policy(other, { scope_pattern: `tenant:${other}` });
    expectError(await adminCall(srv, 'PATCH', '/v1/admin/policies/pol_missing', { priority: 2 }), 404, 'NOT_FOUND');
    expectError(await srv.call('PATCH', `/v1/admin/policies/${theirs.policy_id}`, { apiKey: key, body: { priority: 2 } }), 403, 'FORBIDDEN');
    const u = expectStatus(await srv.call('PATCH', `/v1/admin/policies/${p.policy_id}`, { apiKey: key, body: { priority: 1, caps: { max_steps_remaining: 3 } } }), 200);
    assert.deepEqual(u.caps, { max_steps_remaining: 3 });
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/policies/${p.policy_id}`, { priority: 1 }), 200);
    const evs = await events(srv, { tenant_id: t, event_type: 'policy.updated' });
    assert.equal(evs.length, 1);
    assert.deepEqual(evs[0].data.changed_fields, ['caps']);
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/policies/${p.policy_id}`, { scope_pattern: `tenant:${t}/*` }), 400, 'INVALID_REQUEST');
    expectError(await adminCall(srv, 'PATCH', `/v1/admin/policies/${p.policy_id}`, { effective_from: iso(Date.now() + 10_000), effective_until: iso(Date.now()) }), 400, 'INVALID_REQUEST');
  });
});

describe('policies at reserve time', () => {
  test('caps: ALLOW_WITH_CAPS with the caps on reserve, dry-run and decide; absent without a match', async () => {
    const { t, key } = await tenantWithBudget();
    const caps = { max_tokens: 256, tool_allowlist: ['search'], cooldown_ms: 100 };
    await policy(t, { scope_pattern: `tenant:${t}/agent:*`, caps });
    const subject = { tenant: t, agent: 'bot' };
    const r = expectStatus(await reserve(srv, key, reserveBody(subject, 1)), 200);
    assert.deepEqual([r.decision, r.caps], ['ALLOW_WITH_CAPS', caps]);
    const dry = expectStatus(await reserve(srv, key, reserveBody(subject, 1, 'TOKENS', { dry_run: true })), 200);
    assert.deepEqual([dry.decision, dry.caps], ['ALLOW_WITH_CAPS', caps]);
    const d = expectStatus(await decide(srv, key, decideBody(subject, 1)), 200);
    assert.deepEqual([d.decision, d.caps], ['ALLOW_WITH_CAPS', caps]);
    // Patterns match level by level: workspace in between is another path.
    const other = expectStatus(await reserve(srv, key, reserveBody({ tenant: t, workspace: 'w', agent: 'bot' }, 1)), 200);
    assert.deepEqual([other.decision, other.caps], ['ALLOW', undefined]);
    const root = expectStatus(await decide(srv, key, decideBody({ tenant: t }, 1)), 200);
    assert.equal(root.decision, 'ALLOW');
    // Denials stay denials: caps never rescue a budget that cannot pay.
    const deny = expectStatus(await decide(srv, key, decideBody(subject, 10_000_000)), 200);
    assert.deepEqual([deny.decision, deny.caps], ['DENY', undefined]);
  });

  test('the highest priority applies alone (no merging); DISABLED and out-of-window policies are ignored', async () => {
    const { t, key } = await tenantWithBudget();
    const low = await policy(t, { scope_pattern: `tenant:${t}/*`, priority: 1, caps: { max_tokens: 1 }, commit_overage_policy: 'REJECT' });
    const high = await policy(t, { scope_pattern: `tenant:${t}/app:*`, priority: 9, caps: { max_steps_remaining: 2 } });
    await policy(t, { scope_pattern: `tenant:${t}/app:*`, priority: 50, caps: { max_tokens: 3 }, effective_from: iso(Date.now() + 3_600_000) });
    await policy(t, { scope_pattern: `tenant:${t}/app:*`, priority: 40, caps: { max_tokens: 4 }, effective_until: iso(Date.now() - 1000) });
    const subject = { tenant: t, app: 'a' };
    const r = expectStatus(await reserve(srv, key, reserveBody(subject, 10)), 200);
    assert.deepEqual(r.caps, { max_steps_remaining: 2 });
    // The winner sets no overage policy and nothing is merged from the loser: the default stays ALLOW_IF_AVAILABLE.
    expectStatus(await commit(srv, key, r.reservation_id, commitBody(11)), 200);
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/policies/${high.policy_id}`, { status: 'DISABLED' }), 200);
    const r2 = expectStatus(await reserve(srv, key, reserveBody(subject, 10)), 200);
    assert.deepEqual(r2.caps, { max_tokens: 1 });
    expectError(await commit(srv, key, r2.reservation_id, commitBody(11)), 409, 'BUDGET_EXCEEDED');
    expectStatus(await adminCall(srv, 'PATCH', `/v1/admin/policies/${low.policy_id}`, { status: 'DISABLED' }), 200);
    assert.equal(expectStatus(await decide(srv, key, decideBody(subject, 1)), 200).decision, 'ALLOW');
  });

  test('overage precedence: request > policy > budget > tenant default', async () => {
    const { t, key } = await tenantWithBudget({ commit_overage_policy: 'REJECT', overdraft_limit: { unit: 'TOKENS', amount: 1000 } }, { default_commit_overage_policy: 'ALLOW_IF_AVAILABLE' });
    const over = async (subject: Record<string, string>, extra: Record<string, unknown> = {}) => {
      const r = await reserveOk(srv, key, reserveBody(subject, 10, 'TOKENS', extra));
      return commit(srv, key, r.reservation_id, commitBody(12));
    };
    // The leaf-most budget (the tenant root here) says REJECT over the tenant default.
    expectError(await over({ tenant: t }), 409, 'BUDGET_EXCEEDED');
    // A policy overrides the budget...
    await policy(t, { scope_pattern: `tenant:${t}/agent:*`, commit_overage_policy: 'ALLOW_WITH_OVERDRAFT' });
    expectStatus(await over({ tenant: t, agent: 'a' }), 200);
    // ...and the request overrides the policy.
    expectError(await over({ tenant: t, agent: 'a' }, { overage_policy: 'REJECT' }), 409, 'BUDGET_EXCEEDED');
    // Without policy or budget setting, the tenant default applies.
    const t2 = await createTenant(srv, { default_commit_overage_policy: 'REJECT' });
    await createBudget(srv, t2, '', 100);
    const k2 = (await createKey(srv, t2)).secret;
    const r = await reserveOk(srv, k2, reserveBody({ tenant: t2 }, 10));
    expectError(await commit(srv, k2, r.reservation_id, commitBody(11)), 409, 'BUDGET_EXCEEDED');
  });

  test('reservation_ttl_override: default TTL, max TTL cap and max_extensions', async () => {
    const { t, key } = await tenantWithBudget({}, { default_reservation_ttl_ms: 60_000 });
    await policy(t, { scope_pattern: `tenant:${t}/workflow:*`, reservation_ttl_override: { default_ttl_ms: 2000, max_ttl_ms: 3000, max_extensions: 1 } });
    const subject = { tenant: t, workflow: 'wf' };
    const before = Date.now();
    const a = await reserveOk(srv, key, reserveBody(subject, 1));
    assert.ok(a.expires_at_ms - before <= 2000 + 50, `default TTL from the policy (${a.expires_at_ms - before})`);
    const b = await reserveOk(srv, key, reserveBody(subject, 1, 'TOKENS', { ttl_ms: 600_000 }));
    assert.ok(b.expires_at_ms - before <= 3000 + 50, 'requests above max_ttl_ms are capped');
    expectStatus(await extend(srv, key, b.reservation_id, extendBody(100)), 200);
    expectError(await extend(srv, key, b.reservation_id, extendBody(100)), 409, 'MAX_EXTENSIONS_EXCEEDED');
    // Outside the pattern the tenant defaults apply.
    const c = await reserveOk(srv, key, reserveBody({ tenant: t }, 1));
    assert.ok(c.expires_at_ms - before >= 59_000);
  });

  test('a policy of one tenant never governs another tenant', async () => {
    const { t } = await tenantWithBudget();
    const { t: other, key } = await tenantWithBudget();
    await policy(t, { scope_pattern: `tenant:${t}/*`, caps: { max_tokens: 1 } });
    const r = expectStatus(await decide(srv, key, decideBody({ tenant: other, app: 'x' }, 1)), 200);
    assert.equal(r.decision, 'ALLOW');
    const list = expectStatus(await adminCall(srv, 'GET', `/v1/admin/policies${qs({ tenant_id: other })}`), 200);
    assert.equal(list.policies.length, 0);
  });
});
