/** Query-string parsing for the list and balance reads, with 400s that name the parameter. */
import { createHash } from 'node:crypto';
import { invalid } from '../ledger/errors.js';
import type { KeysetPosition } from '../store/types.js';

export type Query = Record<string, string | string[] | undefined>;

export function single(q: Query, name: string): string | undefined {
  const v = q[name];
  if (Array.isArray(v)) {
    if (v.length > 1) throw invalid(`Query parameter ${name} must be given once`, { field: name });
    return v[0];
  }
  return v;
}

export function limitParam(q: Query, max: number, fallback = 50): number {
  const raw = single(q, 'limit');
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < 1 || n > max) {
    throw invalid(`limit must be an integer between 1 and ${max}`, { field: 'limit' });
  }
  return n;
}

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** ISO-8601 date-time to epoch ms. Blank means unset (never a 400); malformed is a 400. */
export function dateParam(q: Query, name: string): number | undefined {
  const raw = single(q, name);
  if (raw === undefined || raw.trim() === '') return undefined;
  const ms = Date.parse(raw.trim());
  if (!ISO_DATE_TIME.test(raw.trim()) || Number.isNaN(ms)) {
    throw invalid(`${name} must be an ISO-8601 date-time such as 2026-01-31T12:00:00Z`, { field: name });
  }
  return ms;
}

export function windowParams(q: Query, fromName: string, toName: string): [number | undefined, number | undefined] {
  const from = dateParam(q, fromName);
  const to = dateParam(q, toName);
  if (from !== undefined && to !== undefined && from > to) throw invalid(`${fromName} must not be after ${toName}`, { field: fromName });
  return [from, to];
}

export function enumParam<T extends string>(q: Query, name: string, allowed: readonly T[]): T | undefined {
  const raw = single(q, name);
  if (raw === undefined || raw === '') return undefined;
  if (!allowed.includes(raw as T)) throw invalid(`${name} must be one of ${allowed.join(', ')}`, { field: name });
  return raw as T;
}

interface CursorBody {
  v: 1;
  h: string;
  k: string | number;
  i: string;
}

export const filterHash = (parts: unknown): string => createHash('sha256').update(JSON.stringify(parts)).digest('base64url').slice(0, 22);

/** Opaque cursor: the last row's keyset position bound to the hash of the query that produced it. */
export function encodeCursor(hash: string, pos: KeysetPosition): string {
  const body: CursorBody = { v: 1, h: hash, k: pos.value, i: pos.id };
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

export function decodeCursor(raw: string | undefined, hash: string): KeysetPosition | undefined {
  if (raw === undefined || raw === '') return undefined;
  let body: CursorBody;
  try {
    body = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as CursorBody;
  } catch {
    throw invalid('cursor is not valid', { field: 'cursor' });
  }
  if (!body || body.v !== 1 || typeof body.i !== 'string' || (typeof body.k !== 'string' && typeof body.k !== 'number')) {
    throw invalid('cursor is not valid', { field: 'cursor' });
  }
  if (body.h !== hash) {
    throw invalid('cursor does not belong to this query (filters, windows or sort changed); restart without a cursor', { field: 'cursor' });
  }
  return { value: body.k, id: body.i };
}
