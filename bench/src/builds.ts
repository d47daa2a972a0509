/**
 * A server build's modules loaded into the harness's own process, and the tenant the store-level
 * tools (bench:store, bench:redis) provision in each store: one hot tenant at depth 3, as in the
 * HTTP benchmark's target cells.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { typedPath } from './processes.js';

/** This checkout's build. */
const OWN_DIST = join(dirname(fileURLToPath(import.meta.url)), '../../packages/server/dist');

/** A build's dist folder given on the command line (default: this checkout's). */
export const distOf = (path: string | undefined): string => (path === undefined ? OWN_DIST : typedPath(path));

/** What the tools use of a build: its store class and the ledger helpers a store command needs. */
export interface Build {
  store: new (options: object) => BenchStore;
  requestHash: (endpoint: string, body: unknown, reservationId?: string) => string;
  deriveScopes: (subject: object) => unknown;
}

/** Loads the store module at `storePath` (inside dist) and the ledger helpers of the same build. */
export async function loadBuild(dist: string, storePath: string, storeClass: string): Promise<Build> {
  const load = (path: string): Promise<Record<string, unknown>> => import(pathToFileURL(join(dist, path)).href) as Promise<Record<string, unknown>>;
  const [storeModule, { requestHash }, { deriveScopes }] = await Promise.all([load(storePath), load('ledger/ops/shared.js'), load('ledger/scopes.js')]);
  return { store: storeModule[storeClass] as Build['store'], requestHash: requestHash as Build['requestHash'], deriveScopes: deriveScopes as Build['deriveScopes'] };
}

/** A store's reply: the HTTP status and the exact body it would send. */
export interface StoreReply {
  status: number;
  body: string;
}

/** What the tools call on a build's store. */
export interface BenchStore {
  createTenant(t: object): Promise<unknown>;
  createBudget(b: object): Promise<unknown>;
  reserve(cmd: object): Promise<StoreReply>;
  commit(cmd: object): Promise<StoreReply>;
  close(): Promise<void>;
}

/** Creates the tenant and a budget at each of its three scopes; returns the subject that reaches them. */
export async function provisionTenant(store: BenchStore, tenantId: string, now: number): Promise<{ tenant: string; workspace: string; app: string }> {
  await store.createTenant({ tenant_id: tenantId, name: tenantId, status: 'ACTIVE', created_at: now });
  for (const scope of [`tenant:${tenantId}`, `tenant:${tenantId}/workspace:w1`, `tenant:${tenantId}/workspace:w1/app:a2`]) {
    await store.createBudget({ ledger_id: `led-${scope}`, tenant_id: tenantId, scope, unit: 'TOKENS', allocated: 1e15, reserved: 0, spent: 0, debt: 0, overdraft_limit: 0, is_over_limit: false, status: 'ACTIVE', created_at: now, updated_at: now });
  }
  return { tenant: tenantId, workspace: 'w1', app: 'a2' };
}

/** The body of the tools' reserves: 100 TOKENS for an hour. */
export const reserveRequest = (idempotencyKey: string, subject: object) => ({
  idempotency_key: idempotencyKey,
  subject,
  action: { kind: 'llm.completion', name: 'bench' },
  estimate: { unit: 'TOKENS', amount: 100 },
  ttl_ms: 3_600_000,
});
