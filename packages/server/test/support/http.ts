/**
 * A small fetch wrapper for the property, crash and input suites. It never validates
 * anything on its own: tests assert on status, body and headers explicitly.
 */
import crypto from 'node:crypto';

// Response bodies are arbitrary JSON; tests index into them after asserting on status.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export const ADMIN_KEY = 'test-admin-key-0123456789';

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface RequestOptions {
  /** JSON body, serialised with JSON.stringify. */
  body?: unknown;
  /** Raw body, sent verbatim (Content-Type still defaults to application/json). */
  raw?: string;
  /** Content-Type to send; null sends none. Defaults to application/json when a body is sent. */
  contentType?: string | null;
  /** Tenant API key (X-Cycles-API-Key). */
  apiKey?: string;
  /** true sends the admin key (X-Admin-API-Key). */
  admin?: boolean;
  headers?: Record<string, string>;
  /** Abort after this many ms (default 15000). */
  timeoutMs?: number;
}

export interface Res {
  status: number;
  text: string;
  body: Json;
  headers: Headers;
}

export class Client {
  readonly base: string;
  constructor(base: string) {
    this.base = base.replace(/\/$/, '');
  }

  async request(method: Method, path: string, opts: RequestOptions = {}): Promise<Res> {
    const headers: Record<string, string> = { accept: 'application/json' };
    let payload: string | Blob | undefined;
    if (opts.raw !== undefined) payload = opts.raw;
    else if (opts.body !== undefined) payload = JSON.stringify(opts.body);
    if (payload !== undefined && opts.contentType !== null) headers['content-type'] = opts.contentType ?? 'application/json';
    // fetch labels a string body text/plain; an untyped Blob goes out with no Content-Type at all.
    if (typeof payload === 'string' && opts.contentType === null) payload = new Blob([payload]);
    if (opts.apiKey !== undefined) headers['x-cycles-api-key'] = opts.apiKey;
    if (opts.admin) headers['x-admin-api-key'] = ADMIN_KEY;
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
    const res = await fetch(this.base + path, {
      method,
      headers,
      body: payload,
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
    const text = await res.text();
    let body: Json = undefined;
    try {
      body = text.length > 0 ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    return { status: res.status, text, body, headers: res.headers };
  }

  get(path: string, opts: RequestOptions = {}): Promise<Res> {
    return this.request('GET', path, opts);
  }

  post(path: string, body: unknown, opts: RequestOptions = {}): Promise<Res> {
    return this.request('POST', path, { ...opts, body });
  }
}

/** Random lower-case id, valid as a tenant id (^[a-z0-9-]+$, 3-64 chars) and as a scope segment. */
export function uid(prefix = 't'): string {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

/** Random idempotency key. */
export function idem(prefix = 'k'): string {
  return `${prefix}_${crypto.randomUUID()}`;
}

export const show = (res: Res): string => `HTTP ${res.status} ${res.text.length > 600 ? res.text.slice(0, 600) + '…' : res.text}`;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
