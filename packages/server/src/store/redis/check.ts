/**
 * `cycles store check` for Redis: reachability, and the server settings the backend relies on.
 * Problems (exit 1): unreachable, Redis older than 7, a Cluster that is not ok, a maxmemory-policy
 * that may evict keys (eviction would silently delete ledger state). Warnings: no AOF (a crash
 * loses every write since the last snapshot). Read-only: changes nothing.
 */
import type { RedisStore } from './store.js';
import { walkIds } from './list.js';

export interface CheckReport {
  ok: boolean;
  lines: string[];
}

const infoField = (info: string, field: string): string | undefined => new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();

/** CONFIG GET is refused by some managed services: then the value is unknown, not wrong. */
async function configGet(store: RedisStore, name: string): Promise<Array<{ node: string; value: string | undefined }>> {
  const conn = await store.conn();
  try {
    const replies = await conn.onPrimaries<unknown>(['CONFIG', 'GET', name]);
    return replies.map(({ node, reply }) => {
      let value: unknown;
      if (Array.isArray(reply)) value = reply[1];
      else if (reply && typeof reply === 'object') value = (reply as Record<string, unknown>)[name];
      return { node, value: value === undefined ? undefined : String(value) };
    });
  } catch {
    return [{ node: 'all', value: undefined }];
  }
}

export async function checkRedis(store: RedisStore): Promise<CheckReport> {
  const lines: string[] = [];
  let ok = true;
  const problem = (s: string) => {
    ok = false;
    lines.push(`PROBLEM: ${s}`);
  };
  const started = Date.now();
  try {
    await store.ping();
  } catch (e) {
    return { ok: false, lines: [`reachable: no (${(e as Error).message})`] };
  }
  const conn = await store.conn();
  lines.push(`reachable: yes (${Date.now() - started} ms), ${conn.isCluster ? 'Redis Cluster' : 'single server'}, key prefix "${store.keys.prefix}"`);

  for (const { node, reply } of await conn.onPrimaries<string>(['INFO', 'server'])) {
    const version = infoField(String(reply), 'redis_version') ?? 'unknown';
    lines.push(`${node}: Redis ${version}`);
    if (!(Number(version.split('.')[0]) >= 7)) problem(`${node} runs Redis ${version}; the backend needs Redis 7 or newer`);
  }
  if (conn.isCluster) {
    for (const { node, reply } of await conn.onPrimaries<string>(['CLUSTER', 'INFO'])) {
      const state = infoField(String(reply), 'cluster_state');
      if (state !== 'ok') problem(`${node}: cluster_state is ${state}`);
      else lines.push(`${node}: cluster_state ok, ${infoField(String(reply), 'cluster_slots_ok')} slots ok`);
    }
  }
  for (const { node, value } of await configGet(store, 'maxmemory-policy')) {
    if (value === undefined) lines.push(`${node}: maxmemory-policy unknown (CONFIG GET refused); it must be noeviction`);
    else if (value !== 'noeviction') problem(`${node}: maxmemory-policy is ${value}; set noeviction (evicting a key deletes ledger state)`);
    else lines.push(`${node}: maxmemory-policy noeviction`);
  }
  const persistence = await conn.onPrimaries<string>(['INFO', 'persistence']);
  const fsync = await configGet(store, 'appendfsync');
  for (const { node, reply } of persistence) {
    const aof = infoField(String(reply), 'aof_enabled') === '1';
    const mode = fsync.find((f) => f.node === node)?.value ?? 'unknown';
    lines.push(
      aof
        ? `${node}: AOF on (appendfsync ${mode}: ${mode === 'always' ? 'every acknowledged write is on disk' : 'a crash may lose about the last second'})`
        : `WARNING: ${node}: AOF is off; a crash loses every write since the last RDB snapshot (set appendonly yes)`,
    );
  }

  // The global indexes are written before the records they point at, so an entry without a record
  // (a crash between the two) is harmless: listed lookups skip it. Count them for the operator.
  let tenants = 0;
  let dangling = 0;
  for await (const batch of walkIds(conn, store.keys.tenants(), undefined)) {
    tenants += batch.length;
    const exists = await Promise.all(batch.map((t) => conn.call<number>(store.keys.tenant(t), ['EXISTS', store.keys.tenant(t)], true)));
    dangling += exists.filter((e) => Number(e) === 0).length;
  }
  lines.push(`tenants: ${tenants}${dangling ? ` (${dangling} index entries without a record, from interrupted creations; harmless)` : ''}`);
  const registry = store.keys.sweepDue();
  const [s] = await conn.call<string[]>(registry, ['TIME'], true);
  const overdue = await conn.call<number>(registry, ['ZCOUNT', registry, '-inf', String(Number(s) * 1000 - 60_000)], true);
  lines.push(`expiry registry: ${await conn.call<number>(registry, ['ZCARD', registry], true)} tenants with open reservations`);
  if (Number(overdue) > 0) lines.push(`WARNING: ${overdue} tenants have reservations due for more than a minute: is any server running its sweeper?`);
  return { ok, lines };
}
