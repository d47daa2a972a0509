/**
 * Precompiled route-schema validators (http/validators.ts): the build collects the standalone
 * code of every route's validators; a start served from that file compiles nothing, and answers
 * every bad input exactly as a start that compiles them (same status, same message, same field).
 * A schema the file does not hold (changed since the build) is compiled as before.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startServer, type RunningServer } from '../../src/server.js';
import {
  collectingValidatorFactory,
  loadPrecompiled,
  renderPrecompiled,
  validatorFactory,
  type Precompiled,
  type ValidatorFactory,
  type ValidatorStats,
} from '../../src/http/validators.js';
import { ADMIN_KEY, Client, PACKAGE_DIR, idem, reserveBody, uid, type Res } from './support.js';

const dirs: string[] = [];
const start = async (buildValidator: ValidatorFactory): Promise<RunningServer> => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'cycles-validators-'));
  dirs.push(dataDir);
  return startServer({ config: { port: 0, host: '127.0.0.1', dataDir, adminApiKey: ADMIN_KEY, rateLimitPerIp: 0, rateLimitPerKey: 0 }, logger: false, buildValidator });
};

/** The answer without what differs per request. */
const comparable = (r: Res) => ({ status: r.status, error: r.body?.error, message: r.body?.message, details: r.body?.details });

describe('precompiled route-schema validators', () => {
  const collected = new Map<string, string>();
  let precompiled: Precompiled;
  const stats: ValidatorStats = { precompiled: 0, compiled: 0 };
  let fromFile: RunningServer;
  let compiling: RunningServer;

  before(async () => {
    // As the build does: one start that compiles every schema and hands over its code.
    const collector = await start(collectingValidatorFactory((key, code) => collected.set(key, code)));
    await collector.close();
    // The generated code requires Ajv's runtime helpers, so the file must sit where the
    // package's dependencies resolve (as dist/http does).
    const cache = path.join(PACKAGE_DIR, 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    const dir = mkdtempSync(path.join(cache, 'cycles-validators-'));
    dirs.push(dir);
    const file = path.join(dir, 'validators.precompiled.cjs');
    writeFileSync(file, renderPrecompiled(collected));
    precompiled = loadPrecompiled(file)!;
    fromFile = await start(validatorFactory(precompiled, stats));
    compiling = await start(validatorFactory(undefined));
  });

  after(async () => {
    await fromFile?.close();
    await compiling?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('the build collects every route schema, and a start from its file compiles none', () => {
    assert.ok(collected.size >= 25, `collected ${collected.size} validators`);
    assert.ok([...collected.keys()].some((k) => k.startsWith('POST /v1/reservations body ')));
    assert.ok([...collected.keys()].some((k) => k.startsWith('POST /v1/admin/budgets body ')));
    assert.equal(Object.keys(precompiled).length, collected.size);
    assert.deepEqual(stats, { precompiled: collected.size, compiled: 0 });
  });

  test('bad input gets the same answer from precompiled and compiled validators', async () => {
    const a = new Client(fromFile.url);
    const b = new Client(compiling.url);
    const tenant = uid();
    for (const c of [a, b]) {
      assert.equal((await c.post('/v1/admin/tenants', { tenant_id: tenant, name: 'T' }, { admin: true })).status, 201);
    }
    const key = async (c: Client) => (await c.post('/v1/admin/api-keys', { tenant_id: tenant, name: 'k' }, { admin: true })).body.key_secret as string;
    const keys = new Map([
      [a, await key(a)],
      [b, await key(b)],
    ]);
    const cases: Array<{ what: string; send: (c: Client) => Promise<Res> }> = [
      { what: 'reserve without estimate', send: (c) => c.post('/v1/reservations', { ...reserveBody(tenant, 5), estimate: undefined }, { key: keys.get(c) }) },
      { what: 'reserve with an unknown property', send: (c) => c.post('/v1/reservations', reserveBody(tenant, 5, { surprise: true }), { key: keys.get(c) }) },
      { what: 'reserve with a string amount', send: (c) => c.post('/v1/reservations', { ...reserveBody(tenant, 5), estimate: { unit: 'TOKENS', amount: '5' } }, { key: keys.get(c) }) },
      { what: 'reserve with an over-long idempotency key', send: (c) => c.post('/v1/reservations', { ...reserveBody(tenant, 5), idempotency_key: 'é'.repeat(300) }, { key: keys.get(c) }) },
      { what: 'commit of an over-long reservation id', send: (c) => c.post(`/v1/reservations/${'r'.repeat(129)}/commit`, { idempotency_key: idem(), actual: { unit: 'TOKENS', amount: 1 } }, { key: keys.get(c) }) },
      { what: 'tenant with a bad id', send: (c) => c.post('/v1/admin/tenants', { tenant_id: 'Not Valid', name: 'x' }, { admin: true }) },
      {
        what: 'budget with a period that is not a date-time',
        send: (c) => c.post('/v1/admin/budgets', { tenant_id: tenant, scope: `tenant:${tenant}`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 10 }, period_start: 'yesterday' }, { admin: true }),
      },
    ];
    for (const { what, send } of cases) {
      const [x, y] = [await send(a), await send(b)];
      assert.equal(x.status, 400, `${what}: ${x.text}`);
      assert.deepEqual(comparable(x), comparable(y), what);
    }
    // A valid date-time passes both (the format comes from ajv-formats in the generated code too).
    for (const c of [a, b]) {
      const ok = await c.post(
        '/v1/admin/budgets',
        { tenant_id: tenant, scope: `tenant:${tenant}`, unit: 'TOKENS', allocated: { unit: 'TOKENS', amount: 10 }, period_start: '2026-11-01T00:00:00Z' },
        { admin: true },
      );
      assert.equal(ok.status, 201, ok.text);
      const r = await c.post('/v1/reservations', reserveBody(tenant, 5), { key: keys.get(c) });
      assert.equal(r.status, 200, r.text);
    }
  });

  test('a schema the file does not hold is compiled at start', () => {
    const own: ValidatorStats = { precompiled: 0, compiled: 0 };
    const build = validatorFactory(precompiled, own)({} as never, { customOptions: { removeAdditional: false, coerceTypes: false } } as never);
    const validate = build({ schema: { type: 'object', properties: { a: { type: 'string' } } }, method: 'POST', url: '/v1/not-a-route', httpPart: 'body' }) as (d: unknown) => boolean;
    assert.deepEqual(own, { precompiled: 0, compiled: 1 });
    assert.equal(validate({ a: 'x' }), true);
    assert.equal(validate({ a: 1 }), false);
  });

  test('a header schema is refused at start (Fastify lower-cases header keys only for its own compiler)', () => {
    const build = validatorFactory(precompiled)({} as never, { customOptions: {} } as never);
    assert.throws(() => build({ schema: { type: 'object' }, method: 'GET', url: '/v1/x', httpPart: 'headers' }), /header schemas are not supported \(GET \/v1\/x\)/);
  });

  test('without a generated file there is nothing to load', () => {
    assert.equal(loadPrecompiled(path.join(tmpdir(), 'no-such-dir', 'validators.precompiled.cjs')), undefined);
  });
});
