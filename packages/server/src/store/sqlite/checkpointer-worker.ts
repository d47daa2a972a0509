/**
 * The checkpointer thread (checkpointer.ts): its own connection to the store's file, copying the
 * WAL's committed pages back into the file every few milliseconds with PASSIVE checkpoints, which
 * never wait for and never block the connection that commits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointerData } from './checkpointer.js';

const port = parentPort!;
const { file, sync, intervalMs } = workerData as CheckpointerData;
// The file exists: the committing connection created it (and its schema) before starting this.
const db = new Database(file, { fileMustExist: true });
// A checkpoint fsyncs the WAL before copying from it and the file after, as the committing
// connection's own checkpoints do: what reaches the file is durable.
db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);

const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // A busy lock, a full disk or an I/O error: the next pass tries again, and meanwhile the
    // committing connection's own checkpoint window keeps the WAL bounded.
  }
}, intervalMs);

port.on('message', (m: unknown) => {
  if (m !== 'stop') return;
  clearInterval(timer);
  db.close();
  port.close();
});
