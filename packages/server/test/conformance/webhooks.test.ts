/**
 * Outbound webhook deliveries of runtime events (WEBHOOK EVENT GUIDANCE, "Required HTTP headers on
 * webhook delivery", normative for deliveries that are made): X-Cycles-Event-Id/-Type,
 * X-Cycles-Signature (HMAC-SHA256 of the raw body), X-Cycles-Trace-Id and a traceparent with a fresh
 * span id and the inbound trace-flags preserved (01 when the trace did not come from traceparent).
 * The body must be a governance `Event` carrying the originating request_id and trace_id.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestServer, waitFor, type Json, type TestServer } from '../helpers/harness.js';
import { validateComponent } from '../helpers/spec.js';
import { decide, decideBody, expectStatus, newTenant, type TenantCtx } from '../helpers/runtime.js';

interface Delivery {
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: Json;
}

let srv: TestServer;
let receiver: http.Server;
let receiverUrl: string;
const deliveries: Delivery[] = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: Json;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      deliveries.push({ headers: req.headers, raw, body });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  srv = await startTestServer({ webhookAllowedHosts: '127.0.0.1', webhookAllowHttp: true, webhookPollMs: 50 });
});
after(async () => {
  await srv?.close();
  await new Promise<void>((r) => receiver.close(() => r()));
});

async function subscribe(ctx: TenantCtx): Promise<string> {
  const res = await srv.call('POST', '/v1/webhooks', {
    apiKey: ctx.key,
    body: { url: receiverUrl, event_types: ['reservation.denied'] },
  });
  const body = expectStatus(res, 201);
  assert.equal(typeof body.signing_secret, 'string');
  return body.signing_secret as string;
}

async function deliveryFor(traceId: string): Promise<Delivery> {
  return waitFor(async () => deliveries.find((d) => d.headers['x-cycles-trace-id'] === traceId), 8000);
}

function checkDelivery(d: Delivery, secret: string, traceId: string, flags: string, requestId: string | null, inboundSpan?: string): void {
  assert.match(String(d.headers['content-type']), /^application\/json/);
  assert.deepEqual(validateComponent('governance', 'Event', d.body), [], 'delivery body is a governance Event');
  assert.equal(d.headers['x-cycles-event-id'], d.body.event_id);
  assert.equal(d.headers['x-cycles-event-type'], 'reservation.denied');
  assert.equal(d.body.event_type, 'reservation.denied');
  const expected = `sha256=${crypto.createHmac('sha256', secret).update(d.raw).digest('hex')}`;
  assert.equal(d.headers['x-cycles-signature'], expected, 'HMAC-SHA256 of the raw body with the signing secret');
  const tp = String(d.headers['traceparent']);
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(tp);
  assert.ok(m, `traceparent ${tp}`);
  assert.equal(m[1], traceId, 'traceparent carries the same trace id');
  assert.notEqual(m[2], '0'.repeat(16));
  if (inboundSpan) assert.notEqual(m[2], inboundSpan, 'span id is fresh, not reused from the inbound request');
  assert.equal(m[3], flags, 'trace-flags');
  assert.equal(d.body.trace_id, traceId);
  assert.equal(d.body.request_id, requestId, 'the event carries the X-Request-Id of the originating request');
  assert.match(String(d.headers['user-agent']), /^\S+\/\S+/, 'User-Agent: {service-name}/{version}');
}

test('delivery headers with an inbound traceparent: flags (00) preserved, span id fresh', async (t) => {
  const ctx = await newTenant(srv, [{ at: '', allocated: 10 }], {
    permissions: ['reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list', 'balances:read', 'webhooks:write', 'webhooks:read'],
  });
  let secret: string;
  try {
    secret = await subscribe(ctx);
  } catch (e) {
    if (/No route/.test(String(e))) return t.skip('tenant webhooks not implemented');
    throw e;
  }
  const traceId = crypto.randomBytes(16).toString('hex');
  const span = crypto.randomBytes(8).toString('hex');
  const res = await decide(srv, ctx.key, decideBody({ tenant: ctx.tenant }, 11), { traceparent: `00-${traceId}-${span}-00` });
  assert.equal(expectStatus(res, 200).decision, 'DENY');
  checkDelivery(await deliveryFor(traceId), secret, traceId, '00', res.requestId, span);
});

test('delivery headers when the trace came from X-Cycles-Trace-Id: flags default to 01', async () => {
  const ctx = await newTenant(srv, [{ at: '', allocated: 10 }], {
    permissions: ['reservations:create', 'balances:read', 'webhooks:write', 'webhooks:read'],
  });
  const secret = await subscribe(ctx);
  const traceId = crypto.randomBytes(16).toString('hex');
  const res = await decide(srv, ctx.key, decideBody({ tenant: ctx.tenant }, 11), { 'X-Cycles-Trace-Id': traceId });
  assert.equal(expectStatus(res, 200).decision, 'DENY');
  checkDelivery(await deliveryFor(traceId), secret, traceId, '01', res.requestId);
});
