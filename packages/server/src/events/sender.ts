/**
 * One HTTP attempt of a webhook: POST the exact Event JSON, signed over those bytes.
 * Connections go only to addresses the SSRF policy admits (checked after DNS resolution),
 * redirects are not followed, and the response body is drained but never stored.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { addressAllowed, guardedLookup, type WebhookNetworkPolicy } from './ssrf.js';

export interface SendRequest {
  url: string;
  body: string;
  headers: Record<string, string>;
  timeoutMs: number;
  policy: WebhookNetworkPolicy;
}

export interface SendResult {
  ok: boolean;
  status?: number;
  timeMs: number;
  error?: string;
  /** Blocked by the SSRF guard: retrying cannot help. */
  blocked?: boolean;
}

export function send(req: SendRequest): Promise<SendResult> {
  const started = process.hrtime.bigint();
  const elapsed = () => Number((process.hrtime.bigint() - started) / 1_000_000n);
  return new Promise((resolve) => {
    let u: URL;
    try {
      u = new URL(req.url);
    } catch {
      resolve({ ok: false, timeMs: 0, error: 'invalid URL', blocked: true });
      return;
    }
    const host = u.hostname.replace(/^\[|\]$/g, '');
    // A literal IP skips DNS (and so the guarded lookup): judge it here.
    if (isIP(host) && !req.policy.allowedHosts.has(host) && !addressAllowed(host, req.policy)) {
      resolve({ ok: false, timeMs: 0, error: `SSRF guard: ${host} is a blocked address`, blocked: true });
      return;
    }
    const mod = u.protocol === 'https:' ? https : http;
    const body = Buffer.from(req.body, 'utf8');
    let settled = false;
    const done = (r: SendResult) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    const r = mod.request(
      u,
      {
        method: 'POST',
        headers: { ...req.headers, 'content-length': String(body.length) },
        lookup: guardedLookup(req.policy, host) as never,
        timeout: req.timeoutMs,
        agent: false,
      },
      (res) => {
        res.on('data', () => undefined);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          done({ ok: status >= 200 && status < 300, status, timeMs: elapsed(), error: status >= 200 && status < 300 ? undefined : `HTTP ${status}` });
        });
        res.on('error', (e) => done({ ok: false, status: res.statusCode, timeMs: elapsed(), error: e.message }));
      },
    );
    // The socket timeout is an idle timeout; this bounds the whole attempt, however slowly the receiver drips.
    const deadline = setTimeout(() => r.destroy(new Error(`timed out after ${req.timeoutMs} ms`)), req.timeoutMs);
    r.on('close', () => clearTimeout(deadline));
    r.on('timeout', () => r.destroy(new Error(`timed out after ${req.timeoutMs} ms`)));
    r.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, timeMs: elapsed(), error: e.message, blocked: e.code === 'ESSRFBLOCKED' }));
    r.end(body);
  });
}

export const newSpanId = (): string => {
  let s: string;
  do s = randomBytes(8).toString('hex');
  while (s === '0000000000000000');
  return s;
};
