/**
 * CORRELATION AND TRACING (normative, every plane): X-Cycles-Trace-Id on every response,
 * traceparent precedence, malformed headers ignored (never rejected), ErrorResponse.trace_id.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, newTenant, reserve, reserveBody, type TenantCtx } from '../helpers/runtime.js';

let srv: TestServer;
let t: TenantCtx;
before(async () => {
  srv = await startTestServer();
  t = await newTenant(srv, [{ at: '', allocated: 1_000_000 }]);
});
after(async () => {
  await srv?.close();
});

const hex = (bytes: number): string => crypto.randomBytes(bytes).toString('hex');
const traceparent = (traceId: string, spanId = hex(8), version = '00', flags = '01'): string => `${version}-${traceId}-${spanId}-${flags}`;

test('a trace id is generated on success and on errors, and differs between requests', async () => {
  const ok = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1));
  expectStatus(ok, 200);
  const err = await srv.call('POST', '/v1/reservations', { body: reserveBody({ tenant: t.tenant }, 1) });
  expectError(err, 401, 'UNAUTHORIZED');
  assert.match(ok.traceId ?? '', /^[0-9a-f]{32}$/);
  assert.match(err.traceId ?? '', /^[0-9a-f]{32}$/);
  assert.notEqual(ok.traceId, err.traceId);
  assert.ok(ok.requestId && err.requestId && ok.requestId !== err.requestId, 'X-Request-Id is per request');
});

test('every response carries the headers: unknown route (404), malformed JSON (400), admin plane', async () => {
  const unknown = await srv.call('GET', '/v1/definitely-not-a-route', { apiKey: t.key, skipSpec: true });
  assert.equal(unknown.status, 404);
  assert.match(unknown.traceId ?? '', /^[0-9a-f]{32}$/);
  if (unknown.body?.trace_id !== undefined) assert.equal(unknown.body.trace_id, unknown.traceId);
  const bad = await srv.call('POST', '/v1/reservations', { apiKey: t.key, rawBody: '{nope' });
  expectError(bad, 400, 'INVALID_REQUEST');
  const admin = await srv.call('GET', '/v1/auth/introspect', { admin: true });
  assert.equal(admin.status, 200);
  assert.match(admin.traceId ?? '', /^[0-9a-f]{32}$/);
});

test('a valid X-Cycles-Trace-Id is echoed on success and in error bodies', async () => {
  const id = hex(16);
  const ok = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1), { 'X-Cycles-Trace-Id': id });
  expectStatus(ok, 200);
  assert.equal(ok.traceId, id);
  const id2 = hex(16);
  const err = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 10_000_000), { 'X-Cycles-Trace-Id': id2 });
  const body = expectError(err, 409, 'BUDGET_EXCEEDED');
  assert.equal(err.traceId, id2);
  assert.equal(body.trace_id, id2);
});

test('a valid traceparent sets the trace id', async () => {
  const id = hex(16);
  const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1), { traceparent: traceparent(id) });
  expectStatus(res, 200);
  assert.equal(res.traceId, id);
});

test('traceparent wins over a disagreeing valid X-Cycles-Trace-Id', async () => {
  const tp = hex(16);
  const flat = hex(16);
  const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1), { traceparent: traceparent(tp), 'X-Cycles-Trace-Id': flat });
  expectStatus(res, 200);
  assert.equal(res.traceId, tp);
  const err = await srv.call('GET', '/v1/reservations/rsv_missing', { apiKey: t.key, headers: { traceparent: traceparent(tp), 'X-Cycles-Trace-Id': flat } });
  assert.equal(expectError(err, 404, 'NOT_FOUND').trace_id, tp);
});

test('malformed traceparent values are ignored (request succeeds) and fall through to X-Cycles-Trace-Id', async () => {
  const malformed = [
    traceparent('0'.repeat(32)), // all-zero trace id
    traceparent(hex(16), '0'.repeat(16)), // all-zero span id
    traceparent(hex(16), hex(8), 'ff'), // invalid version
    traceparent(hex(16).toUpperCase()), // upper-case hex
    traceparent(hex(15)), // short trace id
    'garbage',
    '',
  ];
  for (const tp of malformed) {
    const flat = hex(16);
    const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1), { traceparent: tp, 'X-Cycles-Trace-Id': flat });
    assert.equal(res.status, 200, `traceparent "${tp}" must not be rejected: ${res.text}`);
    assert.equal(res.traceId, flat, `traceparent "${tp}" must be ignored`);
  }
});

test('malformed X-Cycles-Trace-Id values are ignored and a fresh id is generated', async () => {
  for (const bad of ['0'.repeat(32), hex(16).toUpperCase(), hex(15), `${hex(16)}0`, 'not-hex-at-all-not-hex-at-all-xx']) {
    const res = await reserve(srv, t.key, reserveBody({ tenant: t.tenant }, 1), { 'X-Cycles-Trace-Id': bad });
    assert.equal(res.status, 200, `X-Cycles-Trace-Id "${bad}" must not be rejected: ${res.text}`);
    assert.match(res.traceId ?? '', /^[0-9a-f]{32}$/);
    assert.notEqual(res.traceId, bad);
    assert.notEqual(res.traceId, '0'.repeat(32));
  }
});

test('a malformed traceparent with no flat header yields a generated id; errors still carry it', async () => {
  const res = await srv.call('POST', '/v1/reservations', { apiKey: t.key, body: { nope: true }, headers: { traceparent: '00-xyz-abc-01' } });
  const body = expectError(res, 400, 'INVALID_REQUEST');
  assert.match(body.trace_id, /^[0-9a-f]{32}$/);
  assert.notEqual(body.trace_id, '0'.repeat(32));
});
