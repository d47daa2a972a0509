import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Uniformly random base62 string (rejection sampling avoids modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

/** Tenant API keys look like cyc_live_<32 base62>, recognisable in logs and secret scanners. */
export const newApiKeySecret = (): string => `cyc_live_${randomBase62(32)}`;
export const API_KEY_PREFIX_LENGTH = 14;

/**
 * Keys are stored as HMAC-SHA-256 under a server pepper: fast enough for every request
 * (unlike bcrypt) and useless to an attacker who copies the database without the pepper.
 */
export const hashApiKey = (secret: string, pepper: string): string => createHmac('sha256', pepper).update(secret).digest('hex');

export const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Constant-time comparison of two hex digests of equal length. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}
