/**
 * Webhook signing secrets and custom header values are encrypted at rest with AES-256-GCM.
 * The subscription id is bound as associated data, so a ciphertext copied onto another
 * subscription fails to decrypt instead of signing for it.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const VERSION = 'v1:';

export class SecretBox {
  private readonly key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error('webhook encryption key must be 32 bytes');
    this.key = key;
  }

  static fromBase64(b64: string): SecretBox {
    return new SecretBox(Buffer.from(b64, 'base64'));
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return VERSION + Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64');
  }

  /** Throws when the value was not sealed by this key for this context: callers fail closed. */
  open(sealed: string, context: string): string {
    if (!sealed.startsWith(VERSION)) throw new Error('unknown secret encoding');
    const raw = Buffer.from(sealed.slice(VERSION.length), 'base64');
    const iv = raw.subarray(0, 12);
    const tag = raw.subarray(raw.length - 16);
    const ct = raw.subarray(12, raw.length - 16);
    const decipher = createDecipheriv('aes-256-gcm', this.key, iv);
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ct), decipher.final()]).toString('utf8');
  }
}

/** whsec_ + 32 random bytes, base64url: what the server generates when none is given. */
export const newSigningSecret = (): string => `whsec_${randomBytes(32).toString('base64url')}`;
