/**
 * Webhook signatures: X-Cycles-Signature: sha256=<lowercase hex HMAC-SHA256 of the exact body
 * bytes>, keyed with the UTF-8 bytes of the subscription's signing secret.
 *
 * Receivers verify with `verifySignature(rawBody, header, secret)`, which compares in
 * constant time. Verify the raw bytes as received, before any JSON parsing.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-cycles-signature';

export function sign(body: string | Buffer, secret: string): string {
  return 'sha256=' + createHmac('sha256', Buffer.from(secret, 'utf8')).update(body).digest('hex');
}

export function verifySignature(body: string | Buffer, header: string | undefined | null, secret: string): boolean {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false;
  const given = header.slice('sha256='.length);
  if (!/^[0-9a-f]{64}$/.test(given)) return false;
  const expected = sign(body, secret).slice('sha256='.length);
  return timingSafeEqual(Buffer.from(given, 'hex'), Buffer.from(expected, 'hex'));
}
