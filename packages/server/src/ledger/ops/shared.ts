import { hash } from 'node:crypto';
import type { Unit } from '../amounts.js';
import { CyclesError } from '../errors.js';
import { remainingOf, type BudgetRecord, type Caps, type IdempotencyRecord, type OveragePolicy, type TenantRecord } from '../types.js';
import type { LedgerView } from '../view.js';

export const DEFAULT_TTL_MS = 60_000;
export const DEFAULT_MAX_TTL_MS = 3_600_000;
export const DEFAULT_GRACE_MS = 5_000;
export const DEFAULT_MAX_EXTENSIONS = 10;
const DAY_MS = 86_400_000;

/** How long an idempotency record is kept for endpoints not bound to a reservation's life. */
export const IDEMPOTENCY_RETENTION_MS = 7 * DAY_MS;

/** The result of a ledger operation: an HTTP status and the exact JSON text of the reply. */
export interface OpResult {
  status: number;
  body: string;
  replayed: boolean;
}

/**
 * Canonical JSON (sorted object keys, RFC 8785 style for the values we accept) for payload
 * hashing. One string built in place: it runs for every mutation, and the map/join form
 * allocated an array and a string per key.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i > 0 ? ',' : '') + canonicalJson(value[i]);
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  sortKeys(keys);
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + canonicalJson(v);
    first = false;
  }
  return out + '}';
}

/**
 * Sorts keys in place, in the default sort's order (UTF-16 code units). A request's objects have
 * a handful of keys, and Array.prototype.sort allocates its working state on every call: it was
 * the largest single allocation of a reserve's request thread. Larger objects (metadata can be
 * big) use the built-in sort, so no body can make the insertion sort quadratic.
 */
function sortKeys(keys: string[]): void {
  if (keys.length > 16) {
    keys.sort();
    return;
  }
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i]!;
    let j = i - 1;
    while (j >= 0 && keys[j]! > k) {
      keys[j + 1] = keys[j]!;
      j--;
    }
    keys[j + 1] = k;
  }
}

/** SHA-256 of the endpoint, the reservation (if any) and the canonical payload; one-shot hashing. */
export function requestHash(endpoint: string, body: unknown, reservationId?: string): string {
  return hash('sha256', `${endpoint}\n${reservationId || ''}\n${canonicalJson(body)}`, 'hex');
}

/**
 * Looks up a same-key earlier outcome. Returns it when the payload matches, throws
 * IDEMPOTENCY_MISMATCH when it does not, and returns undefined for a fresh key.
 */
export function findReplay(view: LedgerView, tenantId: string, endpoint: string, key: string, hash: string): IdempotencyRecord | undefined {
  const prior = view.idempotency(tenantId, endpoint, key);
  if (!prior || prior.expires_at <= view.now) return undefined;
  if (prior.request_hash !== hash) {
    throw new CyclesError('IDEMPOTENCY_MISMATCH', `Idempotency key "${key}" was already used with a different request payload`, {
      idempotency_key: key,
    });
  }
  return prior;
}

export function record(
  view: LedgerView,
  tenantId: string,
  endpoint: string,
  key: string,
  hash: string,
  status: number,
  body: object,
  expiresAt: number,
  reservationId?: string,
): OpResult {
  const text = JSON.stringify(body);
  view.putIdempotency({
    tenant_id: tenantId,
    endpoint,
    key,
    request_hash: hash,
    status,
    body: text,
    reservation_id: reservationId,
    created_at: view.now,
    expires_at: expiresAt,
  });
  return { status, body: text, replayed: false };
}

export const replayed = (prior: IdempotencyRecord, body = prior.body): OpResult => ({ status: prior.status, body, replayed: true });

/**
 * Closed-tenant guard for persisting operations. A tenant without a record is not guarded
 * (budgets can exist before tenants are provisioned); a record in an unknown state fails closed.
 */
export function tenantGuard(tenant: TenantRecord | undefined, tenantId: string): 'OPEN' | 'SUSPENDED' | 'CLOSED' {
  if (!tenant) return 'OPEN';
  switch (tenant.status) {
    case 'ACTIVE':
      return 'OPEN';
    case 'SUSPENDED':
      return 'SUSPENDED';
    case 'CLOSED':
      return 'CLOSED';
    default:
      throw new CyclesError('INTERNAL_ERROR', `Tenant ${tenantId} has an undeterminable status`);
  }
}

export function tenantClosed(tenantId: string): CyclesError {
  return new CyclesError('TENANT_CLOSED', `Tenant ${tenantId} is closed`, { tenant: tenantId });
}

export interface BudgetResolution {
  /** Budgets in the requested unit at the derived scopes, in canonical (root-first) order. */
  budgets: BudgetRecord[];
}

/**
 * Finds the budgets that govern a request: every derived scope that has a budget in `unit`.
 * Throws UNIT_MISMATCH when only other units are budgeted there, NOT_FOUND when nothing is.
 * `notFound` lets decide and dry-run turn the absence into a DENY instead.
 */
export function resolveBudgets(
  view: LedgerView,
  tenantId: string,
  affectedScopes: readonly string[],
  unit: Unit,
  scopePath: string,
): BudgetRecord[] | 'NOT_FOUND' {
  const all = view.budgets(tenantId, affectedScopes);
  const order = new Map(affectedScopes.map((s, i) => [s, i]));
  const inUnit = all.filter((b) => b.unit === unit).sort((a, b) => order.get(a.scope)! - order.get(b.scope)!);
  if (inUnit.length > 0) return inUnit;
  if (all.length === 0) return 'NOT_FOUND';
  // Report the deepest scope that has budgets, with the units it does have.
  const deepest = [...all].sort((a, b) => order.get(b.scope)! - order.get(a.scope)!)[0]!;
  const expected = [...new Set(all.filter((b) => b.scope === deepest.scope).map((b) => b.unit))].sort();
  throw new CyclesError(
    'UNIT_MISMATCH',
    `No budget in unit ${unit} for scope ${scopePath}; budgets at ${deepest.scope} use ${expected.join(', ')}`,
    { scope: deepest.scope, requested_unit: unit, expected_units: expected },
  );
}

export function budgetNotFound(scopePath: string, subjectHasTenant: boolean, tenantId: string): CyclesError {
  const hint = subjectHasTenant ? '' : ` (subject.tenant was omitted; budgets are rooted at tenant:${tenantId})`;
  return new CyclesError('NOT_FOUND', `Budget not found for provided scope: ${scopePath}${hint}`, { scope: scopePath });
}

/** The protocol's Balance shape, every amount in one unit, invariant-preserving by construction. */
export function balanceOf(b: BudgetRecord): Record<string, unknown> {
  const u = b.unit;
  return {
    scope: b.scope,
    scope_path: b.scope,
    remaining: { unit: u, amount: remainingOf(b) },
    reserved: { unit: u, amount: b.reserved },
    spent: { unit: u, amount: b.spent },
    allocated: { unit: u, amount: b.allocated },
    debt: { unit: u, amount: b.debt },
    overdraft_limit: { unit: u, amount: b.overdraft_limit },
    is_over_limit: b.is_over_limit,
  };
}

export const idempotencyHorizon = (now: number, until = 0): number => Math.max(now + IDEMPOTENCY_RETENTION_MS, until + DAY_MS);

// ---- Policies: what governs a reservation besides its budgets ----

/**
 * A tenant's policy as the ledger reads it. At reserve time the highest-priority ACTIVE policy
 * whose scope_pattern matches the reservation's scope path, inside its effective window, applies
 * on its own (policies are never merged): its caps turn ALLOW into ALLOW_WITH_CAPS, its
 * commit_overage_policy is the default overage policy, and its reservation_ttl_override sets the
 * default TTL, the maximum TTL and the extension limit.
 */
export interface PolicyRecord {
  policy_id: string;
  tenant_id: string;
  name: string;
  description?: string | undefined;
  scope_pattern: string;
  priority: number;
  caps?: Caps | undefined;
  commit_overage_policy?: OveragePolicy | undefined;
  reservation_ttl_override?: { default_ttl_ms?: number; max_ttl_ms?: number; max_extensions?: number } | undefined;
  /** Stored and returned; not enforced (see docs/governance.md). */
  rate_limits?: { max_reservations_per_minute?: number; max_commits_per_minute?: number } | undefined;
  status: 'ACTIVE' | 'DISABLED';
  effective_from?: number | undefined;
  effective_until?: number | undefined;
  created_at: number;
  updated_at?: number | undefined;
}

/**
 * Whether a canonical scope path matches a policy's scope_pattern. Segments match exactly, or
 * by level when the pattern's id is `*` ("agent:*"); a bare final `*` matches every descendant
 * (strictly deeper) of the segments before it: "tenant:acme/*" matches "tenant:acme/workspace:w"
 * but not "tenant:acme" itself.
 */
export function scopePatternMatches(pattern: string, scopePath: string): boolean {
  const p = pattern.split('/');
  const s = scopePath.split('/');
  const segment = (want: string, got: string | undefined): boolean =>
    got !== undefined && (want.endsWith(':*') ? got.startsWith(want.slice(0, -1)) && got.length > want.length - 1 : want === got);
  if (p[p.length - 1] === '*') {
    const fixed = p.slice(0, -1);
    return s.length > fixed.length && fixed.every((want, i) => segment(want, s[i]));
  }
  return s.length === p.length && p.every((want, i) => segment(want, s[i]));
}

/**
 * The one policy that governs a reservation at `scopePath` now, or undefined. Ties on priority
 * go to the older policy (then the smaller id), so the choice never depends on storage order.
 */
export function governingPolicy(policies: readonly PolicyRecord[], scopePath: string, now: number): PolicyRecord | undefined {
  let best: PolicyRecord | undefined;
  for (const p of policies) {
    if (p.status !== 'ACTIVE') continue;
    if (p.effective_from !== undefined && now < p.effective_from) continue;
    if (p.effective_until !== undefined && now >= p.effective_until) continue;
    if (!scopePatternMatches(p.scope_pattern, scopePath)) continue;
    if (
      !best ||
      p.priority > best.priority ||
      (p.priority === best.priority && (p.created_at < best.created_at || (p.created_at === best.created_at && p.policy_id < best.policy_id)))
    ) {
      best = p;
    }
  }
  return best;
}

/** Caps worth returning: a policy whose caps object sets nothing allows without caps. */
export function effectiveCaps(policy: PolicyRecord | undefined): Caps | undefined {
  const caps = policy?.caps;
  if (!caps) return undefined;
  return Object.values(caps).some((v) => v !== undefined) ? caps : undefined;
}

/**
 * Default overage policy of a reservation: the request's, else the governing policy's, else the
 * leaf-most budget (in `budgets`, root first) that sets one, else the tenant default.
 */
export function defaultOveragePolicy(
  requested: OveragePolicy | undefined,
  policy: PolicyRecord | undefined,
  budgets: readonly BudgetRecord[],
  tenant: TenantRecord | undefined,
): OveragePolicy {
  if (requested) return requested;
  if (policy?.commit_overage_policy) return policy.commit_overage_policy;
  for (let i = budgets.length - 1; i >= 0; i--) {
    const own = budgets[i]!.commit_overage_policy;
    if (own) return own;
  }
  return tenant?.default_commit_overage_policy ?? 'ALLOW_IF_AVAILABLE';
}

/** TTL limits of a new reservation: the governing policy's override, else the tenant's, else the defaults. */
export function ttlLimits(policy: PolicyRecord | undefined, tenant: TenantRecord | undefined): { defaultTtl: number; maxTtl: number; maxExtensions: number } {
  const o = policy?.reservation_ttl_override;
  return {
    defaultTtl: o?.default_ttl_ms ?? tenant?.default_reservation_ttl_ms ?? DEFAULT_TTL_MS,
    maxTtl: o?.max_ttl_ms ?? tenant?.max_reservation_ttl_ms ?? DEFAULT_MAX_TTL_MS,
    maxExtensions: o?.max_extensions ?? tenant?.max_reservation_extensions ?? DEFAULT_MAX_EXTENSIONS,
  };
}

/** Cross-field rules of a policy (also after a merge on update). */
export function checkPolicy(p: PolicyRecord): void {
  if (p.effective_from !== undefined && p.effective_until !== undefined && p.effective_from >= p.effective_until) {
    throw new CyclesError('INVALID_REQUEST', 'effective_from must be before effective_until', { field: 'effective_from' });
  }
  const o = p.reservation_ttl_override;
  if (o?.default_ttl_ms !== undefined && o.max_ttl_ms !== undefined && o.default_ttl_ms > o.max_ttl_ms) {
    throw new CyclesError('INVALID_REQUEST', 'reservation_ttl_override.default_ttl_ms must not exceed max_ttl_ms', { field: 'reservation_ttl_override.default_ttl_ms' });
  }
}
