/**
 * Schema migrations: `migrate()` brings a database (or one schema of it) to SCHEMA_VERSION.
 * It runs in one transaction under a transaction-scoped advisory lock, so any number of
 * servers starting together (or `cycles migrate` racing a server) apply each migration exactly
 * once; PostgreSQL DDL is transactional, so a crash leaves the previous version intact.
 */
import type pg from 'pg';
import { MIGRATIONS, SCHEMA_VERSION, type Migration } from './schema.js';

export interface MigrationStatus {
  /** Versions recorded in schema_migrations, ascending. */
  applied: number[];
  /** Migrations this build knows and the database lacks. */
  pending: Migration[];
  /** Versions the database has that this build does not know (a newer server migrated it). */
  unknown: number[];
  /** The version this build needs. */
  required: number;
}

export interface MigrationResult extends MigrationStatus {
  /** Migrations applied by this call. */
  ran: Migration[];
}

/** A schema name safe to splice into SQL and into the connection's search_path option. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

const LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('cycles.migrate:' || coalesce($1::text, current_schema(), '')))";

const TABLE_SQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`;

function statusOf(applied: number[]): MigrationStatus {
  const have = new Set(applied);
  const known = new Set(MIGRATIONS.map((m) => m.version));
  return {
    applied,
    pending: MIGRATIONS.filter((m) => !have.has(m.version)),
    unknown: applied.filter((v) => !known.has(v)),
    required: SCHEMA_VERSION,
  };
}

async function appliedVersions(client: pg.ClientBase): Promise<number[]> {
  const res = await client.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
  return res.rows.map((r) => r.version);
}

/** Applies every pending migration. `schema` (when set) is created first; the connection's search_path must point at it. */
export async function migrate(client: pg.ClientBase, schema?: string): Promise<MigrationResult> {
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) throw new Error(`invalid schema name "${schema}"`);
  await client.query('BEGIN');
  try {
    // A migration may wait for another server's migration and for table locks as long as it takes.
    await client.query('SET LOCAL lock_timeout = 0');
    await client.query(LOCK_SQL, [schema ?? null]);
    if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await client.query(TABLE_SQL);
    const before = statusOf(await appliedVersions(client));
    for (const m of before.pending) {
      await client.query(m.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    }
    await client.query('COMMIT');
    return { ...statusOf(await appliedVersions(client)), ran: before.pending };
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** Reads the migration state without changing anything (an absent table means nothing applied). */
export async function migrationStatus(client: pg.ClientBase): Promise<MigrationStatus> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (!exists.rows[0]?.t) return statusOf([]);
  return statusOf(await appliedVersions(client));
}
