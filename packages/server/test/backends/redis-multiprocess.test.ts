/**
 * Three `cycles serve` processes on one Redis (CYCLES_TEST_REDIS_URL) and on one Redis Cluster
 * (CYCLES_TEST_REDIS_CLUSTER_URLS), sharing one key prefix: exactly N reservations fit across all
 * of them, nothing is settled twice, expiry happens once, the ledger is exact (multiprocess.ts).
 */
import { test } from 'node:test';
import { BACKEND_URL_VAR, openTestBackend } from './backend.js';
import { runMultiProcess } from './multiprocess.js';

for (const kind of ['redis', 'redis-cluster'] as const) {
  const urlVar = BACKEND_URL_VAR[kind];
  if (!process.env[urlVar]) {
    const line = `*** SKIPPED: the ${kind} multi-process test did not run: ${urlVar} is not set (.ci/run sets it) ***`;
    console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
    test(`${kind}: three processes on one store`, { skip: `${urlVar} is not set` }, () => undefined);
    continue;
  }
  test(`${kind}: three processes on one store share one exact ledger`, { timeout: 240_000 }, async () => {
    const backend = await openTestBackend(kind);
    try {
      await runMultiProcess({ env: backend.env });
    } finally {
      await backend.cleanup();
    }
  });
}
