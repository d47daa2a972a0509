/**
 * Redis slices for test servers: every server gets a fresh key prefix under `cyt:` on the
 * Redis of CYCLES_TEST_REDIS_URL, or on the Cluster of CYCLES_TEST_REDIS_CLUSTER_URLS, and
 * cleanup deletes its keys (SCAN is fine here: tests only, never a request path).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import { createClient, createCluster } from 'redis';

/** Root of every test key prefix. */
export const TEST_PREFIX_ROOT = 'cyt:';

export const redisUrl = (): string | undefined => process.env.CYCLES_TEST_REDIS_URL || undefined;

export const redisClusterUrls = (): string[] =>
  (process.env.CYCLES_TEST_REDIS_CLUSTER_URLS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export interface RedisSlice {
  config: Record<string, unknown>;
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export function redisSlice(cluster: boolean): RedisSlice {
  const prefix = `${TEST_PREFIX_ROOT}${crypto.randomBytes(6).toString('hex')}:`;
  if (cluster) {
    const urls = redisClusterUrls();
    if (urls.length === 0) throw new Error('CYCLES_TEST_STORE=redis-cluster needs CYCLES_TEST_REDIS_CLUSTER_URLS');
    return {
      config: { store: 'redis', redisClusterUrls: urls, redisPrefix: prefix },
      env: { CYCLES_STORE: 'redis', REDIS_CLUSTER_URLS: urls.join(','), CYCLES_REDIS_PREFIX: prefix },
      cleanup: () => deleteKeys(prefix, { clusterUrls: urls }),
    };
  }
  const url = redisUrl();
  if (!url) throw new Error('CYCLES_TEST_STORE=redis needs CYCLES_TEST_REDIS_URL');
  return {
    config: { store: 'redis', redisUrl: url, redisPrefix: prefix },
    env: { CYCLES_STORE: 'redis', REDIS_URL: url, CYCLES_REDIS_PREFIX: prefix },
    cleanup: () => deleteKeys(prefix, { url }),
  };
}

/** Deletes every key under `prefix` (on every primary of a cluster). */
export async function deleteKeys(prefix: string, target: { url?: string; clusterUrls?: string[] }): Promise<void> {
  const nodes: Array<{ sendCommand(args: string[]): Promise<unknown>; close(): Promise<unknown> }> = [];
  let closeAll = async () => undefined as unknown;
  if (target.clusterUrls && target.clusterUrls.length > 0) {
    const cluster = createCluster({ rootNodes: target.clusterUrls.map((url) => ({ url })) });
    cluster.on('error', () => undefined);
    await cluster.connect();
    for (const m of cluster.masters) nodes.push(await cluster.nodeClient(m));
    closeAll = () => cluster.close();
  } else {
    const client = createClient({ url: target.url });
    client.on('error', () => undefined);
    await client.connect();
    nodes.push(client);
    closeAll = () => client.close();
  }
  try {
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = (await node.sendCommand(['SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000'])) as [string, string[]];
        cursor = next;
        // One key per DEL: on a cluster the keys of one SCAN page live in many slots.
        await Promise.all(keys.map((k) => node.sendCommand(['UNLINK', k])));
      } while (cursor !== '0');
    }
  } finally {
    await closeAll();
  }
}

/**
 * Starts a private redis-server on `port` with its data in `dir` (AOF, fsync on every write, no
 * RDB) and resolves once it answers PING. Crash tests kill it and call this again to restart it
 * on the same port and data.
 */
export async function startPrivateRedis(port: number, dir: string): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
    const c = createClient({ url: `redis://127.0.0.1:${port}`, socket: { reconnectStrategy: false } });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.sendCommand(['PING']);
      await c.close();
      return proc;
    } catch {
      c.destroy();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not start');
}
