/** Provisioning through the governance API: tenants, their API keys and a budget at every scope. */

export const UNIT = 'TOKENS';
/** Large enough that no run can exhaust it, small enough to stay exact (< 2^53). */
export const ALLOCATED = 1_000_000_000_000_000;

const LEVELS = ['tenant', 'workspace', 'app', 'workflow', 'agent', 'toolset'] as const;
const LEVEL_IDS = ['', 'w1', 'a2', 'f3', 'g4', 's5'] as const;

/** What the harness expects each of a tenant's scopes to hold, from the operations it saw succeed. */
export interface Tally {
  reserved: number;
  spent: number;
}

export interface Tenant {
  id: string;
  apiKey: string;
  depth: number;
  /** The subject every request of this tenant names: one scope chain of `depth` levels. */
  subject: Record<string, string>;
  subjectJson: string;
  /** The chain's scopes, root first, each with a budget. */
  scopes: string[];
  headers: Record<string, string>;
  tally: Tally;
}

export function subjectAt(tenantId: string, depth: number): { subject: Record<string, string>; scopes: string[] } {
  const subject: Record<string, string> = {};
  const scopes: string[] = [];
  let path = '';
  for (let i = 0; i < depth; i++) {
    const level = LEVELS[i]!;
    const id = i === 0 ? tenantId : LEVEL_IDS[i]!;
    subject[level] = id;
    path = path ? `${path}/${level}:${id}` : `${level}:${id}`;
    scopes.push(path);
  }
  return { subject, scopes };
}

export class Admin {
  constructor(readonly url: string, private readonly adminKey: string) {}

  async post(path: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(this.url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-admin-api-key': this.adminKey },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`POST ${path} answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as Record<string, unknown>;
  }

  async tenant(id: string, depth: number): Promise<Tenant> {
    await this.post('/v1/admin/tenants', { tenant_id: id, name: `bench ${id}` });
    const key = await this.post('/v1/admin/api-keys', { tenant_id: id, name: 'bench' });
    const apiKey = String(key.key_secret);
    const { subject, scopes } = subjectAt(id, depth);
    for (const scope of scopes) {
      await this.post('/v1/admin/budgets', { tenant_id: id, scope, unit: UNIT, allocated: { unit: UNIT, amount: ALLOCATED } });
    }
    return {
      id,
      apiKey,
      depth,
      subject,
      subjectJson: JSON.stringify(subject),
      scopes,
      headers: { 'content-type': 'application/json', 'x-cycles-api-key': apiKey },
      tally: { reserved: 0, spent: 0 },
    };
  }

  /** Provisions tenants `${prefix}-0 .. -(n-1)`, a few at a time. */
  async tenants(prefix: string, n: number, depth: number): Promise<Tenant[]> {
    const out: Tenant[] = new Array(n);
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        out[i] = await this.tenant(`${prefix}-${i}`, depth);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, n) }, worker));
    return out;
  }
}
