/**
 * Random hex ids (request, trace, span, reservation, event and audit ids) drawn from a pooled
 * buffer of cryptographic randomness. `randomBytes(n)` per id costs a native call and a Buffer
 * allocation on every request, several times over; filling 8 KB at once with randomFillSync
 * and slicing it costs a fraction of that. Every byte comes from the same CSPRNG as before and
 * is handed out exactly once, so ids are as unpredictable and as unique as `randomBytes` ids.
 */
import { randomBytes, randomFillSync } from 'node:crypto';

const POOL_BYTES = 8192;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let offset = POOL_BYTES;

/** `bytes` random bytes as 2×`bytes` lower-case hex characters. */
export function randomHex(bytes: number): string {
  if (bytes > 256) return randomBytes(bytes).toString('hex');
  if (offset + bytes > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const start = offset;
  offset += bytes;
  return pool.toString('hex', start, offset);
}
