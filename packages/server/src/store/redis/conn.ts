/**
 * One connection abstraction over a single Redis server and a Redis Cluster (node-redis).
 * Commands are raw argument lists routed by their first key; scripts go out as EVALSHA and
 * fall back to EVAL (which also caches the script on that node) when the node answers NOSCRIPT,
 * e.g. after a restart, a failover or on a cluster node that has not seen the script yet.
 */
import { createHash } from 'node:crypto';
import { createClient, createCluster, type RedisClientType, type RedisClusterType } from '@redis/client';
import { CyclesError } from '../../ledger/errors.js';
import { LinkedList, type Linked } from '../../linked-list.js';

export interface RedisTarget {
  /** redis://[user:password@]host:port[/db] of a single server. */
  url?: string | undefined;
  /** Seed nodes of a Redis Cluster; the topology is discovered from them. */
  clusterUrls?: readonly string[] | undefined;
  /**
   * When a call has waited this long for its reply, the connection is closed (the calls waiting
   * on it fail: 503) and opened again (CYCLES_REDIS_REPLY_TIMEOUT_MS). 0 never does.
   */
  replyTimeoutMs?: number | undefined;
  /** Told when a stalled connection is closed and opened again. */
  onWarning?: ((message: string) => void) | undefined;
}

export class LuaScript {
  readonly sha: string;
  constructor(
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** A reply as node-redis gives it for RESP2: strings, numbers, null and nested arrays. */
export type Reply = string | number | null | Reply[];

const CONNECT_TIMEOUT_MS = 5_000;

/**
 * node-redis arms a 5-second AbortSignal.timeout for every command by default, covering only the
 * time the command waits to be written to the socket (it is disarmed once written, so it never
 * bounded the wait for a reply). With the offline queue disabled a command is refused at once
 * when the connection is down, so that timer guards nothing here, and it cost about 14 µs of CPU
 * (timer, signal, listener, finalizer) per command.
 */
const NO_QUEUE_TIMER = { timeout: 0 };

const masked = (url: string): string => url.replace(/\/\/[^@/]*@/, '//***@');

/**
 * The first connection gives up after CONNECT_TIMEOUT_MS (node-redis would retry forever);
 * once connected, a lost connection is retried in the background and commands fail fast (503).
 */
async function within(connecting: Promise<unknown>, abandon: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
  });
  try {
    await Promise.race([connecting, timeout]);
  } catch (e) {
    abandon();
    connecting.catch(() => undefined);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function unavailable(err: unknown): CyclesError {
  // Whether a write that was in flight reached Redis is unknown: a retry with the same idempotency
  // key answers either way, exactly once.
  return new CyclesError('SERVICE_UNAVAILABLE', `The Redis store is unavailable (${(err as Error)?.message ?? String(err)}); retry with the same idempotency key`);
}

/** Errors that mean "Redis cannot be reached" rather than "Redis refused this command". */
const CONNECTION_ERRORS = [
  'ClientClosedError',
  'ClientOfflineError',
  'ConnectionTimeoutError',
  'SocketClosedUnexpectedlyError',
  'ReconnectStrategyError',
  'AbortError',
  'TimeoutError',
  // What calls waiting on a connection that StallWatch closed fail with.
  'DisconnectsClientError',
];

function isConnectionError(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: string; constructor?: { name?: string } };
  if (!e || typeof e !== 'object') return false;
  // node-redis errors keep name "Error": their class tells what happened.
  if (CONNECTION_ERRORS.includes(e.constructor?.name ?? '') || CONNECTION_ERRORS.includes(e.name ?? '')) return true;
  if (e.code && /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND)$/.test(e.code)) return true;
  // A full Redis (OOM with noeviction), a demoted primary (READONLY) or a cluster in flux: the store, not the request.
  return /^(CLUSTERDOWN|LOADING|MASTERDOWN|TRYAGAIN|OOM|READONLY|NOREPLICAS|BUSY)/.test(e.message ?? '') || /client is (offline|closed)|socket closed|connection timeout/i.test(e.message ?? '');
}

/**
 * The reply deadline. node-redis waits for a reply as long as the socket stays open, and a Redis
 * that stops answering without closing it (a paused process, a network path that drops packets)
 * left every call waiting until the request timeout, with more piling up behind. A timer per
 * command would cost about 14 µs each (see NO_QUEUE_TIMER); instead each call links itself into a
 * list while it waits, oldest first, and one timer a few times per deadline looks at the oldest.
 * Replies come in order on a connection, so a call waiting past the deadline means its
 * connection stalled; on a Cluster that may be one primary of several, which a count of replies
 * across all of them would not see.
 */
interface Waiter extends Linked<Waiter> {
  since: number;
}

class StallWatch {
  private readonly waiters = new LinkedList<Waiter>();
  /** Calls that began before the last stall are being failed by it; they do not count again. */
  private lastStall = -Infinity;
  private readonly timer: NodeJS.Timeout;

  constructor(deadlineMs: number, onStall: () => void) {
    const tick = Math.min(1000, Math.max(25, Math.floor(deadlineMs / 4)));
    this.timer = setInterval(() => {
      const now = performance.now();
      let oldest = this.waiters.head;
      while (oldest && oldest.since <= this.lastStall) oldest = oldest.next;
      if (oldest && now - oldest.since >= deadlineMs) {
        this.lastStall = now;
        onStall();
      }
    }, tick);
    this.timer.unref();
  }

  get waiting(): number {
    return this.waiters.size;
  }

  enter(): Waiter {
    return this.waiters.push({ since: performance.now(), prev: null, next: null });
  }

  leave(w: Waiter): void {
    this.waiters.remove(w);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export class RedisConn {
  private readonly watch: StallWatch | undefined;

  private constructor(
    private readonly client: RedisClientType | undefined,
    private readonly cluster: RedisClusterType | undefined,
    readonly description: string,
    target: RedisTarget,
  ) {
    const deadline = target.replyTimeoutMs ?? 0;
    if (deadline > 0) this.watch = new StallWatch(deadline, () => this.reopen(deadline, target.onWarning));
  }

  /** Closes a stalled connection, failing the calls waiting on it, and connects again. */
  private reopen(deadlineMs: number, onWarning: RedisTarget['onWarning']): void {
    onWarning?.(
      `A call to Redis (${this.description}) has waited ${deadlineMs} ms for its reply, with ${this.watch?.waiting ?? 0} calls waiting: the connection is closed (those calls answer 503) and opened again`,
    );
    const c = this.cluster ?? this.client!;
    c.destroy();
    // While it connects, calls are refused at once (no offline queue): 503, not another wait.
    c.connect().catch(() => undefined);
  }

  static async open(target: RedisTarget): Promise<RedisConn> {
    const onError = () => {
      // Connection errors surface on the commands that hit them (as 503); reconnects are automatic.
    };
    try {
      if (target.clusterUrls && target.clusterUrls.length > 0) {
        const cluster = createCluster({
          rootNodes: target.clusterUrls.map((url) => ({ url })),
          defaults: { socket: { connectTimeout: CONNECT_TIMEOUT_MS }, disableOfflineQueue: true },
          commandOptions: NO_QUEUE_TIMER,
        }) as unknown as RedisClusterType;
        cluster.on('error', onError);
        await within(cluster.connect(), () => cluster.destroy());
        return new RedisConn(undefined, cluster, `cluster ${target.clusterUrls.map(masked).join(',')}`, target);
      }
      const url = target.url ?? 'redis://127.0.0.1:6379';
      const client = createClient({ url, socket: { connectTimeout: CONNECT_TIMEOUT_MS }, disableOfflineQueue: true, commandOptions: NO_QUEUE_TIMER }) as unknown as RedisClientType;
      client.on('error', onError);
      await within(client.connect(), () => client.destroy());
      return new RedisConn(client, undefined, masked(url), target);
    } catch (e) {
      throw unavailable(e);
    }
  }

  get isCluster(): boolean {
    return this.cluster !== undefined;
  }

  /** Sends one command, routed (on a cluster) by `key`; undefined goes to any node. */
  async call<T extends Reply = Reply>(key: string | undefined, args: readonly string[], readonly = false): Promise<T> {
    const waiter = this.watch?.enter();
    try {
      if (this.cluster) return (await this.cluster.sendCommand(key, readonly, args as string[])) as T;
      return (await this.client!.sendCommand(args as string[])) as T;
    } catch (e) {
      throw isConnectionError(e) ? unavailable(e) : e;
    } finally {
      if (waiter) this.watch!.leave(waiter);
    }
  }

  /** Runs a script whose keys all share one slot (KEYS[1] routes it). */
  async run<T extends Reply = Reply>(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    // One array, filled in place: this runs for every request.
    const nk = keys.length;
    const cmd = new Array<string>(3 + nk + args.length);
    cmd[0] = 'EVALSHA';
    cmd[1] = script.sha;
    cmd[2] = String(nk);
    for (let i = 0; i < nk; i++) cmd[3 + i] = keys[i]!;
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      cmd[3 + nk + i] = typeof a === 'string' ? a : String(a);
    }
    try {
      return await this.call<T>(keys[0], cmd);
    } catch (e) {
      if (!String((e as Error)?.message).startsWith('NOSCRIPT')) throw e;
      // The first command was encoded and answered: its array can be reused.
      cmd[0] = 'EVAL';
      cmd[1] = script.source;
      return this.call<T>(keys[0], cmd);
    }
  }

  /** Loads scripts on every reachable primary, so the first requests do not pay the NOSCRIPT round trip. */
  async preload(scripts: readonly LuaScript[]): Promise<void> {
    const nodes: Array<Promise<{ sendCommand(args: string[]): Promise<unknown> }>> = this.cluster
      ? this.cluster.masters.map((m) => this.cluster!.nodeClient(m))
      : [Promise.resolve(this.client!)];
    await Promise.all(nodes.map(async (n) => Promise.all(scripts.map(async (s) => (await n).sendCommand(['SCRIPT', 'LOAD', s.source]))))).catch(() => undefined);
  }

  /** Runs one command on every primary (a single server is its own only primary). */
  async onPrimaries<T>(args: readonly string[]): Promise<Array<{ node: string; reply: T }>> {
    try {
      if (this.cluster) {
        return await Promise.all(
          this.cluster.masters.map(async (m) => ({ node: `${m.host}:${m.port}`, reply: (await (await this.cluster!.nodeClient(m)).sendCommand(args as string[])) as T })),
        );
      }
      return [{ node: this.description, reply: (await this.client!.sendCommand(args as string[])) as T }];
    } catch (e) {
      throw isConnectionError(e) ? unavailable(e) : e;
    }
  }

  /** PING every primary (readiness means every shard answers). */
  async ping(): Promise<void> {
    const waiter = this.watch?.enter();
    try {
      if (this.cluster) {
        const masters = this.cluster.masters;
        if (masters.length === 0) throw new Error('no cluster primaries known');
        await Promise.all(masters.map((m) => this.cluster!.nodeClient(m).then((c) => c.sendCommand(['PING']))));
      } else {
        await this.client!.sendCommand(['PING']);
      }
    } catch (e) {
      throw unavailable(e);
    } finally {
      if (waiter) this.watch!.leave(waiter);
    }
  }

  async close(): Promise<void> {
    this.watch?.stop();
    try {
      if (this.cluster) await this.cluster.close();
      else await this.client!.close();
    } catch {
      // already closed
    }
  }
}

/**
 * The score of the first member of a `ZRANGE ... WITHSCORES` reply, as a decimal string.
 * node-redis shapes this reply itself ([[member, score]]); a flat [member, score] is accepted too.
 */
export function firstScore(reply: unknown): string | undefined {
  if (!Array.isArray(reply) || reply.length === 0) return undefined;
  const first: unknown = reply[0];
  const score: unknown = Array.isArray(first) ? first[1] : reply[1];
  return score === undefined || score === null ? undefined : String(score);
}
