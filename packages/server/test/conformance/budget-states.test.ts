/**
 * Budget status FROZEN on the runtime plane (admin freeze/unfreeze are reference endpoints;
 * the tests skip when they are not implemented).
 * Spec: ErrorCode BUDGET_FROZEN (409), DecisionReasonCode BUDGET_FROZEN; GOV freezeBudget.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type CallResult, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  decide,
  decideBody,
  expectError,
  expectStatus,
  newTenant,
  release,
  reserve,
  reserveBody,
  reserveOk,
  type TenantCtx,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

async function setFrozen(ctx: TenantCtx, scope: string, frozen: boolean): Promise<CallResult> {
  const q = new URLSearchParams({ scope, unit: 'TOKENS' });
  return srv.call('POST', `/v1/admin/budgets/${frozen ? 'freeze' : 'unfreeze'}?${q.toString()}`, { admin: true, body: {}, skipSpec: true });
}

test('a FROZEN budget at any derived scope: reserve 409 BUDGET_FROZEN, dry-run and decide DENY BUDGET_FROZEN; unfreeze restores', async (t) => {
  const ctx = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:prod', allocated: 1000 },
  ]);
  const existing = await reserveOk(srv, ctx.key, reserveBody({ tenant: ctx.tenant, workspace: 'prod' }, 10));
  const f = await setFrozen(ctx, ctx.scope('workspace:prod'), true);
  if (f.status === 404 || f.status === 405) {
    t.skip('freezeBudget not implemented');
    return;
  }
  assert.equal(f.status, 200, f.text);
  const subject = { tenant: ctx.tenant, workspace: 'prod' };
  expectError(await reserve(srv, ctx.key, reserveBody(subject, 1)), 409, 'BUDGET_FROZEN');
  const dry = expectStatus(await reserve(srv, ctx.key, reserveBody(subject, 1, 'TOKENS', { dry_run: true })), 200);
  assert.deepEqual([dry.decision, dry.reason_code], ['DENY', 'BUDGET_FROZEN']);
  const dec = expectStatus(await decide(srv, ctx.key, decideBody(subject, 1)), 200);
  assert.deepEqual([dec.decision, dec.reason_code], ['DENY', 'BUDGET_FROZEN']);
  // A sibling scope governed only by the (active) root is unaffected.
  await reserveOk(srv, ctx.key, reserveBody({ tenant: ctx.tenant, workspace: 'dev' }, 1));
  // Existing reservations can still be released.
  expectStatus(await release(srv, ctx.key, existing.reservation_id), 200);
  assert.equal(amounts(await balanceOf(srv, ctx, ctx.scope('workspace:prod'))).reserved, 0);
  const u = await setFrozen(ctx, ctx.scope('workspace:prod'), false);
  assert.equal(u.status, 200, u.text);
  await reserveOk(srv, ctx.key, reserveBody(subject, 1));
});
