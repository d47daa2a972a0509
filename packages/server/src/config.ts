/**
 * Configuration comes from defaults, then an optional JSON file (CYCLES_CONFIG_FILE or
 * `cycles serve --config`), then the environment, then `cycles serve` flags. Every value is
 * validated at start and all problems are reported together rather than one at a time.
 *
 * One table (SETTINGS) describes every setting: its variable name, its field in Config, how it
 * parses, whether it is a secret. `cycles config` prints the same table with secrets masked.
 */
import { parseAllowList } from './events/ssrf.js';
import { readFileSync } from 'node:fs';

export type TrustProxy = boolean | number | string[];

export interface Config {
  port: number;
  host: string;
  store: 'sqlite' | 'redis' | 'postgres';
  dataDir: string;
  sqliteSync: 'normal' | 'full';
  /** SQLite's page cache per process, in MiB (its own default is 2 MiB). */
  sqliteCacheMb: number;
  /**
   * WAL pages at which a commit group checkpoints itself; unset: SQLite's 1,000, or 10,000 as
   * the backstop when the checkpointer thread is on.
   */
  sqliteCheckpointPages: number | undefined;
  /** Milliseconds between the checkpointer thread's passes; 0 = no thread (store/sqlite/checkpointer.ts). */
  sqliteCheckpointMs: number;
  /** Run the embedded store on a thread of its own (store/sqlite/thread.ts). */
  sqliteThread: boolean;
  /** postgres://user:password@host:port/database (CYCLES_STORE=postgres). */
  databaseUrl: string | undefined;
  /** Connections per server process to PostgreSQL. */
  pgPoolSize: number;
  /** PostgreSQL schema for the tables (created on migrate); unset = the connection's search_path. */
  pgSchema: string | undefined;
  /** Apply pending schema migrations at start; when false the server refuses an outdated schema. */
  migrateOnStart: boolean;
  /** redis://[user:password@]host:port[/db] of a single Redis server (CYCLES_STORE=redis). */
  redisUrl: string | undefined;
  /** Seed nodes of a Redis Cluster (CYCLES_STORE=redis); when set, REDIS_URL is not used. */
  redisClusterUrls: string[];
  /** Prefix of every Redis key, so several deployments can share one Redis. */
  redisPrefix: string;
  /** A Redis command waiting this long for its reply: the connection is closed and opened again (0: never). */
  redisReplyTimeoutMs: number;
  adminApiKey: string | undefined;
  /** Optional pepper for API-key hashes; when unset one is generated and kept in the store. */
  keyPepper: string | undefined;
  logLevel: string;
  /** json: one JSON object per line; pretty: human-readable; auto: pretty only on a terminal. */
  logFormat: 'auto' | 'json' | 'pretty';
  sweepIntervalMs: number;
  sweepBatchSize: number;
  bodyLimitBytes: number;
  reservationRetentionDays: number;
  /** Whether X-Forwarded-For is trusted for the client address (rate limits, audit source_ip). */
  trustProxy: TrustProxy;
  /** A request that has not been answered after this long gets 503. */
  requestTimeoutMs: number;
  /** How long a graceful shutdown waits for in-flight requests before closing connections. */
  shutdownTimeoutMs: number;
  rateLimitWindowMs: number;
  /** Requests per window per client address; 0 turns the limit off. */
  rateLimitPerIp: number;
  /** Requests per window per API key (the admin key counts as one key); 0 turns the limit off. */
  rateLimitPerKey: number;
  /** Failed authentications per window per client address before it is throttled; 0 = off. */
  authFailureLimit: number;
  /** none: /metrics is public; admin: it needs the admin key (X-Admin-API-Key or Bearer). */
  metricsAuth: 'none' | 'admin';
  /** Adds a tenant label to the domain counters (cardinality grows with tenants). */
  metricsTenantLabel: boolean;
  /** Origins allowed to call the API from a browser (the dashboard); empty = no CORS. */
  corsOrigins: string[];
  /** OTLP/HTTP endpoint for traces; unset = tracing off (and never loaded). */
  otlpEndpoint: string | undefined;
  otelServiceName: string;
  /** all: API and webhook dispatcher; api: no dispatcher; dispatcher: webhook delivery only. */
  role: 'all' | 'api' | 'dispatcher';
  /** Hosts and CIDRs webhooks may reach even when private or loopback (comma-separated). */
  webhookAllowedHosts: string;
  /** Allow plain-http webhook URLs to any permitted host (https is required otherwise). */
  webhookAllowHttp: boolean;
  /** base64 of 32 bytes; encrypts webhook secrets and headers at rest. Generated and stored when unset. */
  webhookEncryptionKey: string | undefined;
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  webhookPollMs: number;
  eventRetentionDays: number;
  deliveryRetentionDays: number;
  /** Audit entries of authenticated requests are kept this long. */
  auditRetentionDays: number;
  /** Audit entries of failed authentications are kept this long. */
  auditUnauthenticatedRetentionDays: number;
  /**
   * Also audit runtime calls (reserve, commit, release, extend, decide, events) made with tenant
   * API keys. Off by default: the reservations and the event stream already record them; runtime
   * calls made with the admin key and failed authentications are always audited.
   */
  auditRuntimeRequests: boolean;
  /**
   * How long a process may answer from its cached copy of an API key (ms); 0 = no cache. Changes
   * made in this process apply at once; changes made by another process sharing the store apply
   * within this bound.
   */
  apiKeyCacheTtlMs: number;
}

export const DEFAULTS: Config = {
  port: 7878,
  host: '0.0.0.0',
  store: 'sqlite',
  dataDir: './data',
  sqliteSync: 'normal',
  sqliteCacheMb: 8,
  sqliteCheckpointPages: undefined,
  sqliteCheckpointMs: 50,
  sqliteThread: true,
  databaseUrl: undefined,
  pgPoolSize: 10,
  pgSchema: undefined,
  migrateOnStart: true,
  redisUrl: undefined,
  redisClusterUrls: [],
  redisPrefix: 'cycles:',
  redisReplyTimeoutMs: 10_000,
  adminApiKey: undefined,
  keyPepper: undefined,
  logLevel: 'info',
  logFormat: 'auto',
  sweepIntervalMs: 1000,
  sweepBatchSize: 500,
  bodyLimitBytes: 64 * 1024,
  reservationRetentionDays: 30,
  trustProxy: false,
  requestTimeoutMs: 30_000,
  shutdownTimeoutMs: 30_000,
  rateLimitWindowMs: 60_000,
  rateLimitPerIp: 120_000,
  rateLimitPerKey: 60_000,
  authFailureLimit: 60,
  metricsAuth: 'none',
  metricsTenantLabel: false,
  corsOrigins: [],
  otlpEndpoint: undefined,
  otelServiceName: 'cycles',
  role: 'all',
  webhookAllowedHosts: '',
  webhookAllowHttp: false,
  webhookEncryptionKey: undefined,
  webhookTimeoutMs: 10_000,
  webhookConcurrency: 8,
  webhookPollMs: 500,
  eventRetentionDays: 90,
  deliveryRetentionDays: 14,
  auditRetentionDays: 400,
  auditUnauthenticatedRetentionDays: 30,
  auditRuntimeRequests: false,
  apiKeyCacheTtlMs: 1000,
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;
type Parse = (raw: string, name: string) => unknown;

export interface Setting {
  /** Variable name, in the environment and in the config file. */
  env: string;
  key: keyof Config;
  parse: Parse;
  secret?: boolean;
}

/** Thrown by a parser; collected into the ConfigError. */
class Problem extends Error {}

const int =
  (min: number, max: number): Parse =>
  (raw, name) => {
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(v) || v < min || v > max) throw new Problem(`${name} must be an integer between ${min} and ${max} (got "${raw}")`);
    return v;
  };

const oneOf =
  (allowed: readonly string[]): Parse =>
  (raw, name) => {
    if (!allowed.includes(raw)) throw new Problem(`${name} must be one of ${allowed.join(', ')} (got "${raw}")`);
    return raw;
  };

const text: Parse = (raw) => raw;

const bool: Parse = (raw, name) => {
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Problem(`${name} must be true or false (got "${raw}")`);
};

const trustProxy: Parse = (raw, name) => {
  const v = raw.trim();
  if (/^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  if (/^\d+$/.test(v)) return int(0, 100)(v, name);
  const list = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0 || list.some((s) => !/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(s))) {
    throw new Problem(`${name} must be true, false, a hop count, or a comma-separated list of addresses/CIDRs (got "${raw}")`);
  }
  return list;
};

const origins: Parse = (raw, name) => {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const o of list) {
    if (o === '*') continue;
    let ok = false;
    try {
      const u = new URL(o);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === o.replace(/\/$/, '');
    } catch {
      ok = false;
    }
    if (!ok) throw new Problem(`${name} must be a comma-separated list of origins such as https://dashboard.example.com (got "${o}")`);
  }
  return list.map((o) => o.replace(/\/$/, ''));
};

const url: Parse = (raw, name) => {
  try {
    const u = new URL(raw);
    if (u.protocol === 'http:' || u.protocol === 'https:') return raw.replace(/\/$/, '');
  } catch {
    // fall through
  }
  throw new Problem(`${name} must be an http(s) URL (got "${raw}")`);
};

const adminKey: Parse = (raw, name) => {
  if (raw.length < 16) throw new Problem(`${name} must be at least 16 characters`);
  return raw;
};

const allowList: Parse = (raw, name) => {
  try {
    parseAllowList(raw);
  } catch (e) {
    throw new Problem(`${name}: ${(e as Error).message.replace(/^WEBHOOK_ALLOWED_HOSTS: /, '')}`);
  }
  return raw;
};

const encryptionKey: Parse = (raw, name) => {
  if (Buffer.from(raw, 'base64').length !== 32) throw new Problem(`${name} must be the base64 encoding of exactly 32 bytes`);
  return raw;
};

const postgresUrl: Parse = (raw, name) => {
  if (!/^postgres(ql)?:\/\//.test(raw)) throw new Problem(`${name} must be a postgres:// or postgresql:// URL`);
  return raw;
};

const redisUrl: Parse = (raw, name) => {
  if (!/^rediss?:\/\/[^/]/.test(raw)) throw new Problem(`${name} must be a redis:// or rediss:// URL`);
  return raw;
};

const redisUrls: Parse = (raw, name) => {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const u of list) redisUrl(u, name);
  return list;
};

const redisPrefix: Parse = (raw, name) => {
  if (!/^[A-Za-z0-9:._-]{0,64}$/.test(raw)) throw new Problem(`${name} must be at most 64 of [A-Za-z0-9:._-] (no braces: they would change the Cluster hash tag)`);
  return raw;
};

const pgSchema: Parse = (raw, name) => {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(raw)) throw new Problem(`${name} must be a lower-case identifier (letters, digits, _) of at most 63 characters (got "${raw}")`);
  return raw;
};

/** Every setting, in the order `cycles config` prints them. */
export const SETTINGS: readonly Setting[] = [
  { env: 'PORT', key: 'port', parse: int(0, 65535) },
  { env: 'HOST', key: 'host', parse: text },
  { env: 'CYCLES_STORE', key: 'store', parse: oneOf(['sqlite', 'redis', 'postgres']) },
  { env: 'CYCLES_DATA_DIR', key: 'dataDir', parse: text },
  { env: 'CYCLES_SQLITE_SYNC', key: 'sqliteSync', parse: oneOf(['normal', 'full']) },
  { env: 'CYCLES_SQLITE_CACHE_MB', key: 'sqliteCacheMb', parse: int(1, 65_536) },
  { env: 'CYCLES_SQLITE_CHECKPOINT_PAGES', key: 'sqliteCheckpointPages', parse: int(100, 1_000_000) },
  { env: 'CYCLES_SQLITE_CHECKPOINT_MS', key: 'sqliteCheckpointMs', parse: int(0, 60_000) },
  { env: 'CYCLES_SQLITE_THREAD', key: 'sqliteThread', parse: bool },
  { env: 'DATABASE_URL', key: 'databaseUrl', parse: postgresUrl, secret: true },
  { env: 'PG_POOL_SIZE', key: 'pgPoolSize', parse: int(1, 1000) },
  { env: 'CYCLES_PG_SCHEMA', key: 'pgSchema', parse: pgSchema },
  { env: 'CYCLES_MIGRATE_ON_START', key: 'migrateOnStart', parse: bool },
  { env: 'REDIS_URL', key: 'redisUrl', parse: redisUrl, secret: true },
  { env: 'REDIS_CLUSTER_URLS', key: 'redisClusterUrls', parse: redisUrls, secret: true },
  { env: 'CYCLES_REDIS_PREFIX', key: 'redisPrefix', parse: redisPrefix },
  { env: 'CYCLES_REDIS_REPLY_TIMEOUT_MS', key: 'redisReplyTimeoutMs', parse: int(0, 600_000) },
  { env: 'ADMIN_API_KEY', key: 'adminApiKey', parse: adminKey, secret: true },
  { env: 'CYCLES_KEY_PEPPER', key: 'keyPepper', parse: text, secret: true },
  { env: 'LOG_LEVEL', key: 'logLevel', parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) },
  { env: 'LOG_FORMAT', key: 'logFormat', parse: oneOf(['auto', 'json', 'pretty']) },
  { env: 'CYCLES_SWEEP_INTERVAL_MS', key: 'sweepIntervalMs', parse: int(10, 3_600_000) },
  { env: 'CYCLES_SWEEP_BATCH_SIZE', key: 'sweepBatchSize', parse: int(1, 100_000) },
  { env: 'CYCLES_BODY_LIMIT_BYTES', key: 'bodyLimitBytes', parse: int(1024, 10 * 1024 * 1024) },
  { env: 'CYCLES_RESERVATION_RETENTION_DAYS', key: 'reservationRetentionDays', parse: int(1, 3650) },
  { env: 'CYCLES_TRUST_PROXY', key: 'trustProxy', parse: trustProxy },
  { env: 'CYCLES_REQUEST_TIMEOUT_MS', key: 'requestTimeoutMs', parse: int(100, 600_000) },
  { env: 'CYCLES_SHUTDOWN_TIMEOUT_MS', key: 'shutdownTimeoutMs', parse: int(0, 600_000) },
  { env: 'CYCLES_RATE_LIMIT_WINDOW_MS', key: 'rateLimitWindowMs', parse: int(1000, 3_600_000) },
  { env: 'CYCLES_RATE_LIMIT_PER_IP', key: 'rateLimitPerIp', parse: int(0, 100_000_000) },
  { env: 'CYCLES_RATE_LIMIT_PER_KEY', key: 'rateLimitPerKey', parse: int(0, 100_000_000) },
  { env: 'CYCLES_AUTH_FAILURE_LIMIT', key: 'authFailureLimit', parse: int(0, 1_000_000) },
  { env: 'METRICS_AUTH', key: 'metricsAuth', parse: oneOf(['none', 'admin']) },
  { env: 'CYCLES_METRICS_TENANT_LABEL', key: 'metricsTenantLabel', parse: bool },
  { env: 'DASHBOARD_CORS_ORIGIN', key: 'corsOrigins', parse: origins },
  { env: 'OTEL_EXPORTER_OTLP_ENDPOINT', key: 'otlpEndpoint', parse: url },
  { env: 'OTEL_SERVICE_NAME', key: 'otelServiceName', parse: text },
  { env: 'CYCLES_ROLE', key: 'role', parse: oneOf(['all', 'api', 'dispatcher']) },
  { env: 'WEBHOOK_ALLOWED_HOSTS', key: 'webhookAllowedHosts', parse: allowList },
  { env: 'WEBHOOK_ALLOW_HTTP', key: 'webhookAllowHttp', parse: bool },
  { env: 'WEBHOOK_SECRET_ENCRYPTION_KEY', key: 'webhookEncryptionKey', parse: encryptionKey, secret: true },
  { env: 'WEBHOOK_TIMEOUT_MS', key: 'webhookTimeoutMs', parse: int(100, 120_000) },
  { env: 'WEBHOOK_DISPATCH_CONCURRENCY', key: 'webhookConcurrency', parse: int(1, 256) },
  { env: 'WEBHOOK_DISPATCH_POLL_MS', key: 'webhookPollMs', parse: int(10, 60_000) },
  { env: 'EVENT_RETENTION_DAYS', key: 'eventRetentionDays', parse: int(1, 3650) },
  { env: 'DELIVERY_RETENTION_DAYS', key: 'deliveryRetentionDays', parse: int(1, 3650) },
  { env: 'AUDIT_RETENTION_DAYS', key: 'auditRetentionDays', parse: int(1, 36_500) },
  { env: 'AUDIT_RETENTION_UNAUTHENTICATED_DAYS', key: 'auditUnauthenticatedRetentionDays', parse: int(1, 36_500) },
  { env: 'AUDIT_RUNTIME_REQUESTS', key: 'auditRuntimeRequests', parse: bool },
  { env: 'API_KEY_CACHE_TTL_MS', key: 'apiKeyCacheTtlMs', parse: int(0, 60_000) },
];

/** The variable naming the optional JSON config file. */
export const CONFIG_FILE_VAR = 'CYCLES_CONFIG_FILE';

export type Source = 'default' | 'file' | 'env' | 'override';

export interface ResolvedConfig {
  config: Config;
  /** Where each setting's value came from. */
  sources: Record<keyof Config, Source>;
  file: string | undefined;
}

/** Reads the JSON config file: an object of the same variable names as the environment. */
function readConfigFile(path: string, problems: string[]): Env {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    problems.push(`${CONFIG_FILE_VAR}: cannot read ${path}: ${(e as Error).message}`);
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    problems.push(`${CONFIG_FILE_VAR}: ${path} must hold a JSON object of setting names to values`);
    return {};
  }
  const known = new Set(SETTINGS.map((s) => s.env));
  const out: Env = {};
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (!known.has(name)) {
      problems.push(`${path}: unknown setting "${name}"`);
      continue;
    }
    if (value === null) continue;
    if (Array.isArray(value) && value.every((v) => typeof v === 'string')) out[name] = value.join(',');
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') out[name] = String(value);
    else problems.push(`${path}: ${name} must be a string, number or boolean`);
  }
  return out;
}

/** Resolves every setting and remembers its source; throws ConfigError listing every problem. */
export function resolveConfig(env: Env = process.env, overrides: Partial<Config> = {}): ResolvedConfig {
  const problems: string[] = [];
  const file = env[CONFIG_FILE_VAR] || undefined;
  const fromFile = file ? readConfigFile(file, problems) : {};
  const config = { ...DEFAULTS } as Record<keyof Config, unknown>;
  const sources = Object.fromEntries(SETTINGS.map((s) => [s.key, 'default'])) as Record<keyof Config, Source>;
  for (const s of SETTINGS) {
    const fromEnv = env[s.env];
    const [raw, source]: [string | undefined, Source] =
      fromEnv !== undefined && fromEnv !== '' ? [fromEnv, 'env'] : fromFile[s.env] !== undefined && fromFile[s.env] !== '' ? [fromFile[s.env], 'file'] : [undefined, 'default'];
    if (raw === undefined) continue;
    try {
      config[s.key] = s.parse(raw, s.env);
      sources[s.key] = source;
    } catch (e) {
      if (!(e instanceof Problem)) throw e;
      problems.push(source === 'file' ? `${e.message} in ${file}` : e.message);
    }
  }
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    config[k as keyof Config] = v;
    sources[k as keyof Config] = 'override';
  }
  const c = config as unknown as Config;
  if (c.store === 'redis' && !c.redisUrl && c.redisClusterUrls.length === 0) {
    problems.push('CYCLES_STORE=redis needs REDIS_URL (redis://host:6379) or REDIS_CLUSTER_URLS (redis://node1:7001,redis://node2:7002,...)');
  }
  if (c.store === 'postgres' && !c.databaseUrl) problems.push('CYCLES_STORE=postgres needs DATABASE_URL (postgres://user:password@host:5432/database)');
  if (problems.length) throw new ConfigError(problems);
  return { config: c, sources, file };
}

/** Reads the documented environment variables (and the optional config file) over the defaults. */
export function configFromEnv(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  return resolveConfig(env, overrides).config;
}

/** Shows a secret only as set/unset: never any of its characters. */
export const MASK = '********';

/** The effective configuration as `NAME=value  # source` lines, secrets masked. */
export function describeConfig(resolved: ResolvedConfig): string[] {
  const lines: string[] = [];
  for (const s of SETTINGS) {
    const v = resolved.config[s.key];
    let shown: string;
    if (v === undefined || (Array.isArray(v) && v.length === 0)) shown = '';
    else if (s.secret) shown = MASK;
    else shown = Array.isArray(v) ? v.join(',') : String(v);
    const source = resolved.sources[s.key];
    const note = s.secret && v === undefined ? 'unset: generated on first start and kept in the store' : source;
    lines.push(`${s.env}=${shown}  # ${note}`);
  }
  return lines;
}
