/**
 * Lifecycle and edges: SIGTERM drains in-flight requests (the acknowledged one is durable),
 * refuses new connections, stops background work, closes the store and exits 0; CORS for the
 * dashboard origin only; the OpenAPI document of our own API and its docs page.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { ADMIN_KEY, NO_LIMITS, provision, reserveBody, show, sleep, spawnServe, startOps, tempDir } from './support.js';

/** Sends a request whose body arrives in two parts, returning a handle to finish it. */
function partialRequest(port: number, path: string, headers: Record<string, string>, body: string) {
  const socket = net.connect(port, '127.0.0.1');
  let response = '';
  socket.on('data', (d) => (response += d.toString()));
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  const head = [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)].join('\r\n');
  const half = Math.floor(body.length / 2);
  const opened = new Promise<void>((r) => socket.on('connect', () => r()));
  return {
    async start() {
      await opened;
      socket.write(`${head}\r\n\r\n${body.slice(0, half)}`);
    },
    async finish() {
      socket.write(body.slice(half));
      await closed;
      return response;
    },
  };
}

describe('graceful shutdown', () => {
  test('SIGTERM: in-flight request completes and persists, new connections refused, exit 0', async () => {
    const d = tempDir();
    try {
      const srv = await spawnServe(d.dir, { LOG_LEVEL: 'info', CYCLES_SHUTDOWN_TIMEOUT_MS: '20000' });
      const t = await provision(srv.client, [{ at: '', allocated: 1000 }]);
      const port = Number(new URL(srv.url).port);
      const body = JSON.stringify(reserveBody(t.id, 42, { idempotency_key: 'drain-1' }));
      const inflight = partialRequest(port, '/v1/reservations', { 'x-cycles-api-key': t.key }, body);
      await inflight.start();
      await sleep(200); // the request is routed and authenticated, waiting for the rest of its body
      srv.child.kill('SIGTERM');
      await sleep(300);
      await assert.rejects(fetch(`${srv.url}/healthz`, { signal: AbortSignal.timeout(2000) }), 'new connections are refused while draining');
      assert.equal(srv.child.exitCode, null, 'still draining');
      const response = await inflight.finish();
      assert.match(response, /^HTTP\/1\.1 200 /, response);
      const reply = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { decision: string; reservation_id: string };
      assert.equal(reply.decision, 'ALLOW');
      const exit = await srv.exited;
      assert.equal(exit.code, 0, srv.output());
      assert.match(srv.output(), /shutting down/);
      assert.match(srv.output(), /shutdown complete/);
      // The acknowledged reservation survived the shutdown.
      const again = await spawnServe(d.dir);
      try {
        const r = await again.client.get(`/v1/reservations/${reply.reservation_id}`, { key: t.key });
        assert.equal(r.status, 200, show(r));
        assert.equal(r.body.reserved.amount, 42);
        const b = await again.client.get(`/v1/balances?tenant=${t.id}`, { key: t.key });
        assert.equal(b.body.balances[0].reserved.amount, 42);
      } finally {
        await again.kill9();
      }
    } finally {
      d.remove();
    }
  });

  test('while draining, a request arriving on an open connection gets 503 with the protocol envelope', async () => {
    const s = await startOps({ ...NO_LIMITS });
    const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
    const port = Number(new URL(s.url).port);
    const body = JSON.stringify(reserveBody(t.id, 1));
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => socket.on('connect', () => r()));
    let response = '';
    socket.on('data', (d) => (response += d.toString()));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    const head = (len: number) => `POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\nx-cycles-api-key: ${t.key}\r\n\r\n`;
    socket.write(head(Buffer.byteLength(body)) + body.slice(0, 10));
    await sleep(200);
    const closing = s.server.close();
    await sleep(100);
    // The rest of the first request, and a second one pipelined behind it on the same connection.
    socket.write(body.slice(10) + head(Buffer.byteLength(body)) + body);
    await closed;
    await closing;
    const responses = response.split(/(?=HTTP\/1\.1 )/);
    assert.equal(responses.length, 2, response);
    assert.match(responses[0]!, /^HTTP\/1\.1 200 /, 'the in-flight request completes');
    assert.match(responses[1]!, /^HTTP\/1\.1 503 /);
    assert.match(responses[1]!, /connection: close/i);
    assert.match(responses[1]!, /retry-after: 1/i);
    const envelope = JSON.parse(responses[1]!.slice(responses[1]!.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
    assert.equal(envelope.error, 'INTERNAL_ERROR');
    assert.match(envelope.message!, /shutting down/);
    assert.match(envelope.trace_id!, /^[0-9a-f]{32}$/);
    await s.close();
  });

  test('close() stops the sweeper and the store; later calls are refused with 503, not 500', async () => {
    const s = await startOps({ ...NO_LIMITS });
    const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
    await s.server.close();
    await s.server.close(); // idempotent
    await assert.rejects(s.server.store.reserve({} as never), /closed/);
    await assert.rejects(fetch(`${s.url}/healthz`, { signal: AbortSignal.timeout(2000) }));
    assert.ok(t.id);
    await s.close();
  });
});

describe('CORS', () => {
  test('only the configured dashboard origin may call from a browser', async () => {
    const origin = 'https://dashboard.example.com';
    const s = await startOps({ ...NO_LIMITS, corsOrigins: [origin] });
    try {
      const pre = await s.client.call('OPTIONS', '/v1/admin/tenants', {
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-admin-api-key' },
      });
      assert.equal(pre.status, 204, show(pre));
      assert.equal(pre.headers.get('access-control-allow-origin'), origin);
      assert.match(pre.headers.get('access-control-allow-headers') ?? '', /x-admin-api-key/);
      assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
      const get = await s.client.get('/v1/admin/tenants', { admin: true, headers: { origin } });
      assert.equal(get.status, 200);
      assert.equal(get.headers.get('access-control-allow-origin'), origin);
      assert.match(get.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
      const other = await s.client.get('/v1/admin/tenants', { admin: true, headers: { origin: 'https://evil.example' } });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    } finally {
      await s.close();
    }
    const plain = await startOps({ ...NO_LIMITS });
    try {
      const r = await plain.client.get('/healthz', { headers: { origin } });
      assert.equal(r.headers.get('access-control-allow-origin'), null, 'no CORS unless configured');
    } finally {
      await plain.close();
    }
  });
});

describe('OpenAPI', () => {
  test('/openapi.json describes our own routes with security; /docs serves the interactive page', async () => {
    const s = await startOps({ ...NO_LIMITS });
    try {
      const r = await s.client.get('/openapi.json');
      assert.equal(r.status, 200);
      const doc = r.body;
      assert.equal(doc.openapi, '3.1.0');
      assert.deepEqual(Object.keys(doc.components.securitySchemes).sort(), ['AdminKeyAuth', 'ApiKeyAuth']);
      const reserve = doc.paths['/v1/reservations'].post;
      assert.match(reserve.summary, /Reserve/);
      assert.deepEqual(reserve.security, [{ ApiKeyAuth: [] }]);
      assert.ok(reserve.requestBody, 'request schema comes from the route');
      assert.ok(reserve.responses['429'], 'documents throttling');
      assert.deepEqual(doc.paths['/v1/admin/tenants'].post.security, [{ AdminKeyAuth: [] }]);
      assert.deepEqual(doc.paths['/v1/reservations/{reservation_id}/release'].post.security, [{ ApiKeyAuth: [] }, { AdminKeyAuth: [] }]);
      assert.ok(doc.paths['/readyz'].get);
      assert.deepEqual(doc.paths['/readyz'].get.security, []);
      const html = await s.client.get('/docs');
      assert.equal(html.status, 200);
      assert.match(html.text, /swagger/i);
      assert.ok(ADMIN_KEY && !r.text.includes(ADMIN_KEY));
    } finally {
      await s.close();
    }
  });
});
