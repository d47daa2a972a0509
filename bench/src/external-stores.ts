/**
 * Setup and cleanup on the shared stores (PostgreSQL, Redis). Each cell's server works in a
 * namespace of its own (a PostgreSQL schema, a Redis key prefix), which is as fresh as the SQLite
 * cells' temporary directories and is removed after the cell, so runs never accumulate data.
 */

/** Creates the benchmark database when it does not exist yet (the server creates its tables). */
export async function ensurePostgresDatabase(url: string): Promise<void> {
  const { default: pg } = await import('pg');
  const probe = new pg.Client({ connectionString: url });
  try {
    await probe.connect();
    return;
  } catch (e) {
    // 3D000: database does not exist. Anything else (server down, auth) is the server's to report.
    if ((e as { code?: string }).code !== '3D000') return;
  } finally {
    await probe.end().catch(() => undefined);
  }
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`will not create database "${name}": use a plain lower-case name`);
  target.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: target.toString() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
}

export async function dropPostgresSchema(url: string, schema: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad schema name ${schema}`);
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** Deletes every key under `prefix` (SCAN + UNLINK, in batches). */
export async function deleteRedisKeys(url: string, prefix: string): Promise<void> {
  if (prefix.length < 8) throw new Error(`refusing to delete keys under the short prefix "${prefix}"`);
  const { createClient } = await import('redis');
  const client = createClient({ url, socket: { connectTimeout: 5000, reconnectStrategy: false } });
  await client.connect();
  try {
    let batch: string[] = [];
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      batch.push(...keys);
      if (batch.length >= 1000) {
        await client.unlink(batch);
        batch = [];
      }
    }
    if (batch.length) await client.unlink(batch);
  } finally {
    await client.quit();
  }
}
