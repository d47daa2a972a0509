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
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import pinoPretty from 'pino-pretty';
import type { Config } from '../config.js';

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
    ? pinoPretty({ colorize: toTerminal, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service', destination: opts.destination ?? 1, sync: true })
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
