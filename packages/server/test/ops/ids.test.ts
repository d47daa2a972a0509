/**
 * Pooled random ids (src/ids.ts): the lengths and alphabet of randomBytes(n).toString('hex'),
 * no repeats across many pool refills, and every byte value reachable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomHex } from '../../src/ids.js';

test('hex of the requested length, lower-case, across pool refills', () => {
  for (const n of [6, 8, 12, 16, 32, 300]) {
    const id = randomHex(n);
    assert.match(id, new RegExp(`^[0-9a-f]{${2 * n}}$`), `randomHex(${n})`);
  }
});

test('no id repeats over several refills of the pool', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 20_000; i++) seen.add(randomHex(12));
  assert.equal(seen.size, 20_000);
  const bytes = new Set<string>();
  for (let i = 0; i < 6_000; i++) bytes.add(randomHex(1));
  assert.equal(bytes.size, 256, 'every byte value appears');
});
