/**
 * Self-tests of the spec validator and harness checks (no server needed), so a broken
 * validator cannot silently make the conformance suite pass.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveOperation, spec, validateComponent, validateResponse, validateResponseHeaders } from './spec.js';
import { checkLedgerInvariants } from './harness.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const err = (code: string): Record<string, unknown> => ({ error: code, message: 'm', request_id: 'req_1', trace_id: TRACE });

test('every declared response of both documents compiles', () => {
  for (const doc of [spec().runtime, spec().governance]) {
    assert.ok(doc.operations.length > 10, `${doc.name} has operations`);
    for (const op of doc.operations) {
      const concrete = op.template.replace(/\{[^}]+\}/g, 'x1');
      for (const status of Object.keys((op.operation.responses ?? {}) as object)) {
        if (!/^\d{3}$/.test(status)) continue;
        const problems = validateResponse(op.method, concrete, Number(status), {});
        assert.ok(Array.isArray(problems));
        assert.ok(!problems.some((p) => p.startsWith('no operation')), `${op.method} ${concrete} routes`);
      }
    }
  }
});

test('runtime paths route to the runtime document, the rest to governance', () => {
  const cases: Array<[string, string, string, string]> = [
    ['POST', '/v1/decide', 'runtime', 'decide'],
    ['POST', '/v1/reservations', 'runtime', 'createReservation'],
    ['GET', '/v1/reservations?tenant=a&limit=2', 'runtime', 'listReservations'],
    ['GET', '/v1/reservations/rsv_1', 'runtime', 'getReservation'],
    ['POST', '/v1/reservations/rsv_1/commit', 'runtime', 'commitReservation'],
    ['POST', '/v1/reservations/rsv_1/release', 'runtime', 'releaseReservation'],
    ['POST', '/v1/reservations/rsv_1/extend', 'runtime', 'extendReservation'],
    ['GET', '/v1/balances?tenant=a', 'runtime', 'getBalances'],
    ['POST', '/v1/events', 'runtime', 'createEvent'],
    ['GET', '/v1/events', 'governance', 'listTenantEvents'],
    ['POST', '/v1/admin/tenants', 'governance', 'createTenant'],
    ['POST', '/v1/admin/tenants/bulk-action', 'governance', 'bulkActionTenants'],
    ['PATCH', '/v1/admin/tenants/acme', 'governance', 'updateTenant'],
    ['POST', '/v1/admin/budgets/fund?scope=tenant:a&unit=TOKENS', 'governance', 'fundBudget'],
    ['GET', '/v1/auth/introspect', 'governance', 'introspectAuth'],
    ['GET', '/v1/webhooks/whsub_1', 'governance', 'getTenantWebhook'],
  ];
  for (const [method, path, document, operationId] of cases) {
    const op = resolveOperation(method, path);
    assert.ok(op, `${method} ${path} resolves`);
    assert.equal(op.document, document, `${method} ${path}`);
    assert.equal(op.operationId, operationId, `${method} ${path}`);
  }
  assert.equal(resolveOperation('GET', '/v1/nope'), undefined);
  assert.equal(resolveOperation('DELETE', '/v1/reservations'), undefined);
});

test('valid bodies pass and invalid ones are reported', () => {
  assert.deepEqual(
    validateResponse('POST', '/v1/reservations', 200, {
      decision: 'ALLOW',
      reservation_id: 'rsv_1',
      reserved: { unit: 'TOKENS', amount: 5 },
      expires_at_ms: 1,
      remaining_ttl_ms: 0,
      scope_path: 'tenant:a',
      affected_scopes: ['tenant:a'],
    }),
    [],
  );
  assert.deepEqual(validateResponse('POST', '/v1/reservations', 409, err('BUDGET_EXCEEDED')), []);
  assert.deepEqual(validateResponse('POST', '/v1/events', 201, { status: 'APPLIED', event_id: 'e' }), []);
  // 201 is not a declared createReservation status; 200 is not a declared createEvent status.
  assert.equal(validateResponse('POST', '/v1/reservations', 201, { decision: 'ALLOW', affected_scopes: [] }).length, 1);
  assert.equal(validateResponse('POST', '/v1/events', 200, { status: 'APPLIED', event_id: 'e' }).length, 1);
  // additionalProperties:false on ErrorResponse, and the runtime ErrorCode enum.
  assert.ok(validateResponse('POST', '/v1/reservations', 409, { ...err('BUDGET_EXCEEDED'), deny_detail: {} }).length > 0);
  assert.ok(validateResponse('POST', '/v1/reservations', 403, err('INSUFFICIENT_PERMISSIONS')).length > 0);
  assert.deepEqual(validateResponse('POST', '/v1/admin/api-keys', 403, err('INSUFFICIENT_PERMISSIONS')), []);
  // Amount.amount >= 0, SignedAmount may be negative.
  assert.ok(validateResponse('POST', '/v1/reservations/r/commit', 200, { status: 'COMMITTED', charged: { unit: 'TOKENS', amount: -1 } }).length > 0);
  assert.deepEqual(
    validateResponse('GET', '/v1/balances', 200, { balances: [{ scope: 'tenant:a', scope_path: 'tenant:a', remaining: { unit: 'TOKENS', amount: -3 } }] }),
    [],
  );
  // date-time format and int64 are enforced.
  assert.ok(validateResponse('POST', '/v1/admin/tenants', 201, { tenant_id: 'abc', name: 'n', status: 'ACTIVE', created_at: 'later' }).length > 0);
  assert.ok(validateResponse('POST', '/v1/reservations/r/extend', 200, { status: 'ACTIVE', expires_at_ms: 1.5 }).length > 0);
  // A body where the operation declares one is required.
  assert.ok(validateResponse('GET', '/v1/reservations/r', 200, undefined).length > 0);
  assert.ok(validateResponse('GET', '/nope', 404, {}).length > 0);
  // Named component schemas.
  assert.ok(validateComponent('governance', 'Event', {}).length > 0);
  assert.deepEqual(validateComponent('runtime', 'Amount', { unit: 'TOKENS', amount: 1 }), []);
  assert.ok(validateComponent('runtime', 'NoSuchSchema', {}).length > 0);
});

test('mandatory response headers are checked', () => {
  const ok = new Headers({ 'x-cycles-trace-id': TRACE, 'x-request-id': 'req_1' });
  assert.deepEqual(validateResponseHeaders('POST', '/v1/reservations', 200, ok), []);
  assert.equal(validateResponseHeaders('POST', '/v1/reservations', 200, new Headers({ 'x-request-id': 'r' })).length, 1);
  assert.equal(validateResponseHeaders('POST', '/v1/reservations', 200, new Headers({ 'x-cycles-trace-id': TRACE })).length, 1);
  assert.equal(
    validateResponseHeaders('POST', '/v1/reservations', 200, new Headers({ 'x-cycles-trace-id': TRACE.toUpperCase(), 'x-request-id': 'r' })).length,
    1,
  );
  assert.equal(
    validateResponseHeaders('POST', '/v1/reservations', 200, new Headers({ 'x-cycles-trace-id': '0'.repeat(32), 'x-request-id': 'r' })).length,
    1,
  );
  // 429 is allowed on any operation (ERROR SEMANTICS) and must carry Retry-After and X-RateLimit-Reset.
  assert.deepEqual(validateResponse('POST', '/v1/reservations', 429, err('LIMIT_EXCEEDED')), []);
  const ok429 = new Headers({ 'x-cycles-trace-id': TRACE, 'x-request-id': 'r', 'retry-after': '3', 'x-ratelimit-reset': '1700000000' });
  assert.deepEqual(validateResponseHeaders('POST', '/v1/reservations', 429, ok429), []);
  assert.equal(validateResponseHeaders('POST', '/v1/reservations', 429, new Headers({ 'x-cycles-trace-id': TRACE, 'x-request-id': 'r' })).length, 2);
  // Retry-After on a 429 must be delta-seconds.
  const h429 = new Headers({ 'x-cycles-trace-id': TRACE, 'x-request-id': 'r', 'retry-after': 'Wed, 21 Oct 2015 07:28:00 GMT', 'x-ratelimit-reset': '1' });
  assert.ok(validateResponseHeaders('POST', '/v1/reservations/r/extend', 429, h429).length >= 1);
});

test('ledger invariant checker flags broken and mixed-unit balances', () => {
  const amt = (amount: number, unit = 'TOKENS'): Record<string, unknown> => ({ unit, amount });
  const good = { scope: 's', scope_path: 's', remaining: amt(-2), allocated: amt(10), spent: amt(7), reserved: amt(3), debt: amt(2) };
  assert.deepEqual(checkLedgerInvariants({ balances: [good] }), []);
  assert.equal(checkLedgerInvariants({ balances: [{ ...good, remaining: amt(0) }] }).length, 1);
  const mixed = checkLedgerInvariants({ balances: [{ ...good, debt: amt(2, 'USD_MICROCENTS') }] });
  assert.equal(mixed.length, 1);
  assert.match(mixed[0]!, /mixed units/);
  assert.equal(checkLedgerInvariants({ ledger_id: 'l', unit: 'TOKENS', ...good, remaining: amt(5) }).length, 1);
});
