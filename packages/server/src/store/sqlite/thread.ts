/**
 * The embedded store on a thread of its own (CYCLES_SQLITE_THREAD, on by default).
 *
 * better-sqlite3 is synchronous: in-process, every commit group (the ledger rules, the row
 * writes, the COMMIT) runs on the thread that also parses requests and writes replies, so a
 * 2-core machine answers on one core. Here the request thread keeps HTTP, validation and
 * authentication, and a worker thread owns the SQLite connection and runs the same SqliteStore:
 * the two halves of a request's work run on two cores at once.
 *
 * The calls made during one turn of the request thread's loop travel in messages of at most
 * CALLS_PER_MESSAGE calls; in the store thread, writes join whichever commit group is queued
 * there and reads wait for it (thread-worker.ts), and a reply leaves only after its group
 * committed. Every Store method (and the StoreOps gauges) is forwarded; the values are
 * structured-cloned, the errors rebuilt with their codes (wire.ts), so 503 mapping, readiness and
 * idempotency behave exactly as in-process.
 */
import type { EventRecord } from '../../events/model.js';
import type { StoreOps } from '../ops.js';
import type { Store } from '../types.js';
import { CyclesError } from '../../ledger/errors.js';
import { sqliteUnavailable } from './ops.js';
import type { SqliteOptions } from './store.js';
import { fromWire, type Call, type Reply } from './wire.js';
import { PendingCalls } from './pending-calls.js';
import { startWorker } from './worker-start.js';

export interface SqliteThreadOptions {
  dataDir: string;
  sync: SqliteOptions['sync'];
  cacheMb?: number | undefined;
  checkpointPages?: number | undefined;
  checkpointMs?: number | undefined;
  onEventsCommitted?: ((events: readonly EventRecord[]) => void) | undefined;
  /** Told when the store thread stops unexpectedly (logged as an error; readiness goes DOWN). */
  onError?: ((message: string) => void) | undefined;
  /** Told of a degradation the store recovers from by itself (SqliteOptions.onWarning). */
  onWarning?: ((message: string) => void) | undefined;
}

/**
 * Under load one turn of this loop reads dozens of requests. Sent in one message at the end of
 * the turn, they would leave the store thread idle while this thread parses all of them, and
 * this thread idle while the store thread commits them: the two cores would take turns. A
 * message leaves as soon as this many calls wait, so the store thread starts on the first while
 * this thread parses the rest; the calls that reach it while it works still join one group
 * there, so groups stay large. Eight measured best of 1, 4, 8, 16 and one message per turn
 * (docs/benchmarks.md, "What bought it").
 */
export const CALLS_PER_MESSAGE = 8;

interface Waiting {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** Starts the store thread; resolves once its store has opened the file (schema created or upgraded). */
export async function openSqliteThread(opts: SqliteThreadOptions): Promise<{ store: Store; ops: StoreOps }> {
  // Events cross the threads only when someone listens for them, as the store keeps them only then.
  const worker = startWorker('thread-worker', { dataDir: opts.dataDir, sync: opts.sync, cacheMb: opts.cacheMb, checkpointPages: opts.checkpointPages, checkpointMs: opts.checkpointMs, reportEvents: opts.onEventsCommitted !== undefined });
  const waiting = new PendingCalls<Waiting>();
  let nextId = 1;
  let queue: Call[] = [];
  let scheduled = false;
  let gone: Error | undefined;
  let closing: Promise<void> | undefined;

  const failAll = (err: Error) => {
    gone = err;
    for (const w of waiting.drain()) w.reject(err);
    worker.unref();
  };

  const ready = new Promise<void>((resolve, reject) => {
    worker.on('message', (batch: Reply[]) => {
      for (const m of batch) {
        switch (m.kind) {
          case 'result':
          case 'error': {
            const w = waiting.take(m.id);
            if (!w) break;
            // The thread keeps the process alive only while a call awaits it, as a socket would.
            if (waiting.size === 0) worker.unref();
            if (m.kind === 'result') w.resolve(m.value);
            else w.reject(fromWire(m.error));
            break;
          }
          case 'events':
            try {
              opts.onEventsCommitted?.(m.events);
            } catch {
              // An observer (metrics) must never fail a committed mutation.
            }
            break;
          case 'warning':
            opts.onWarning?.(m.message);
            break;
          case 'ready':
            resolve();
            break;
          case 'failed':
            reject(fromWire(m.error));
            break;
        }
      }
    });
    worker.on('error', (err) => {
      reject(err);
      opts.onError?.(`The store thread failed: ${err.message}`);
      failAll(new CyclesError('SERVICE_UNAVAILABLE', `The store thread failed (${err.message}); the store is unavailable`));
    });
    worker.on('exit', (code) => {
      reject(new Error(`the store thread exited with code ${code}`));
      if (!closing) opts.onError?.(`The store thread stopped (exit code ${code}); every store call now fails until the server restarts`);
      failAll(new CyclesError('SERVICE_UNAVAILABLE', closing ? 'The store is closed' : `The store thread stopped (exit code ${code}); the store is unavailable`));
    });
  });

  const send = () => {
    const calls = queue;
    queue = [];
    worker.postMessage(calls);
  };
  // At the end of the turn, or earlier once CALLS_PER_MESSAGE calls wait (see there): the end of
  // the turn then sends what came after, if anything.
  const flush = () => {
    scheduled = false;
    if (queue.length > 0) send();
  };
  const call = (method: string, args: unknown[], ops?: true): Promise<unknown> => {
    if (gone) return Promise.reject(gone);
    return new Promise((resolve, reject) => {
      const id = nextId++;
      if (waiting.size === 0) worker.ref();
      waiting.add(id, { resolve, reject });
      queue.push(ops ? { id, method, args, ops } : { id, method, args });
      if (queue.length >= CALLS_PER_MESSAGE) send();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
  };

  try {
    await ready;
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  worker.unref();

  const close = (): Promise<void> =>
    (closing ??= (async () => {
      try {
        // A thread that already stopped has nothing left to close.
        if (!gone) await call('close', []);
      } finally {
        await worker.terminate();
      }
    })());

  const methods = new Map<string | symbol, unknown>();
  const store = new Proxy({} as Store, {
    get(target, prop) {
      if (prop === 'kind') return 'sqlite';
      if (prop === 'close') return close;
      // The thread itself, for diagnostics and the store-failure tests (terminating it is how a
      // lost store looks in this mode).
      if (prop === 'thread') return worker;
      // Not a thenable: `await store` must not call into the thread.
      if (prop === 'then' || typeof prop === 'symbol') return undefined;
      // A method set on the object itself (tests that replace one) wins over the forwarded one.
      if (Object.prototype.hasOwnProperty.call(target, prop)) return (target as unknown as Record<string, unknown>)[prop];
      let fn = methods.get(prop);
      if (!fn) {
        fn = (...args: unknown[]) => call(prop, args);
        methods.set(prop, fn);
      }
      return fn;
    },
  });
  const ops: StoreOps = {
    snapshot: () => call('snapshot', [], true) as ReturnType<StoreOps['snapshot']>,
    earliestDueAt: () => call('earliestDueAt', [], true) as ReturnType<StoreOps['earliestDueAt']>,
    isUnavailable: sqliteUnavailable,
    probeWrite: () => call('probeWrite', [], true) as Promise<void>,
  };
  return { store, ops };
}
