/**
 * What crosses between the request thread and the store thread (thread.ts, thread-worker.ts).
 * Values travel by structured clone; errors do not survive it with their class and fields, so
 * they are carried as plain data and rebuilt: a CyclesError with its code, details and status,
 * anything else as an Error of the same name, message and `code` (SQLite's result code, which
 * is how a failure of the database itself is told from a refused request).
 */
import { CyclesError, type ErrorCode } from '../../ledger/errors.js';
import type { EventRecord } from '../../events/model.js';

/** One store call: `ops` calls go to the backend's StoreOps, the others to the store. */
export interface Call {
  id: number;
  method: string;
  args: unknown[];
  ops?: true;
}

export type WireError =
  | { cycles: true; code: ErrorCode; message: string; details: Record<string, unknown> | undefined; status: number }
  | { cycles: false; name: string; message: string; code: unknown };

/** Messages from the store thread, sent in batches (one postMessage per turn of its loop). */
export type Reply =
  | { kind: 'ready' }
  | { kind: 'failed'; error: WireError }
  | { kind: 'result'; id: number; value: unknown }
  | { kind: 'error'; id: number; error: WireError }
  | { kind: 'events'; events: readonly EventRecord[] }
  | { kind: 'warning'; message: string };

export function toWire(err: unknown): WireError {
  if (err instanceof CyclesError) return { cycles: true, code: err.code, message: err.message, details: err.details, status: err.status };
  if (err instanceof Error) return { cycles: false, name: err.name, message: err.message, code: (err as Error & { code?: unknown }).code };
  return { cycles: false, name: 'Error', message: String(err), code: undefined };
}

export function fromWire(w: WireError): Error {
  if (w.cycles) return new CyclesError(w.code, w.message, w.details, w.status);
  const err = w.name === 'TypeError' ? new TypeError(w.message) : new Error(w.message);
  if (w.name !== 'TypeError') err.name = w.name;
  if (w.code !== undefined) (err as Error & { code?: unknown }).code = w.code;
  return err;
}
