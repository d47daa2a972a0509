import { createHash, randomBytes, timingSafeEqual, type Hash } from 'node:crypto';

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
  const pads = padsFor(pepper);
  const inner = pads.inner.copy().update(secret).digest();
  return pads.outer.copy().update(inner).digest('hex');
}

/**
 * HMAC-SHA-256 (RFC 2104) with the pepper's two padded key blocks hashed once: each key hash
 * then continues from copies of those states, instead of createHmac importing the key and
 * hashing both blocks again on every request. The digest is the same as createHmac's.
 */
let lastPads: { pepper: string; inner: Hash; outer: Hash } | undefined;
function padsFor(pepper: string): { inner: Hash; outer: Hash } {
  if (lastPads?.pepper === pepper) return lastPads;
  let key = Buffer.from(pepper, 'utf8');
  if (key.length > 64) key = createHash('sha256').update(key).digest();
  const ipad = Buffer.alloc(64, 0x36);
  const opad = Buffer.alloc(64, 0x5c);
  for (let i = 0; i < key.length; i++) {
    ipad[i]! ^= key[i]!;
    opad[i]! ^= key[i]!;
  }
  lastPads = { pepper, inner: createHash('sha256').update(ipad), outer: createHash('sha256').update(opad) };
  return lastPads;
}

export const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Constant-time comparison of two hex digests of equal length. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}
