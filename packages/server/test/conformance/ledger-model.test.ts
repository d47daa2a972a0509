/**
 * Model-based property test (fast-check, fixed seed): random sequences of reserve / commit /
 * release / event against a two-level budget tree are mirrored by a small in-memory model of
 * the protocol's ledger rules, and every Balance the server reports must equal the model.
 * Covers hierarchical enforcement, the REJECT and ALLOW_IF_AVAILABLE overage rules, capping and
 * is_over_limit blocking, and the ledger invariant across many states.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import {
  amounts,
  balanceOf,
  commit,
  commitBody,
  eventBody,
  expectError,
  expectStatus,
  newTenant,
  postEvent,
  release,
  reserve,
  reserveBody,
  type TenantCtx,
} from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

type Policy = 'REJECT' | 'ALLOW_IF_AVAILABLE';
type Where = 'w' | 'v'; // workspace:w has its own budget (plus root); workspace:v only the root

type Cmd =
  | { op: 'reserve'; where: Where; amount: number; policy: Policy }
  | { op: 'commit'; pick: number; actual: number }
  | { op: 'release'; pick: number }
  | { op: 'event'; where: Where; amount: number; policy: Policy };

interface ModelBudget {
  allocated: number;
  reserved: number;
  spent: number;
  over: boolean;
}

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('reserve' as const), where: fc.constantFrom<Where>('w', 'v'), amount: fc.integer({ min: 0, max: 400 }), policy: fc.constantFrom<Policy>('REJECT', 'ALLOW_IF_AVAILABLE') }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('commit' as const), pick: fc.nat(20), actual: fc.integer({ min: 0, max: 500 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('release' as const), pick: fc.nat(20) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('event' as const), where: fc.constantFrom<Where>('w', 'v'), amount: fc.integer({ min: 0, max: 300 }), policy: fc.constantFrom<Policy>('REJECT', 'ALLOW_IF_AVAILABLE') }) },
);

const remainingOf = (b: ModelBudget): number => b.allocated - b.spent - b.reserved;

async function runSequence(cmds: Cmd[]): Promise<void> {
  const ctx: TenantCtx = await newTenant(srv, [
    { at: '', allocated: 1000 },
    { at: 'workspace:w', allocated: 400 },
  ]);
  const model: Record<'root' | 'w', ModelBudget> = {
    root: { allocated: 1000, reserved: 0, spent: 0, over: false },
    w: { allocated: 400, reserved: 0, spent: 0, over: false },
  };
  const budgetsFor = (where: Where): ModelBudget[] => (where === 'w' ? [model.root, model.w] : [model.root]);
  const active: Array<{ id: string; where: Where; est: number; policy: Policy }> = [];

  for (const [i, cmd] of cmds.entries()) {
    const label = `step ${i} ${JSON.stringify(cmd)}`;
    if (cmd.op === 'reserve') {
      const bs = budgetsFor(cmd.where);
      const res = await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant, workspace: cmd.where }, cmd.amount, 'TOKENS', { overage_policy: cmd.policy }));
      if (bs.some((b) => b.over)) expectError(res, 409, 'OVERDRAFT_LIMIT_EXCEEDED');
      else if (bs.some((b) => remainingOf(b) < cmd.amount)) expectError(res, 409, 'BUDGET_EXCEEDED');
      else {
        const body = expectStatus(res, 200);
        for (const b of bs) b.reserved += cmd.amount;
        active.push({ id: body.reservation_id, where: cmd.where, est: cmd.amount, policy: cmd.policy });
      }
    } else if (cmd.op === 'commit' || cmd.op === 'release') {
      if (active.length === 0) continue;
      const idx = cmd.pick % active.length;
      const r = active[idx]!;
      const bs = budgetsFor(r.where);
      if (cmd.op === 'release') {
        const body = expectStatus(await release(srv, ctx.key, r.id), 200);
        assert.equal(body.released.amount, r.est, label);
        for (const b of bs) b.reserved -= r.est;
        active.splice(idx, 1);
        continue;
      }
      const res = await commit(srv, ctx.key, r.id, commitBody(cmd.actual));
      const delta = cmd.actual - r.est;
      if (delta > 0 && r.policy === 'REJECT') {
        expectError(res, 409, 'BUDGET_EXCEEDED');
        continue;
      }
      const body = expectStatus(res, 200);
      let charged = cmd.actual;
      if (delta > 0) {
        const capped = Math.min(delta, ...bs.map((b) => Math.max(remainingOf(b), 0)));
        charged = r.est + capped;
        for (const b of bs) if (capped < delta && remainingOf(b) < delta) b.over = true;
      }
      assert.equal(body.charged.amount, charged, `${label}: charged`);
      for (const b of bs) {
        b.reserved -= r.est;
        b.spent += charged;
      }
      active.splice(idx, 1);
    } else {
      const bs = budgetsFor(cmd.where);
      // Whether events honour is_over_limit is unspecified; do not probe it.
      if (bs.some((b) => b.over)) continue;
      const res = await postEvent(srv, ctx.key, eventBody({ tenant: ctx.tenant, workspace: cmd.where }, cmd.amount, 'TOKENS', { overage_policy: cmd.policy }));
      const short = bs.some((b) => remainingOf(b) < cmd.amount);
      if (cmd.policy === 'REJECT' && short) {
        expectError(res, 409, 'BUDGET_EXCEEDED');
        continue;
      }
      const body = expectStatus(res, 201);
      const capped = Math.min(cmd.amount, ...bs.map((b) => Math.max(remainingOf(b), 0)));
      if (capped < cmd.amount) {
        assert.equal(body.charged?.amount, capped, `${label}: event charged`);
        for (const b of bs) if (remainingOf(b) < cmd.amount) b.over = true;
      }
      for (const b of bs) b.spent += capped;
    }
    for (const [name, scope] of [
      ['root', ctx.scope()],
      ['w', ctx.scope('workspace:w')],
    ] as const) {
      const got = amounts(await balanceOf(srv, ctx, scope));
      const m = model[name];
      assert.deepEqual(
        { remaining: got.remaining, reserved: got.reserved, spent: got.spent, debt: got.debt, over: got.over },
        { remaining: remainingOf(m), reserved: m.reserved, spent: m.spent, debt: 0, over: m.over },
        `${label}: ${scope}`,
      );
    }
  }
}

test('random reserve/commit/release/event sequences match the ledger model', async () => {
  const seed = Number(process.env.FC_SEED ?? 20240611);
  await fc.assert(
    fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 14 }), async (cmds) => {
      await runSequence(cmds);
    }),
    { numRuns: 15, seed, endOnFailure: true },
  );
});
