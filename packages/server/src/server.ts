import { createRequire } from 'node:module';
import type { FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import { configFromEnv, type Config } from './config.js';
import { instrumentStore, StoreHealth } from './ops/instrumented-store.js';
import { createLoggers } from './ops/logging.js';
import { countCommittedEvents, countWebhookOutcome } from './ops/observe.js';
import type { Tracing } from './ops/tracing.js';
import type { ValidatorFactory } from './http/validators.js';
import { ApiKeyCache } from './security/key-cache.js';
import { randomBase62, sha256Hex } from './security/keys.js';
import type { StoreOps } from './store/ops.js';
import { sqliteOps } from './store/sqlite/ops.js';
import { openSqliteThread } from './store/sqlite/thread.js';
import type { Store } from './store/types.js';
import { startSweeper } from './sweeper.js';
import { randomBytes } from 'node:crypto';
import { startDispatcher } from './events/dispatcher.js';
import { SecretBox } from './events/secrets.js';
import { parseAllowList } from './events/ssrf.js';
import { WebhookSecurity } from './events/webhook-security.js';

export interface StartOptions {
  config?: Partial<Config>;
  /** false disables logging (tests); defaults to pino at config.logLevel. */
  logger?: boolean;
  /** Where log lines go instead of stdout (tests capture them to scan for secrets). */
  logStream?: DestinationStream;
  env?: Record<string, string | undefined>;
  /** How route schemas become validators (the build's precompile step collects them here). */
  buildValidator?: ValidatorFactory;
}

/** A loop that runs beside the HTTP server (sweeper, webhook dispatcher) and stops on close. */
export interface BackgroundWorker {
  name: string;
  stop(): Promise<void>;
}

export interface RunningServer {
  app: FastifyInstance;
  /** The store as handlers see it: timed, traced, failures classified. */
  store: Store;
  /** The backend itself (fault-injection tests reach through it). */
  backend: Store;
  config: Config;
  url: string;
  port: number;
  /** Plaintext admin key, only when this start generated it (first start without ADMIN_API_KEY). */
  adminKey: string | undefined;
  /**
   * Graceful stop: refuse new requests (503 on open connections), finish those in flight (up to
   * CYCLES_SHUTDOWN_TIMEOUT_MS, then connections are closed), stop background workers, close the
   * store, flush traces. Idempotent.
   */
  close(): Promise<void>;
}

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface OpenedStore {
  store: Store;
  ops: StoreOps;
}

/**
 * Opens the configured backend with its StoreOps. The Redis and PostgreSQL backends plug in
 * here: each brings its Store and its StoreOps (gauges, earliest due reservation, what counts
 * as "unavailable"); metrics, tracing, 503 mapping and readiness then work unchanged.
 */
export async function openStore(
  config: Config,
  hooks: { onEventsCommitted?: (events: readonly import('./events/model.js').EventRecord[]) => void; onError?: (message: string) => void; onWarning?: (message: string) => void } = {},
): Promise<OpenedStore> {
  switch (config.store) {
    case 'sqlite': {
      const sqlite = { dataDir: config.dataDir, sync: config.sqliteSync, cacheMb: config.sqliteCacheMb, checkpointPages: config.sqliteCheckpointPages, checkpointMs: config.sqliteCheckpointMs, onEventsCommitted: hooks.onEventsCommitted, onWarning: hooks.onWarning };
      if (config.sqliteThread) return openSqliteThread({ ...sqlite, onError: hooks.onError });
      const { SqliteStore } = await import('./store/sqlite/store.js');
      const store = new SqliteStore(sqlite);
      return { store, ops: sqliteOps(store) };
    }
    case 'postgres': {
      // The networked backends and their client libraries (several hundred modules for Redis)
      // are loaded only when configured: the embedded store starts without them.
      const [{ PostgresStore }, { postgresOps }] = await Promise.all([import('./store/postgres/store.js'), import('./store/postgres/ops.js')]);
      // Connects and applies pending migrations on first use (startServer's first call).
      const store = new PostgresStore({
        url: config.databaseUrl!,
        poolSize: config.pgPoolSize,
        schema: config.pgSchema,
        migrate: config.migrateOnStart,
        onEventsCommitted: hooks.onEventsCommitted,
      });
      return { store, ops: postgresOps(store) };
    }
    case 'redis': {
      const [{ RedisStore }, { redisOps }] = await Promise.all([import('./store/redis/store.js'), import('./store/redis/ops.js')]);
      // Connects on first use (startServer's first call); every script is loaded then.
      const store = new RedisStore({
        url: config.redisUrl,
        clusterUrls: config.redisClusterUrls,
        prefix: config.redisPrefix,
        replyTimeoutMs: config.redisReplyTimeoutMs,
        onEventsCommitted: hooks.onEventsCommitted,
        onWarning: hooks.onWarning,
      });
      return { store, ops: redisOps(store) };
    }
    default:
      throw new Error(`store ${config.store} is not available`);
  }
}

/**
 * The admin key is either configured (ADMIN_API_KEY) or generated once on first start;
 * only its SHA-256 is kept, in the store, so every process sharing the store accepts it.
 */
async function adminKeyHash(store: Store, config: Config): Promise<{ hash: string; generated: string | undefined }> {
  if (config.adminApiKey) return { hash: sha256Hex(config.adminApiKey), generated: undefined };
  const existing = await store.getMeta('admin_key_sha256');
  if (existing) return { hash: existing, generated: undefined };
  const key = `cyc_admin_${randomBase62(40)}`;
  const stored = await store.putMetaIfAbsent('admin_key_sha256', sha256Hex(key));
  return stored === sha256Hex(key) ? { hash: stored, generated: key } : { hash: stored, generated: undefined };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const config = configFromEnv(options.env ?? process.env, options.config ?? {});
  const loggers = options.logger === false ? undefined : createLoggers(config, { destination: options.logStream });
  const logger = loggers?.logger;
  // Tracing is loaded only when configured: no OpenTelemetry code runs otherwise.
  const tracing: Tracing | undefined = config.otlpEndpoint ? await (await import('./ops/tracing.js')).startTracing(config) : undefined;
  // The store starts opening first; the HTTP layer (Fastify, Ajv, the routes: most of the
  // modules a start loads) is loaded while it does. With the store thread, the SQLite
  // connection opens on the other core in the meantime, instead of after the imports.
  const opening = openStore(config, { onEventsCommitted: countCommittedEvents(config.metricsTenantLabel), onError: (message) => logger?.error(message), onWarning: (message) => logger?.warn(message) });
  const http = import('./http/app.js');
  // Awaited only after the store opened; a store that fails to open must not leave it unhandled.
  http.catch(() => undefined);
  const opened = await opening;
  const backend = opened.store;
  const health = new StoreHealth();
  const keyCache = config.apiKeyCacheTtlMs > 0 ? new ApiKeyCache({ ttlMs: config.apiKeyCacheTtlMs }) : undefined;
  const store = instrumentStore(backend, { ops: opened.ops, health, tracer: tracing?.tracer, keyCache });
  try {
    const admin = await adminKeyHash(store, config);
    const pepper = config.keyPepper ?? (await store.putMetaIfAbsent('api_key_pepper', randomBase62(48)));
    const box = SecretBox.fromBase64(config.webhookEncryptionKey ?? (await store.putMetaIfAbsent('webhook_encryption_key', randomBytes(32).toString('base64'))));
    const security = new WebhookSecurity(store, parseAllowList(config.webhookAllowedHosts, config.webhookAllowHttp));
    let dispatcher: ReturnType<typeof startDispatcher> | undefined;
    const { buildApp } = await http;
    const app = await buildApp({
      webhooks: { box, security, testTimeoutMs: config.webhookTimeoutMs, kick: () => dispatcher?.kick() },
      config,
      store,
      secrets: { adminKeyHash: admin.hash, pepper },
      logger: logger ?? false,
      accessLog: loggers?.access,
      storeOps: opened.ops,
      storeHealth: health,
      keyCache,
      tracing,
      version: VERSION,
      buildValidator: options.buildValidator,
    });
    await app.listen({ port: config.port, host: config.host });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const workers: BackgroundWorker[] = [];
    if (config.role !== 'dispatcher') workers.push({ name: 'sweeper', ...startSweeper(store, opened.ops, config, app.log) });
    if (config.role !== 'api') {
      dispatcher = startDispatcher({
        store,
        box,
        policy: () => security.sendPolicy(),
        log: app.log,
        concurrency: config.webhookConcurrency,
        pollMs: config.webhookPollMs,
        timeoutMs: config.webhookTimeoutMs,
        onOutcome: countWebhookOutcome,
      });
      workers.push({ name: 'webhook-dispatcher', stop: dispatcher.stop });
    }
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        // Stop accepting and drain in-flight requests, bounded by the shutdown timeout.
        const drained = app.close();
        const timedOut = await Promise.race([drained.then(() => false), sleep(config.shutdownTimeoutMs).then(() => true)]);
        if (timedOut) {
          app.log.warn({ timeout_ms: config.shutdownTimeoutMs }, 'shutdown: in-flight requests did not finish in time; closing connections');
          app.server.closeAllConnections();
          await drained;
        }
        await Promise.all(workers.map((w) => w.stop()));
        await store.close();
        await tracing?.shutdown().catch((err: unknown) => app.log.warn({ err }, 'shutdown: trace export failed'));
        logger?.flush();
      })());
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    return { app, store, backend, config, url: `http://${host}:${port}`, port, adminKey: admin.generated, close };
  } catch (e) {
    await backend.close();
    await tracing?.shutdown().catch(() => undefined);
    throw e;
  }
}
