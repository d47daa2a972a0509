/**
 * Which store the test servers run on. CYCLES_TEST_STORE=sqlite|redis|redis-cluster|postgres (default sqlite)
 * selects it for every server the harnesses start (test/helpers/harness.ts and
 * test/support/server.ts), so the same suites run unchanged against every backend; the
 * test/backends/<backend>-*.test.ts files rerun them with it set.
 *
 * Each test server gets an isolated slice of the backend, removed again on cleanup:
 * - sqlite: a fresh data directory (the harnesses already make one);
 * - postgres: a fresh schema in CYCLES_TEST_DATABASE_URL (created by the server's migration);
 * - redis, redis-cluster: a fresh key prefix (test/backends/redis-backend.ts).
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { redisSlice } from './redis-backend.js';

export const BACKENDS = ['sqlite', 'redis', 'redis-cluster', 'postgres'] as const;
export type BackendKind = (typeof BACKENDS)[number];

export function selectedBackend(): BackendKind {
  const v = process.env.CYCLES_TEST_STORE || 'sqlite';
  if (!(BACKENDS as readonly string[]).includes(v)) throw new Error(`CYCLES_TEST_STORE must be one of ${BACKENDS.join(', ')} (got "${v}")`);
  return v as BackendKind;
}

/** The variable that makes a backend's suites run; when unset they are skipped (loudly). */
export const BACKEND_URL_VAR: Record<Exclude<BackendKind, 'sqlite'>, string> = {
  redis: 'CYCLES_TEST_REDIS_URL',
  'redis-cluster': 'CYCLES_TEST_REDIS_CLUSTER_URLS',
  postgres: 'CYCLES_TEST_DATABASE_URL',
};

export interface TestBackend {
  kind: BackendKind;
  /** Config overrides for startServer (in-process servers). */
  config: Record<string, unknown>;
  /** Environment for `cycles serve` child processes. */
  env: Record<string, string>;
  /** Removes what the backend slice holds (schema, keys); idempotent. */
  cleanup(): Promise<void>;
}

/** Connections per test server: suites run several servers, PostgreSQL allows ~100 in all. */
const TEST_PG_POOL = 4;

/** A fresh, isolated slice of the selected backend. */
export async function openTestBackend(kind: BackendKind = selectedBackend()): Promise<TestBackend> {
  switch (kind) {
    case 'sqlite':
      return { kind, config: { store: 'sqlite' }, env: { CYCLES_STORE: 'sqlite' }, cleanup: async () => undefined };
    case 'postgres': {
      const url = process.env.CYCLES_TEST_DATABASE_URL;
      if (!url) throw new Error('CYCLES_TEST_STORE=postgres needs CYCLES_TEST_DATABASE_URL');
      const schema = `cycles_t_${crypto.randomBytes(6).toString('hex')}`;
      let cleaned = false;
      return {
        kind,
        config: { store: 'postgres', databaseUrl: url, pgSchema: schema, pgPoolSize: TEST_PG_POOL },
        env: { CYCLES_STORE: 'postgres', DATABASE_URL: url, CYCLES_PG_SCHEMA: schema, PG_POOL_SIZE: String(TEST_PG_POOL) },
        async cleanup() {
          if (cleaned) return;
          cleaned = true;
          await dropPostgresSchema(url, schema);
        },
      };
    }
    case 'redis':
    case 'redis-cluster':
      // A fresh key prefix per server (test/backends/redis-backend.ts).
      return { kind, ...redisSlice(kind === 'redis-cluster') };
  }
}

export async function dropPostgresSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}
