/**
 * CyclesEvidence (MAY). The public endpoints must answer with the declared shapes even when
 * evidence is not emitted; when a response carries cycles_evidence, the envelope must be
 * retrievable and content-addressed (evidence_id = sha256(JCS(envelope with evidence_id and
 * signature set to ""))). Spec: getEvidence, getEvidenceJwks, CyclesEvidenceRef; cycles-evidence-v0.2.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startTestServer, waitFor, type Json, type TestServer } from '../helpers/harness.js';
import { expectError, expectStatus, newTenant, reserve, reserveBody } from '../helpers/runtime.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer();
});
after(async () => {
  await srv?.close();
});

/** RFC 8785 canonical JSON for the value space used by envelopes (strings, integers, objects, arrays). */
function jcs(v: Json): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(jcs).join(',')}]`;
  const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(',')}}`;
}

test('getEvidence is public: an unknown evidence_id is 404 NOT_FOUND without any API key', async () => {
  const res = await srv.call('GET', `/v1/evidence/${'ab'.repeat(32)}`);
  expectError(res, 404, 'NOT_FOUND');
});

test('getEvidenceJwks is public: 200 with a key set, or 404 when not published', async () => {
  const res = await srv.call('GET', '/v1/.well-known/cycles-jwks.json');
  assert.ok(res.status === 200 || res.status === 404, `unexpected ${res.status} ${res.text}`);
  if (res.status === 404) expectError(res, 404, 'NOT_FOUND');
  else assert.ok(Array.isArray(res.body.keys));
});

test('when a reserve response carries cycles_evidence, the envelope is retrievable and content-addressed', async (t) => {
  const ctx = await newTenant(srv, [{ at: '', allocated: 100 }]);
  const r = expectStatus(await reserve(srv, ctx.key, reserveBody({ tenant: ctx.tenant }, 1)), 200);
  if (r.cycles_evidence === undefined) {
    t.skip('evidence emission is disabled (MAY)');
    return;
  }
  const ref = r.cycles_evidence as { evidence_id: string; cycles_evidence_url: string };
  const path = new URL(ref.cycles_evidence_url).pathname;
  const env = await waitFor(async () => {
    const res = await srv.call('GET', path);
    return res.status === 200 ? (res.body as Json) : undefined;
  }, 5000);
  assert.equal(env.evidence_id, ref.evidence_id);
  assert.equal(env.artifact_type, 'reserve');
  assert.equal(env.payload?.reserve?.response?.remaining_ttl_ms, undefined, 'remaining_ttl_ms is not attested');
  assert.equal(env.payload?.reserve?.response?.cycles_evidence, undefined, 'cycles_evidence is not attested');
  const hash = crypto.createHash('sha256').update(jcs({ ...env, evidence_id: '', signature: '' })).digest('hex');
  assert.equal(hash, env.evidence_id);
});
