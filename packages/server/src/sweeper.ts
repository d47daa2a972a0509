import type { FastifyBaseLogger } from 'fastify';
import type { Config } from './config.js';
import { reservationsExpired, sweeperLag, sweeperRunDuration, sweeperRuns } from './ops/metrics.js';
import type { StoreOps } from './store/ops.js';
import type { Store } from './store/types.js';

const PURGE_EVERY_MS = 60 * 60 * 1000;

/**
 * Background expiry: reservations past expires_at + grace return their hold to every scope.
 * A tick drains up to `sweepBatchSize` at a time and keeps going while full batches come back,
 * so a backlog clears quickly; retention purges run hourly. After each tick the lag (now minus
 * the due time of the oldest reservation still waiting) is published for alerting.
 */
export function startSweeper(store: Store, ops: StoreOps, config: Config, log: FastifyBaseLogger) {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let lastPurge = 0;

  const tick = async () => {
    const start = performance.now();
    try {
      let n: number;
      do {
        n = await store.expireDue(config.sweepBatchSize);
        if (n > 0) {
          reservationsExpired.inc(n);
          log.debug({ expired: n }, 'expired reservations');
        }
      } while (!stopped && n === config.sweepBatchSize);
      if (Date.now() - lastPurge > PURGE_EVERY_MS) {
        lastPurge = Date.now();
        await store.purge(config.reservationRetentionDays * 86_400_000);
        await store.purgeEvents(config.eventRetentionDays * 86_400_000, config.deliveryRetentionDays * 86_400_000);
      }
      sweeperRuns.inc({ outcome: 'ok' });
    } catch (err) {
      sweeperRuns.inc({ outcome: 'error' });
      log.warn({ err }, 'expiry sweep failed; will retry');
    } finally {
      sweeperRunDuration.observe((performance.now() - start) / 1000);
    }
    try {
      // Also after a failed sweep: the lag keeps growing while expiry is stuck.
      const due = await ops.earliestDueAt();
      sweeperLag.set(due === undefined ? 0 : Math.max(0, Date.now() - due) / 1000);
    } catch {
      // The store is down; cycles_store_up says so.
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = tick().finally(schedule);
    }, config.sweepIntervalMs);
    timer.unref();
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
