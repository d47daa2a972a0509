import { startServer } from '../server.js';

/**
 * Runs the server until SIGTERM/SIGINT, then shuts down gracefully: new requests are refused,
 * in-flight ones finish (bounded by CYCLES_SHUTDOWN_TIMEOUT_MS), background workers stop, the
 * store closes. A second signal exits at once.
 */
export async function serve(env: Record<string, string | undefined>): Promise<void> {
  const server = await startServer({ env });
  if (server.adminKey) {
    // Shown exactly once: only its hash is kept.
    process.stderr.write(
      `\n  Generated admin API key (shown once, store it now):\n\n    ${server.adminKey}\n\n` +
        `  Use it as the X-Admin-API-Key header, or set ADMIN_API_KEY to choose your own.\n\n`,
    );
  }
  const log = server.app.log;
  log.info({ url: server.url, store: server.config.store, dataDir: server.config.dataDir }, 'cycles server ready');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, timeout_ms: server.config.shutdownTimeoutMs }, 'shutting down: draining in-flight requests');
    server.close().then(
      () => {
        log.info('shutdown complete');
        // Async log destinations must drain before the process ends.
        const flush = (log as { flush?: (cb: (err?: Error) => void) => void }).flush;
        if (flush) flush.call(log, () => process.exit(0));
        else process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
