/** Policies: create, list and update (what governs reservations besides budgets; see ledger/ops/shared.ts). */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { checkPolicy } from '../ledger/ops/shared.js';
import { SCOPE_LEVELS } from '../ledger/scopes.js';
import { enumParam, single, type Query } from '../runtime/query.js';
import type { PolicyChange, PolicyRecord } from '../store/types.js';
import { noteAudit } from './audit.js';
import { adminAuth, adminLimit, checkScopeFilter, cursorFor, keyScopeFilter, listBody, parseTime, pathId, routingTenant } from './common.js';
import { policyCreateBody, policyUpdateBody } from './schemas.js';
import { policyShape } from './shapes.js';

const ID = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/**
 * Canonical form of a policy's scope_pattern: the budget scope grammar (tenant first, levels in
 * order, ids lower-cased), except that the last id may be `*` ("tenant:a/agent:*") and the last
 * segment may be a bare `*` ("tenant:a/*", every descendant). It must start at the owning tenant.
 */
export function parseScopePattern(pattern: string, tenantId: string): string {
  const parts = pattern.split('/');
  const out: string[] = [];
  let last = -1;
  parts.forEach((part, i) => {
    const final = i === parts.length - 1;
    if (part === '*' && final && i > 0) {
      out.push('*');
      return;
    }
    const colon = part.indexOf(':');
    if (colon <= 0) throw invalid(`scope_pattern segment "${part}" must look like <level>:<id>, <level>:* or a final *`, { field: 'scope_pattern' });
    const level = part.slice(0, colon);
    const id = part.slice(colon + 1);
    const index = (SCOPE_LEVELS as readonly string[]).indexOf(level);
    if (index < 0) throw invalid(`scope_pattern has unknown level "${level}" (levels: ${SCOPE_LEVELS.join(', ')})`, { field: 'scope_pattern' });
    if (index <= last) throw invalid(`scope_pattern levels must follow ${SCOPE_LEVELS.join(' > ')} without repeats`, { field: 'scope_pattern' });
    if (i === 0 && level !== 'tenant') throw invalid('scope_pattern must start with tenant:<id>', { field: 'scope_pattern' });
    const wildcard = id === '*' && final && i > 0;
    if (!wildcard && (id.length === 0 || id.length > 128 || !ID.test(id))) {
      throw invalid(`scope_pattern id "${id}" must be 1-128 characters of [A-Za-z0-9._-], or * in the last segment`, { field: 'scope_pattern' });
    }
    last = index;
    out.push(`${level}:${wildcard ? '*' : id.toLowerCase()}`);
  });
  if (out[0] !== `tenant:${tenantId}`) throw new ForeignPattern(`scope_pattern must start with tenant:${tenantId}`);
  return out.join('/');
}

/** A well-formed pattern rooted at another tenant: 403 under a tenant key, 400 under the admin key. */
class ForeignPattern extends CyclesError {
  constructor(message: string) {
    super('INVALID_REQUEST', message, { field: 'scope_pattern' });
  }
}

function patternFor(req: FastifyRequest, pattern: string, tenantId: string): string {
  try {
    return parseScopePattern(pattern, tenantId);
  } catch (e) {
    if (e instanceof ForeignPattern && req.cycles.principal?.kind === 'tenant') throw new CyclesError('FORBIDDEN', `scope_pattern ${pattern} belongs to another tenant`);
    throw e;
  }
}

type PolicyBody = Omit<PolicyChange, 'effective_from' | 'effective_until'> & { tenant_id?: string; scope_pattern?: string; effective_from?: string; effective_until?: string };

function fromBody(b: PolicyBody): PolicyChange {
  const out: PolicyChange = {};
  for (const k of ['name', 'description', 'priority', 'caps', 'commit_overage_policy', 'reservation_ttl_override', 'rate_limits', 'status'] as const) {
    if (b[k] !== undefined) (out as Record<string, unknown>)[k] = b[k];
  }
  if (b.effective_from !== undefined) out.effective_from = parseTime(b.effective_from);
  if (b.effective_until !== undefined) out.effective_until = parseTime(b.effective_until);
  return out;
}

export function registerPolicyRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.post('/v1/admin/policies', { schema: { body: policyCreateBody }, config: adminAuth('either', 'policies:write') }, async (req, reply) => {
    const b = req.body as PolicyBody & { name: string; scope_pattern: string };
    const p = req.cycles.principal;
    const tenantId = routingTenant(p, b.tenant_id, 'body');
    const scopePattern = patternFor(req, b.scope_pattern, tenantId);
    checkScopeFilter(req, scopePattern);
    const record: PolicyRecord = {
      policy_id: `pol_${randomBytes(12).toString('hex')}`,
      tenant_id: tenantId,
      scope_pattern: scopePattern,
      priority: 0,
      status: 'ACTIVE',
      created_at: 0,
      ...fromBody(b),
      name: b.name,
    };
    checkPolicy(record);
    noteAudit(req, { tenantId, resourceId: record.policy_id });
    await store.createPolicy(record, opContext(req, p?.kind === 'admin'));
    return reply.code(201).send(policyShape((await store.getPolicy(record.policy_id)) ?? record));
  });

  app.get('/v1/admin/policies', { config: adminAuth('either', 'policies:read') }, async (req) => {
    const q = req.query as Query;
    const tenantId = routingTenant(req.cycles.principal, single(q, 'tenant_id'), 'query');
    const patternRaw = single(q, 'scope_pattern') || undefined;
    // has_action_quotas / references_action_kind (v0.1.26) are accepted and ignored.
    const filter = {
      tenantId,
      scopePattern: patternRaw === undefined ? undefined : patternFor(req, patternRaw, tenantId),
      status: enumParam(q, 'status', ['ACTIVE', 'DISABLED'] as const),
      scopeFilter: keyScopeFilter(req),
    };
    const { hash, after } = cursorFor(q, filter);
    const page = await store.queryPolicies({ ...filter, after, limit: adminLimit(q) });
    return listBody('policies', page.rows.map(policyShape), page.hasMore, hash, page.next);
  });

  app.patch('/v1/admin/policies/:policy_id', { schema: { body: policyUpdateBody }, config: adminAuth('either', 'policies:write') }, async (req) => {
    const id = pathId((req.params as { policy_id: string }).policy_id, 'policy_id');
    const existing = await store.getPolicy(id);
    if (!existing) throw new CyclesError('NOT_FOUND', `Policy ${id} not found`, { policy_id: id });
    const p = req.cycles.principal;
    if (p?.kind === 'tenant' && p.tenantId !== existing.tenant_id) throw new CyclesError('FORBIDDEN', `Policy ${id} belongs to another tenant`, { policy_id: id });
    checkScopeFilter(req, existing.scope_pattern);
    noteAudit(req, { tenantId: existing.tenant_id, resourceId: id });
    const next = await store.changePolicy(id, fromBody(req.body as PolicyBody), opContext(req, p?.kind === 'admin'));
    return policyShape(next);
  });
}
