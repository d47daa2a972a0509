/**
 * The idempotency payload hash. Stored records keep the hash of the request that created them,
 * so the hash of a given request must never change between server versions: a retry after an
 * upgrade would otherwise be refused as a different payload. The values below were computed by
 * the first implementation.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { canonicalJson, requestHash } from '../../src/ledger/ops/shared.js';

const body = {
  idempotency_key: 'k-1',
  subject: { tenant: 't1', workspace: 'w', z: undefined },
  action: { kind: 'llm', name: 'x', tags: ['b', 'a', { y: 2, x: [1, null, 'é"\\'] }] },
  estimate: { unit: 'TOKENS', amount: 100 },
  metadata: { ü: true, a: -0.5 },
};

describe('request hash', () => {
  test('canonical JSON sorts keys at every level, drops undefined members, keeps array order', () => {
    assert.equal(
      canonicalJson(body),
      '{"action":{"kind":"llm","name":"x","tags":["b","a",{"x":[1,null,"é\\"\\\\"],"y":2}]},"estimate":{"amount":100,"unit":"TOKENS"},"idempotency_key":"k-1","metadata":{"a":-0.5,"ü":true},"subject":{"tenant":"t1","workspace":"w"}}',
    );
    assert.equal(canonicalJson([]), '[]');
    assert.equal(canonicalJson({}), '{}');
    assert.equal(canonicalJson({ a: undefined }), '{}');
    assert.equal(canonicalJson('x'), '"x"');
    assert.equal(canonicalJson(undefined), 'null');
  });

  test('objects of any size come out in the default sort order', () => {
    for (const n of [2, 3, 16, 17, 40]) {
      const keys = Array.from({ length: n }, (_, i) => `${String.fromCharCode(0x7a - (i % 26))}${(i * 7919) % 97}é${i % 3 === 0 ? 'Z' : ''}`);
      const obj = Object.fromEntries(keys.map((k, i) => [k, i]));
      const expected = '{' + [...keys].sort().map((k) => `${JSON.stringify(k)}:${obj[k]}`).join(',') + '}';
      assert.equal(canonicalJson(obj), expected, `${n} keys`);
    }
  });

  test('hashes are those of earlier versions, and key order does not change them', () => {
    assert.equal(requestHash('reserve', body), '5b3c0f528f762da81a4c8452f26dec6ed138e4c0f451ec99fdb776444fac4850');
    assert.equal(
      requestHash('commit', { idempotency_key: 'c', actual: { unit: 'TOKENS', amount: 5 } }, 'rsv_1'),
      '42571de0cc7425ff94375b5935f8695509e89049cfbadd814a1b9420f5d2041b',
    );
    const reordered = { metadata: body.metadata, estimate: { amount: 100, unit: 'TOKENS' }, action: body.action, subject: body.subject, idempotency_key: 'k-1' };
    assert.equal(requestHash('reserve', reordered), requestHash('reserve', body));
    assert.notEqual(requestHash('release', body), requestHash('reserve', body));
    assert.notEqual(requestHash('commit', body, 'rsv_2'), requestHash('commit', body, 'rsv_1'));
  });
});
