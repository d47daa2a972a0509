/**
 * OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, every request exports a server span and
 * every store call a child span, all under the protocol's trace id (X-Cycles-Trace-Id, or the
 * traceparent's trace id, or the one the server generated). A real OTLP/HTTP receiver on
 * loopback collects them. Without the setting no OpenTelemetry module is loaded.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { NO_LIMITS, PACKAGE_DIR, provision, reserveBody, show, startOps } from './support.js';

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
}

const received: Span[] = [];
let receiver: http.Server;
let receiverUrl: string;

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        const doc = JSON.parse(body) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Span[] }> }> };
        for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) received.push(...ss.spans);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const a = receiver.address();
  receiverUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});
after(() => new Promise<void>((r) => receiver.close(() => r())));

const attr = (s: Span, key: string) => s.attributes.find((a) => a.key === key)?.value;

test('request and store spans carry the protocol trace id', async () => {
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
  const s = await startOps({ ...NO_LIMITS, otlpEndpoint: receiverUrl, otelServiceName: 'cycles-test' });
  let viaHeader: string;
  let viaParent: string;
  let generated: string;
  let parentSpan: string;
  try {
    const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
    viaHeader = 'c0ffee'.padEnd(32, '1');
    const r1 = await s.client.post('/v1/reservations', reserveBody(t.id, 5), { key: t.key, headers: { 'x-cycles-trace-id': viaHeader } });
    assert.equal(r1.status, 200, show(r1));
    assert.equal(r1.headers.get('x-cycles-trace-id'), viaHeader);
    viaParent = 'beef'.padEnd(32, '2');
    parentSpan = '1234567890abcdef';
    const r2 = await s.client.get(`/v1/balances?tenant=${t.id}`, { key: t.key, headers: { traceparent: `00-${viaParent}-${parentSpan}-01` } });
    assert.equal(r2.headers.get('x-cycles-trace-id'), viaParent);
    const r3 = await s.client.get('/v1/reservations/rsv_missing', { key: t.key });
    assert.equal(r3.status, 404);
    generated = r3.headers.get('x-cycles-trace-id')!;
  } finally {
    await s.close(); // flushes the exporter
  }
  const byTrace = (id: string) => received.filter((sp) => sp.traceId === id);

  const one = byTrace(viaHeader);
  const server = one.find((sp) => sp.name === 'POST /v1/reservations');
  assert.ok(server, `request span under the X-Cycles-Trace-Id: ${JSON.stringify(received.map((x) => [x.name, x.traceId]))}`);
  assert.equal(server.parentSpanId || undefined, undefined, 'a root span: the id was not taken from a parent');
  assert.equal(attr(server, 'http.response.status_code')?.intValue, 200);
  assert.equal(attr(server, 'http.route')?.stringValue, '/v1/reservations');
  const storeSpans = one.filter((sp) => sp.name.startsWith('store.'));
  assert.ok(storeSpans.some((sp) => sp.name === 'store.reserve'), 'the reserve store call is a span');
  assert.ok(storeSpans.some((sp) => sp.name === 'store.findApiKeyByHash'), 'so is authentication');
  for (const sp of storeSpans) assert.equal(sp.parentSpanId, server.spanId, `${sp.name} is a child of the request span`);

  const two = byTrace(viaParent).find((sp) => sp.name === 'GET /v1/balances');
  assert.ok(two, 'request span joins the inbound traceparent');
  assert.equal(two.parentSpanId, parentSpan);

  assert.ok(byTrace(generated).some((sp) => sp.name === 'GET /v1/reservations/:reservation_id'), 'generated ids are the span ids too');
});

test('without the endpoint the OpenTelemetry SDK and exporter are never loaded', () => {
  const script = [
    "const { startServer } = await import('./src/server.ts');",
    "const { mkdtempSync, rmSync } = await import('node:fs');",
    "const dataDir = mkdtempSync('/tmp/cycles-otel-');",
    "const s = await startServer({ config: { port: 0, host: '127.0.0.1', dataDir, adminApiKey: 'x'.repeat(20) }, logger: false });",
    "await fetch(s.url + '/healthz');",
    "await s.close();",
    'rmSync(dataDir, { recursive: true, force: true });',
    "const { createRequire } = await import('node:module');",
    // prom-client loads the tiny @opentelemetry/api facade (no-op without an SDK); nothing else may load.
    "const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('@opentelemetry') && !k.includes('@opentelemetry/api/'));",
    'console.log(JSON.stringify(loaded));',
  ].join('\n');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: PACKAGE_DIR, encoding: 'utf8', env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: '' } });
  assert.equal(r.status, 0, r.stderr);
  const loaded = JSON.parse(r.stdout.trim().split('\n').pop()!) as string[];
  assert.deepEqual(loaded, [], `loaded: ${loaded.map((p) => path.basename(p)).join(', ')}`);
});
