/**
 * Structured logs: one JSON line per request with request id, trace id, tenant, route, status and
 * duration; no request or response body and no credential ever logged, even when the request
 * carries them in headers and bodies; LOG_LEVEL filters; secrets are redacted wherever a logged
 * object carries them.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { DEFAULTS } from '../../src/config.js';
import { createLogger, deferredChildLogger } from '../../src/ops/logging.js';
import { ADMIN_KEY, idem, NO_LIMITS, provision, reserveBody, show, startOps } from './support.js';

const parse = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe('request log lines', () => {
  test('exactly one line per request with the correlation fields; never a body or a key', async () => {
    const s = await startOps({ ...NO_LIMITS, logLevel: 'info' });
    try {
      const t = await provision(s.client, [{ at: '', allocated: 1000 }]);
      const from = s.logs().length;
      const traceId = 'a'.repeat(31) + 'b';
      const body = reserveBody(t.id, 7, { metadata: { note: 'body-marker-should-not-be-logged' } });
      const r = await s.client.post('/v1/reservations', body, { key: t.key, headers: { 'x-cycles-trace-id': traceId, authorization: 'Bearer should-not-be-logged' } });
      assert.equal(r.status, 200, show(r));
      const bad = await s.client.post('/v1/reservations', body, { key: 'cyc_live_notavalidkeyAAAAAAAAAAAAAAAAAAAAAA' });
      assert.equal(bad.status, 401);
      const lines = parse(s.logs().slice(from)).filter((l) => l.msg === 'request');
      assert.equal(lines.length, 2, JSON.stringify(lines));
      const [ok, denied] = lines;
      assert.equal(ok!.request_id, r.headers.get('x-request-id'));
      assert.equal(ok!.trace_id, traceId);
      assert.equal(ok!.tenant, t.id);
      assert.equal(ok!.key_id, t.keyId);
      assert.equal(ok!.route, '/v1/reservations');
      assert.equal(ok!.method, 'POST');
      assert.equal(ok!.status, 200);
      assert.equal(typeof ok!.duration_ms, 'number');
      assert.equal(ok!.level, 'info');
      assert.match(String(ok!.time), /^\d{4}-\d\d-\d\dT/);
      assert.equal(denied!.status, 401);
      assert.equal(denied!.error, 'UNAUTHORIZED');
      assert.equal(denied!.tenant, undefined);
      const all = s.logs().join('\n');
      for (const secret of [t.key, ADMIN_KEY, 'should-not-be-logged', 'body-marker-should-not-be-logged', 'cyc_live_notavalidkey']) {
        assert.ok(!all.includes(secret), `log contains ${secret.slice(0, 12)}…`);
      }
    } finally {
      await s.close();
    }
  });

  test('LOG_LEVEL=warn drops the per-request lines; 5xx would still be logged at error', async () => {
    const s = await startOps({ ...NO_LIMITS, logLevel: 'warn' });
    try {
      const from = s.logs().length;
      for (let i = 0; i < 5; i++) assert.equal((await s.client.get('/healthz')).status, 200);
      assert.equal(s.logs().slice(from).filter((l) => l.includes('"msg":"request"')).length, 0);
    } finally {
      await s.close();
    }
  });
});

describe('formats', () => {
  test('LOG_FORMAT=pretty writes human-readable lines, json writes one JSON object per line', () => {
    const capture = () => {
      let out = '';
      const sink = new Writable({
        write(chunk, _enc, cb) {
          out += String(chunk);
          cb();
        },
      });
      return { sink, text: () => out };
    };
    const pretty = capture();
    createLogger({ ...DEFAULTS, logFormat: 'pretty', logLevel: 'info' }, { destination: pretty.sink })!.info({ route: '/v1/decide' }, 'pretty probe');
    assert.match(pretty.text(), /INFO/);
    assert.match(pretty.text(), /pretty probe/);
    assert.ok(!pretty.text().trimStart().startsWith('{'), pretty.text());
    const json = capture();
    createLogger({ ...DEFAULTS, logFormat: 'json', logLevel: 'info' }, { destination: json.sink })!.info({ route: '/v1/decide' }, 'json probe');
    const line = JSON.parse(json.text().trim()) as Record<string, unknown>;
    assert.equal(line.msg, 'json probe');
    assert.equal(line.level, 'info');
    assert.equal(line.route, '/v1/decide');
  });
});

describe('redaction', () => {
  test('credential fields are censored wherever a logged object carries them', () => {
    let out = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        out += String(chunk);
        cb();
      },
    });
    const log = createLogger({ ...DEFAULTS, logFormat: 'json', logLevel: 'info' }, { destination: sink })!;
    log.info(
      {
        key_secret: 'S1-secret',
        signing_secret: 'S2-secret',
        headers: { 'x-cycles-api-key': 'S3-secret', 'x-admin-api-key': 'S4-secret', authorization: 'S5-secret' },
        req: { headers: { 'x-cycles-api-key': 'S6-secret', authorization: 'S7-secret' } },
        webhook: { secret: 'S8-secret', nested: { signing_secret: 'S9-secret' } },
        config: { adminApiKey: 'S10-secret', keyPepper: 'S11-secret' },
        idempotency_key: idem(),
      },
      'redaction probe',
    );
    assert.ok(out.includes('redaction probe'));
    for (let i = 1; i <= 11; i++) assert.ok(!out.includes(`S${i}-secret`), `S${i} leaked: ${out}`);
    assert.ok(out.includes('[REDACTED]'));
    assert.ok(out.includes('idempotency_key'), 'ordinary fields are kept');
  });
});

describe('the request logger (req.log)', () => {
  test('built on first use at an enabled level: same request_id binding, same redaction', () => {
    let out = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        out += String(chunk);
        cb();
      },
    });
    const log = createLogger({ ...DEFAULTS, logFormat: 'json', logLevel: 'warn' }, { destination: sink })!;
    type Log = { level: string; info(...a: unknown[]): void; debug(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void; child(b: object): Log };
    const child = deferredChildLogger(log, { request_id: 'req_probe' }, {}) as Log;
    assert.equal(child.level, 'warn');
    child.info({ note: 'dropped' }, 'below the level');
    child.debug('dropped too');
    assert.equal(out, '');
    child.error({ headers: { authorization: 'S1-secret', 'x-cycles-api-key': 'S2-secret' }, key_secret: 'S3-secret' }, 'failed');
    const grand = child.child({ part: 'sub' });
    grand.warn({ token: 'S4-secret' }, 'nested');
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.deepEqual([lines[0]!.request_id, lines[0]!.msg, lines[0]!.level], ['req_probe', 'failed', 'error']);
    assert.deepEqual([lines[1]!.request_id, lines[1]!.part, lines[1]!.msg], ['req_probe', 'sub', 'nested']);
    assert.ok(!/S[1-4]-secret/.test(out), out);
    assert.equal((lines[0]!.headers as Record<string, unknown>).authorization, '[REDACTED]');
    // A route with its own level gets a real child at once.
    const own = deferredChildLogger(log, { request_id: 'req_own' }, { level: 'debug' }) as { level: string };
    assert.equal(own.level, 'debug');
  });
});
