/**
 * Three `cycles serve` processes on one PostgreSQL schema (CYCLES_TEST_DATABASE_URL): exactly N
 * reservations fit across all of them, nothing is settled twice, the ledger is exact.
 */
import { test } from 'node:test';
import { BACKEND_URL_VAR, openTestBackend } from './backend.js';
import { runMultiProcess } from './multiprocess.js';

const urlVar = BACKEND_URL_VAR.postgres;
if (!process.env[urlVar]) {
  const line = `*** SKIPPED: the PostgreSQL multi-process test did not run: ${urlVar} is not set (.ci/run sets it) ***`;
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test('postgres: three processes on one database', { skip: `${urlVar} is not set` }, () => undefined);
} else {
  test('postgres: three processes on one database share one exact ledger', { timeout: 240_000 }, async () => {
    const backend = await openTestBackend('postgres');
    try {
      await runMultiProcess({ env: backend.env });
    } finally {
      await backend.cleanup();
    }
  });
}
