import { createHash, createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

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
export function hashApiKey(secret: string, pepper: string): string {
  return createHmac('sha256', pepperKey(pepper)).update(secret).digest('hex');
}

/**
 * The pepper imported once as a KeyObject: createHmac with a string key imports it on every
 * call, which is most of the cost of hashing a short secret. Same bytes (UTF-8), same digest.
 */
let lastPepper: { pepper: string; key: KeyObject } | undefined;
function pepperKey(pepper: string): KeyObject {
  if (lastPepper?.pepper !== pepper) lastPepper = { pepper, key: createSecretKey(Buffer.from(pepper, 'utf8')) };
  return lastPepper.key;
}

export const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Constant-time comparison of two hex digests of equal length. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}
