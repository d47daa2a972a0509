/**
 * Structured logs (pino): JSON lines by default, human-readable when the output is a terminal
 * (or LOG_FORMAT=pretty). Request and response bodies are never logged.
 *
 * Two loggers share one destination. The process logger (everything but the access line)
 * redacts credentials: API keys, the admin key, key secrets, webhook signing secrets and
 * Authorization headers become "[REDACTED]" wherever they appear in a logged object, up to two
 * levels deep. Wildcard redaction costs about 100 µs a line, so the one-line-per-request access
 * log has its own logger without it: its fields are a fixed set of identifiers (request and
 * trace id, tenant, key id, route, status, duration), none of them a credential.
 */
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type PinoPretty from 'pino-pretty';
import type { Config } from '../config.js';

/**
 * pino-pretty (some thirty modules) is loaded only when the output is pretty: servers writing
 * JSON lines, the usual case, start without it. Loaded synchronously so createLoggers stays so.
 */
function loadPretty(): typeof PinoPretty {
  return createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
}

/** Field names that hold credentials; redacted at the top level and one or two levels down. */
const SECRET_FIELDS = [
  'key_secret',
  'signing_secret',
  'secret',
  'password',
  'token',
  'api_key',
  'apiKey',
  'adminApiKey',
  'admin_api_key',
  'keyPepper',
  'pepper',
  'authorization',
  'x-cycles-api-key',
  'x-admin-api-key',
  'cookie',
];

export const REDACT_PATHS: string[] = SECRET_FIELDS.flatMap((f) => {
  const key = /^[A-Za-z_$][\w$]*$/.test(f) ? f : `["${f}"]`;
  const dot = key.startsWith('[') ? key : `.${key}`;
  return [key.startsWith('[') ? key : f, `*${dot}`, `*.*${dot}`, `*.headers${dot}`, `headers${dot}`];
});

export interface LoggingOptions {
  /** Where lines go; defaults to stdout. Tests pass a stream to capture them. */
  destination?: DestinationStream | undefined;
}

export interface Loggers {
  /** The process logger (Fastify's, every module's), with credential redaction. */
  logger: Logger;
  /** The access log: one line per request, fixed identifier fields only, no redaction pass. */
  access: Logger;
}

/** The server's loggers, or undefined when LOG_LEVEL=silent. */
export function createLoggers(config: Config, opts: LoggingOptions = {}): Loggers | undefined {
  if (config.logLevel === 'silent') return undefined;
  const options: LoggerOptions = {
    level: config.logLevel,
    base: { service: 'cycles', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  const toTerminal = opts.destination === undefined && process.stdout.isTTY === true;
  const pretty = config.logFormat === 'pretty' || (config.logFormat === 'auto' && toTerminal);
  const stream: DestinationStream = pretty
    ? loadPretty()({ colorize: toTerminal, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service', destination: opts.destination ?? 1, sync: true })
    : (opts.destination ?? pino.destination({ dest: 1, sync: false }));
  return {
    logger: pino({ ...options, redact: { paths: REDACT_PATHS, censor: '[REDACTED]' } }, stream),
    access: pino(options, stream),
  };
}

/** The process logger alone (see createLoggers). */
export function createLogger(config: Config, opts: LoggingOptions = {}): Logger | undefined {
  return createLoggers(config, opts)?.logger;
}

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
type ChildOptions = { level?: string; serializers?: unknown } & Record<string, unknown>;
interface ParentLogger {
  level: string;
  child(bindings: Record<string, unknown>, options?: ChildOptions): unknown;
  isLevelEnabled?(level: string): boolean;
}

/**
 * The request logger (`req.log`), created on first use. Fastify builds a child logger for every
 * request, and pino passes the child's bindings through the redaction wildcards when it does:
 * a measurable part of a small request, for a logger that at the usual levels never writes (the
 * access line has its own logger). This stands in for that child and builds the real one, with
 * the same bindings and so the same redaction, the first time a call is at an enabled level.
 */
class DeferredChild {
  private real: Record<string, unknown> | undefined;

  constructor(
    private readonly parent: ParentLogger,
    private readonly bindings: Record<string, unknown>,
  ) {}

  private logger(): Record<string, unknown> {
    return (this.real ??= this.parent.child(this.bindings) as Record<string, unknown>);
  }

  private write(level: Level, args: unknown[]): void {
    if (this.real === undefined && this.parent.isLevelEnabled?.(level) === false) return;
    (this.logger()[level] as (...a: unknown[]) => void)(...args);
  }

  get level(): string {
    return this.real !== undefined ? (this.real.level as string) : this.parent.level;
  }

  set level(level: string) {
    this.logger().level = level;
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}

  child(bindings: Record<string, unknown>, options?: ChildOptions): unknown {
    return (this.logger().child as ParentLogger['child'])(bindings, options);
  }
}

/**
 * Fastify's childLoggerFactory: a deferred child (above), or the real child at once when the
 * route sets its own log level or serializers.
 */
export function deferredChildLogger(logger: unknown, bindings: Record<string, unknown>, opts: ChildOptions): unknown {
  const parent = logger as ParentLogger;
  if (opts.level !== undefined || opts.serializers !== undefined) return parent.child(bindings, opts);
  return new DeferredChild(parent, bindings);
}
