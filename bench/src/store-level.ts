/**
 * The embedded store alone, without HTTP: concurrent reserves straight into the built SqliteStore
 * (in this process), for changes to the store whose effect the HTTP benchmark's noise would hide.
 *
 *   npm run bench:store -- [--tenants 1|100] [--concurrency 50] [--duration 6] [--checkpoint-ms 50]
 *                          [--sync normal|full]
 *
 * Prints reserves/s and the latency of each reserve (p50, p99, max), from the call to its group's
 * commit. Depth 3 (tenant, workspace, app), as in the HTTP benchmark's target cells.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Samples } from './stats.js';

interface Reply {
  status: number;
  body: string;
}
interface StoreLike {
  createTenant(t: object): Promise<unknown>;
  createBudget(b: object): Promise<unknown>;
  reserve(cmd: object): Promise<Reply>;
  close(): Promise<void>;
}

const { values: args } = parseArgs({
  options: {
    tenants: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '50' },
    duration: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '1' },
    'checkpoint-ms': { type: 'string', default: '50' },
    sync: { type: 'string', default: 'normal' },
  },
});
const tenants = Number(args.tenants);
const concurrency = Number(args.concurrency);
const checkpointMs = Number(args['checkpoint-ms']);
if (!(tenants >= 1 && concurrency >= 1 && checkpointMs >= 0) || (args.sync !== 'normal' && args.sync !== 'full')) {
  throw new Error('--tenants and --concurrency must be at least 1, --checkpoint-ms at least 0, --sync normal or full');
}

const dist = join(dirname(fileURLToPath(import.meta.url)), '../../packages/server/dist');
const load = (path: string): Promise<Record<string, unknown>> => import(pathToFileURL(join(dist, path)).href) as Promise<Record<string, unknown>>;
const [{ SqliteStore }, { requestHash }, { deriveScopes }] = await Promise.all([load('store/sqlite/store.js'), load('ledger/ops/shared.js'), load('ledger/scopes.js')]);
const hashOf = requestHash as (endpoint: string, body: unknown) => string;
const scopesOf = deriveScopes as (subject: object) => unknown;

const dir = mkdtempSync(join(tmpdir(), 'cycles-store-bench-'));
const store = new (SqliteStore as new (o: object) => StoreLike)({ dataDir: dir, sync: args.sync, checkpointMs });
try {
  const now = Date.now();
  for (let t = 0; t < tenants; t++) {
    const id = `bench-${t}`;
    await store.createTenant({ tenant_id: id, name: id, status: 'ACTIVE', created_at: now });
    for (const scope of [`tenant:${id}`, `tenant:${id}/workspace:w1`, `tenant:${id}/workspace:w1/app:a2`]) {
      await store.createBudget({ ledger_id: `led-${scope}`, tenant_id: id, scope, unit: 'TOKENS', allocated: 1e15, reserved: 0, spent: 0, debt: 0, overdraft_limit: 0, status: 'ACTIVE', created_at: now, updated_at: now });
    }
  }
  let next = 0;
  let done = 0;
  let stop = false;
  let latencies = new Samples();
  const client = async () => {
    while (!stop) {
      const i = next++;
      const tenantId = `bench-${i % tenants}`;
      const subject = { tenant: tenantId, workspace: 'w1', app: 'a2' };
      const request = { idempotency_key: `k-${i}`, subject, action: { kind: 'llm.completion', name: 'bench' }, estimate: { unit: 'TOKENS', amount: 100 }, ttl_ms: 3_600_000 };
      const t0 = performance.now();
      const r = await store.reserve({ ctx: { actor: { type: 'system' } }, tenantId, request, scopes: scopesOf(subject), hash: hashOf('reserve', request) });
      if (r.status !== 200) throw new Error(`reserve answered ${r.status}: ${r.body}`);
      latencies.add(performance.now() - t0);
      done++;
    }
  };
  const clients = Promise.all(Array.from({ length: concurrency }, client));
  await new Promise((r) => setTimeout(r, Number(args.warmup) * 1000));
  done = 0;
  latencies = new Samples();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, Number(args.duration) * 1000));
  const seconds = (performance.now() - t0) / 1000;
  const ops = done;
  const latency = latencies.summary();
  stop = true;
  await clients;
  console.log(
    `sqlite (${args.sync}) store level, ${tenants} tenant(s), ${concurrency} concurrent, checkpoint thread ${checkpointMs > 0 ? `every ${checkpointMs} ms` : 'off'}: ` +
      `${Math.round(ops / seconds)} reserves/s, p50 ${latency.p50} p99 ${latency.p99} max ${latency.max} ms`,
  );
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
