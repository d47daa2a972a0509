/**
 * The store thread (thread.ts): owns the SQLite connection and runs every store call it is sent.
 * The writes that arrive before the queued commit group runs join it, as the calls of one turn
 * of the loop do in-process; replies (and the events a group committed, ahead of its results)
 * go back in one message per turn of this thread's loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { sqliteOps } from './ops.js';
import { SqliteStore, type SqliteOptions } from './store.js';
import { toWire, type Call, type Reply } from './wire.js';

const port = parentPort!;
let outbox: Reply[] = [];
let scheduled = false;

function send(reply: Reply): void {
  outbox.push(reply);
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    const batch = outbox;
    outbox = [];
    port.postMessage(batch);
  });
}

type Target = Record<string, (...args: unknown[]) => unknown>;

/** Calls that only read (the Store's get/list/find/query methods, the gauges, the probes), and
 * `pragma`, which runs between groups like them. */
const READS = /^(get|list|find|query)[A-Z]|^(overview|ping|snapshot|earliestDueAt|pragma)$/;

try {
  const { reportEvents, ...opts } = workerData as Omit<SqliteOptions, 'onEventsCommitted' | 'onWarning' | 'clock'> & { reportEvents: boolean };
  const store = new SqliteStore({
    ...opts,
    onEventsCommitted: reportEvents ? (events) => send({ kind: 'events', events }) : undefined,
    onWarning: (message) => send({ kind: 'warning', message }),
  });
  const ops = sqliteOps(store);
  const invoke = (call: Call): void => {
    const target = (call.ops ? ops : store) as unknown as Target;
    let result: Promise<unknown>;
    try {
      const fn = target[call.method];
      if (typeof fn !== 'function') throw new TypeError(`the store has no method ${call.method}`);
      result = Promise.resolve(fn.apply(target, call.args));
    } catch (e) {
      result = Promise.reject(e);
    }
    result.then(
      (value) => send({ kind: 'result', id: call.id, value }),
      (e: unknown) => send({ kind: 'error', id: call.id, error: toWire(e) }),
    );
  };
  // Writes run as they arrive: those of every message that arrives before the queued group runs
  // join it, so groups are as large as in-process. A read must not overtake a write sent before
  // it that still waits for its group (an audit row queued as a reply left, then the client's
  // next request reading it): while a group is queued, reads wait for it, in order. In-process
  // the loop's phases give that order; here it is explicit.
  let parked: Call[] = [];
  const runParked = () => {
    const calls = parked;
    parked = [];
    for (const call of calls) invoke(call);
  };
  port.on('message', (calls: Call[]) => {
    for (const call of calls) {
      if (!READS.test(call.method)) {
        invoke(call);
        continue;
      }
      if (parked.length > 0) {
        parked.push(call);
        continue;
      }
      const queued = store.afterQueued();
      if (!queued) {
        invoke(call);
        continue;
      }
      parked.push(call);
      void queued.then(runParked);
    }
  });
  port.postMessage([{ kind: 'ready' }] satisfies Reply[]);
} catch (e) {
  port.postMessage([{ kind: 'failed', error: toWire(e) }] satisfies Reply[]);
}
