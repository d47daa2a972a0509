/**
 * Checkpoints off the committing thread (CYCLES_SQLITE_CHECKPOINT_MS, every 50 ms by default).
 *
 * In WAL mode a commit appends pages to the WAL without an fsync (synchronous=NORMAL); a
 * checkpoint copies them back into the file and fsyncs both. Left to SQLite, the commit group
 * that crosses the WAL's checkpoint window does that work itself, and every request waiting on
 * the group waits for the fsyncs with it. Here a thread of its own runs PASSIVE checkpoints on a
 * second connection: they copy whatever the WAL holds without taking the write lock, so commits
 * go on meanwhile. Once a pass has copied everything, the next commit restarts the WAL from its
 * start. The committing connection keeps a checkpoint window of its own, ten times larger by
 * default, as the backstop for when the passes fall behind; if the thread stops, the store goes
 * back to SQLite's own window.
 *
 * An idle store is left alone: while nothing has been committed since a pass that copied
 * everything, the passes space out (nextPassDelay), so an idle server's thread wakes a few times a
 * second instead of twenty; the first pass that finds a commit returns to the interval.
 */
import type { Worker } from 'node:worker_threads';
import { startWorker } from './worker-start.js';

export interface CheckpointerData {
  file: string;
  sync: 'normal' | 'full';
  intervalMs: number;
}

export interface Checkpointer {
  /** The thread itself, for diagnostics and the tests (terminating it is how a failed one looks). */
  readonly thread: Worker;
  /** Closes the thread's connection (before the committing one closes, so the WAL can go). */
  stop(): Promise<void>;
}

/**
 * The longest wait between passes while the store is idle. A burst that starts just after a pass
 * writes this long before the next one: at about 20,000 WAL pages a second (ten thousand reserves
 * a second, about two pages each), 250 ms stays well inside the committing connection's
 * 10,000-page backstop.
 */
export const IDLE_PASS_MAX_MS = 250;

/** The wait before the next pass: doubled after an idle pass up to IDLE_PASS_MAX_MS, else the interval. */
export function nextPassDelay(current: number, idle: boolean, intervalMs: number): number {
  if (!idle) return intervalMs;
  return Math.max(intervalMs, Math.min(current * 2, IDLE_PASS_MAX_MS));
}

/** How long stop() waits for the thread to close its connection before terminating it. */
const STOP_GRACE_MS = 5_000;

/** Starts the thread; `onStopped` is told if it stops without being asked to (it failed). */
export function startCheckpointer(data: CheckpointerData, onStopped: (reason: string) => void): Checkpointer {
  const worker: Worker = startWorker('checkpointer-worker', data);
  // The thread never keeps the process alive: an unclosed store must not hang an exit.
  worker.unref();
  let stopping = false;
  const exited = new Promise<void>((resolve) => {
    let failure = '';
    worker.on('error', (e) => {
      failure = `${e.message}, `;
    });
    worker.on('exit', (code) => {
      if (!stopping) onStopped(`${failure}exit code ${code}`);
      resolve();
    });
  });
  return {
    thread: worker,
    async stop() {
      if (stopping) return exited;
      stopping = true;
      worker.postMessage('stop');
      const timer = setTimeout(() => void worker.terminate(), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}
