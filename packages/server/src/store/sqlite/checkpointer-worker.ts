/**
 * The checkpointer thread (checkpointer.ts): its own connection to the store's file, copying the
 * WAL's committed pages back into the file every few milliseconds with PASSIVE checkpoints, which
 * never wait for and never block the connection that commits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { nextPassDelay, type CheckpointerData } from './checkpointer.js';

const port = parentPort!;
const { file, sync, intervalMs } = workerData as CheckpointerData;
// The file exists: the committing connection created it (and its schema) before starting this.
const db = new Database(file, { fileMustExist: true });
// A checkpoint fsyncs the WAL before copying from it and the file after, as the committing
// connection's own checkpoints do: what reaches the file is durable.
db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);

interface PassResult {
  busy: number;
  log: number;
  checkpointed: number;
}

/** Changes whenever another connection (the committing one, or another process's) commits. */
let seenVersion = -1;
/** Whether the last pass copied everything the WAL held. */
let caughtUp = false;
let delay = intervalMs;
let timer: NodeJS.Timeout | undefined;

const pass = (): void => {
  let idle = false;
  try {
    const version = db.pragma('data_version', { simple: true }) as number;
    // Nothing committed since a pass that copied everything: there is nothing to copy.
    idle = caughtUp && version === seenVersion;
    if (!idle) {
      seenVersion = version;
      const [r] = db.pragma('wal_checkpoint(PASSIVE)') as PassResult[];
      caughtUp = r !== undefined && r.busy === 0 && r.checkpointed === r.log;
    }
  } catch {
    // A busy lock, a full disk or an I/O error: the next pass tries again, and meanwhile the
    // committing connection's own checkpoint window keeps the WAL bounded.
    caughtUp = false;
  }
  delay = nextPassDelay(delay, idle, intervalMs);
  timer = setTimeout(pass, delay);
};
timer = setTimeout(pass, delay);

port.on('message', (m: unknown) => {
  if (m !== 'stop') return;
  clearTimeout(timer);
  db.close();
  port.close();
});
