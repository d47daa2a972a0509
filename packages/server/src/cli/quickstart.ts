import { randomUUID } from 'node:crypto';

interface Options {
  url: string;
  adminKey: string;
  tenant: string;
}

async function call(url: string, method: string, path: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(url + path, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
  return { status: res.status, body: json ?? {} };
}

function expect(step: string, res: { status: number; body: Record<string, unknown> }, ok: number[]) {
  if (!ok.includes(res.status)) {
    throw new Error(`${step} failed: HTTP ${res.status} ${res.body.error ?? ''} ${res.body.message ?? ''}`.trim());
  }
}

/** Provisions a demo tenant, key and budget, then runs one reserve -> commit to prove the loop. */
export async function runQuickstart({ url, adminKey, tenant }: Options): Promise<void> {
  const admin = { 'x-admin-api-key': adminKey };
  const log = (s: string) => process.stdout.write(s + '\n');

  const t = await call(url, 'POST', '/v1/admin/tenants', admin, { tenant_id: tenant, name: `Demo tenant ${tenant}` });
  expect('create tenant', t, [200, 201]);
  log(`tenant      ${tenant} (${t.status === 201 ? 'created' : 'already existed'})`);

  const k = await call(url, 'POST', '/v1/admin/api-keys', admin, { tenant_id: tenant, name: 'quickstart' });
  expect('create API key', k, [201]);
  const apiKey = k.body.key_secret as string;
  log(`api key     ${apiKey}   (shown once)`);

  const unit = 'USD_MICROCENTS';
  for (const [scope, amount] of [
    [`tenant:${tenant}`, 1_000_000_000],
    [`tenant:${tenant}/workspace:prod`, 100_000_000],
  ] as const) {
    const b = await call(url, 'POST', '/v1/admin/budgets', admin, { tenant_id: tenant, scope, unit, allocated: { unit, amount } });
    expect(`create budget ${scope}`, b, [201, 409]);
    log(`budget      ${scope}: ${amount} ${unit} (${b.status === 201 ? 'created' : 'already existed'})`);
  }

  const key = { 'x-cycles-api-key': apiKey };
  const subject = { tenant, workspace: 'prod', agent: 'quickstart' };
  const r = await call(url, 'POST', '/v1/reservations', key, {
    idempotency_key: `qs-reserve-${randomUUID()}`,
    subject,
    action: { kind: 'llm.completion', name: 'demo-model' },
    estimate: { unit, amount: 500_000 },
    ttl_ms: 30_000,
  });
  expect('reserve', r, [200]);
  log(`reserve     ${r.body.decision} ${r.body.reservation_id} (500000 held on ${(r.body.affected_scopes as string[]).join(', ')})`);

  const c = await call(url, 'POST', `/v1/reservations/${r.body.reservation_id as string}/commit`, key, {
    idempotency_key: `qs-commit-${randomUUID()}`,
    actual: { unit, amount: 420_000 },
  });
  expect('commit', c, [200]);
  log(`commit      ${c.body.status}: charged ${(c.body.charged as { amount: number }).amount}, released ${(c.body.released as { amount: number } | undefined)?.amount ?? 0}`);

  log('\nTry it yourself:\n');
  log(`  curl -s -H 'X-Cycles-API-Key: ${apiKey}' '${url}/v1/balances?tenant=${tenant}&include_children=true'`);
  log('');
  log(`  curl -s -X POST ${url}/v1/reservations -H 'Content-Type: application/json' -H 'X-Cycles-API-Key: ${apiKey}' \\`);
  log(`    -d '{"idempotency_key":"try-1","subject":{"tenant":"${tenant}","workspace":"prod"},"action":{"kind":"llm.completion","name":"demo"},"estimate":{"unit":"${unit}","amount":1000}}'`);
}
