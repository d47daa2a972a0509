/**
 * Differential test: one seeded random sequence of operations (every runtime operation, several
 * tenants, units and scope depths, errors and replays) applied to a server on each backend must
 * give identical answers and identical final ledgers (see differential.ts).
 *
 * SQLite always takes part; Redis, Redis Cluster and PostgreSQL join when their URL variable is
 * set (.ci/run sets them all). CYCLES_DIFF_SEED reruns one seed, CYCLES_DIFF_OPS sets the length,
 * CYCLES_DIFF_BACKENDS (comma-separated) restricts the backends compared.
 */
import { after, before, test } from 'node:test';
import crypto from 'node:crypto';
import { Client } from '../support/http.js';
import { startInProcess, type InProcessServer } from '../support/server.js';
import { BACKEND_URL_VAR, BACKENDS, openTestBackend, type BackendKind, type TestBackend } from './backend.js';
import { compareFinalState, generator, provisionAll, runSequence, type Target } from './differential.js';

const wanted = process.env.CYCLES_DIFF_BACKENDS?.split(',').map((s) => s.trim()).filter(Boolean);
const available = BACKENDS.filter((k) => k === 'sqlite' || Boolean(process.env[BACKEND_URL_VAR[k]]));
const kinds: BackendKind[] = available.filter((k) => !wanted || wanted.includes(k));
const missing = BACKENDS.filter((k) => !available.includes(k));
if (missing.length > 0) {
  const line = `*** differential test: ${missing.join(', ')} not compared (${missing.map((k) => (k === 'sqlite' ? '' : BACKEND_URL_VAR[k])).join(', ')} not set; .ci/run sets them) ***`;
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
}

const SEEDS = process.env.CYCLES_DIFF_SEED ? [Number(process.env.CYCLES_DIFF_SEED)] : [crypto.randomInt(1, 2 ** 31), crypto.randomInt(1, 2 ** 31)];
const OPS = Number(process.env.CYCLES_DIFF_OPS ?? 400);

const slices: TestBackend[] = [];
const servers: InProcessServer[] = [];
const targets: Target[] = [];

before(async () => {
  if (kinds.length < 2) return;
  for (const kind of kinds) {
    const slice = await openTestBackend(kind);
    slices.push(slice);
    const srv = await startInProcess({ ...slice.config, sweepIntervalMs: 1000 });
    servers.push(srv);
    targets.push({ name: kind, client: new Client(srv.url), keys: new Map(), ids: new Map(), byOrdinal: new Map() });
  }
});

after(async () => {
  for (const s of servers) await s.close().catch(() => undefined);
  for (const s of slices) await s.cleanup().catch(() => undefined);
});

for (const [i, seed] of SEEDS.entries()) {
  test(`differential: ${OPS} random operations give identical answers on ${kinds.join(', ')} (seed ${seed})`, { skip: kinds.length < 2 ? 'only one backend available' : false, timeout: 300_000 }, async (t) => {
    for (const target of targets) {
      target.ids.clear();
      target.byOrdinal.clear();
      target.keys.clear();
    }
    const tenants = await provisionAll(targets, `d${i}${crypto.randomBytes(3).toString('hex')}`);
    const result = await runSequence(targets, generator(seed, tenants, OPS), OPS, seed);
    await compareFinalState(targets, tenants, seed);
    t.diagnostic(`answers by status: ${JSON.stringify(result.statuses)}`);
  });
}
