/** API keys (create, list, update, revoke), key validation and credential introspection. */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { SCOPE_LEVELS } from '../ledger/scopes.js';
import { enumParam, single, type Query } from '../runtime/query.js';
import { API_KEY_PREFIX_LENGTH, hashApiKey, newApiKeySecret } from '../security/keys.js';
import { API_KEY_SORT_KEYS, type ApiKeyChange, type ApiKeyRecord } from '../store/types.js';
import { noteAudit } from './audit.js';
import { adminAuth, adminLimit, cursorFor, listBody, parseTime, pathId, searchParam, sortParams } from './common.js';
import { apiKeyCreateBody, apiKeyUpdateBody, DEFAULT_PERMISSIONS, PERMISSIONS, validateKeyBody } from './schemas.js';
import { apiKeyShape, iso } from './shapes.js';

/** Keys expire after this long unless expires_at says otherwise (spec: 90 days recommended). */
export const KEY_LIFETIME_MS = 90 * 86_400_000;

function checkPermissions(perms: readonly string[]): string[] {
  for (const p of perms) {
    if (!(PERMISSIONS as readonly string[]).includes(p)) throw invalid(`Unrecognized permission: ${p}`, { field: 'permissions', permission: p });
  }
  return [...new Set(perms)];
}

const SEGMENT_ID = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/** scope_filter entries are scope segments: "workspace:eng" or a level wildcard "agent:*" (a bare * is not one). */
function checkScopeFilterEntries(entries: readonly string[]): string[] {
  return [
    ...new Set(
      entries.map((e) => {
        const colon = e.indexOf(':');
        const level = e.slice(0, Math.max(0, colon));
        const id = e.slice(colon + 1);
        if (colon <= 0 || !(SCOPE_LEVELS as readonly string[]).includes(level) || (id !== '*' && !SEGMENT_ID.test(id))) {
          throw invalid(`scope_filter entry "${e}" must be <level>:<id> or <level>:* with a level of ${SCOPE_LEVELS.join(', ')}`, { field: 'scope_filter' });
        }
        return `${level}:${id.toLowerCase()}`;
      }),
    ),
  ];
}

/** Introspection flags derived from a tenant key's permissions (spec AuthIntrospectResponse, normative). */
function capabilities(g: readonly string[]): Record<string, boolean> {
  const any = (...perms: string[]) => perms.some((x) => g.includes(x));
  return {
    view_overview: false,
    view_budgets: any('budgets:read', 'admin:read', 'admin:budgets:read'),
    view_events: any('events:read', 'admin:read', 'admin:events:read'),
    view_webhooks: any('webhooks:read', 'admin:read', 'admin:webhooks:read'),
    view_audit: false,
    view_tenants: false,
    view_api_keys: false,
    view_policies: any('policies:read', 'admin:read', 'admin:policies:read'),
    view_reservations: g.some((x) => x.startsWith('reservations:')) || g.includes('admin:read'),
    manage_budgets: any('budgets:write', 'admin:write', 'admin:budgets:write'),
    manage_policies: any('policies:write', 'admin:write', 'admin:policies:write'),
    manage_webhooks: any('webhooks:write', 'admin:write', 'admin:webhooks:write'),
    manage_tenants: false,
    manage_api_keys: false,
    manage_reservations: any('reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'admin:write'),
  };
}

const ADMIN_CAPABILITIES = Object.fromEntries(Object.keys(capabilities([])).map((c) => [c, true]));

export function registerKeyRoutes(app: FastifyInstance, { store }: AppDeps): void {
  app.post('/v1/admin/api-keys', { schema: { body: apiKeyCreateBody }, config: adminAuth('admin') }, async (req, reply) => {
    const b = req.body as { tenant_id: string; name: string; description?: string; permissions?: string[]; scope_filter?: string[]; expires_at?: string; metadata?: Record<string, string> };
    const permissions = checkPermissions(b.permissions ?? DEFAULT_PERMISSIONS);
    const scopeFilter = checkScopeFilterEntries(b.scope_filter ?? []);
    const now = Date.now();
    const expiresAt = parseTime(b.expires_at) ?? now + KEY_LIFETIME_MS;
    if (expiresAt <= now) throw invalid('expires_at must be in the future', { field: 'expires_at' });
    const secret = newApiKeySecret();
    const record: ApiKeyRecord = {
      key_id: `key_${randomBytes(8).toString('hex')}`,
      tenant_id: b.tenant_id,
      key_prefix: secret.slice(0, API_KEY_PREFIX_LENGTH),
      key_hash: hashApiKey(secret, app.cyclesSecrets.pepper),
      name: b.name,
      description: b.description,
      permissions,
      scope_filter: scopeFilter,
      status: 'ACTIVE',
      created_at: now,
      expires_at: expiresAt,
      metadata: b.metadata,
    };
    noteAudit(req, { tenantId: b.tenant_id, resourceId: record.key_id });
    await store.issueApiKey(record, opContext(req));
    const stored = (await store.getApiKey(record.key_id)) ?? record;
    return reply.code(201).send({
      key_id: stored.key_id,
      key_secret: secret,
      key_prefix: stored.key_prefix,
      tenant_id: stored.tenant_id,
      permissions: stored.permissions,
      created_at: iso(stored.created_at),
      expires_at: iso(stored.expires_at),
    });
  });

  app.get('/v1/admin/api-keys', { config: adminAuth('admin') }, async (req) => {
    const q = req.query as Query;
    const filter = {
      tenantId: single(q, 'tenant_id') || undefined,
      status: enumParam(q, 'status', ['ACTIVE', 'REVOKED', 'EXPIRED'] as const),
      search: searchParam(q),
      ...sortParams(q, API_KEY_SORT_KEYS, 'created_at'),
    };
    const { hash, after } = cursorFor(q, filter);
    const now = Date.now();
    const page = await store.queryApiKeys({ ...filter, after, limit: adminLimit(q), now });
    return listBody('keys', page.rows.map((k) => apiKeyShape(k, now)), page.hasMore, hash, page.next);
  });

  app.patch('/v1/admin/api-keys/:key_id', { schema: { body: apiKeyUpdateBody }, config: adminAuth('admin') }, async (req) => {
    const id = pathId((req.params as { key_id: string }).key_id, 'key_id');
    const b = req.body as ApiKeyChange;
    const change: ApiKeyChange = { ...b };
    if (b.permissions !== undefined) change.permissions = checkPermissions(b.permissions);
    if (b.scope_filter !== undefined) change.scope_filter = checkScopeFilterEntries(b.scope_filter);
    const existing = await store.getApiKey(id);
    if (existing) noteAudit(req, { tenantId: existing.tenant_id, resourceId: id });
    const next = await store.changeApiKey(id, change, opContext(req));
    return apiKeyShape(next, Date.now());
  });

  app.delete('/v1/admin/api-keys/:key_id', { config: adminAuth('admin') }, async (req) => {
    const id = pathId((req.params as { key_id: string }).key_id, 'key_id');
    const reason = single(req.query as Query, 'reason');
    if (reason !== undefined && reason.length > 512) throw invalid('reason must be at most 512 characters', { field: 'reason' });
    const existing = await store.getApiKey(id);
    if (existing) noteAudit(req, { tenantId: existing.tenant_id, resourceId: id, metadata: reason ? { reason } : {} });
    const revoked = await store.revokeApiKey(id, reason || undefined, opContext(req));
    return apiKeyShape(revoked, Date.now());
  });

  /**
   * validateApiKey: always 200, valid:false with a reason on failure. Checks in the spec's order:
   * exists (hash) -> ACTIVE -> not expired -> tenant ACTIVE. A failure on a known key is recorded
   * as api_key.auth_failed.
   */
  app.post('/v1/auth/validate', { schema: { body: validateKeyBody }, config: adminAuth('admin') }, async (req) => {
    const { key_secret } = req.body as { key_secret: string };
    const k = await store.findApiKeyByHash(hashApiKey(key_secret, app.cyclesSecrets.pepper));
    const now = Date.now();
    let reason: string | undefined;
    if (!k) reason = 'KEY_NOT_FOUND';
    else if (k.status === 'REVOKED') reason = 'KEY_REVOKED';
    else if (k.status === 'EXPIRED' || k.expires_at <= now) reason = 'KEY_EXPIRED';
    else {
      const t = await store.getTenant(k.tenant_id);
      if (!t) reason = 'TENANT_NOT_FOUND';
      else if (t.status === 'SUSPENDED') reason = 'TENANT_SUSPENDED';
      else if (t.status === 'CLOSED') reason = 'TENANT_CLOSED';
    }
    if (k) noteAudit(req, { tenantId: k.tenant_id, resourceId: k.key_id, metadata: { valid: reason === undefined, ...(reason ? { reason } : {}) } });
    if (reason !== undefined) {
      if (k) {
        await store.appendEvents(
          [
            {
              event_type: 'api_key.auth_failed',
              tenant_id: k.tenant_id,
              data: { key_id: k.key_id, key_name: k.name, failure_reason: reason.toLowerCase(), permissions: k.permissions, source_ip: req.ip },
            },
          ],
          opContext(req),
        );
      }
      return { valid: false, tenant_id: '', reason };
    }
    return {
      valid: true,
      tenant_id: k!.tenant_id,
      key_id: k!.key_id,
      permissions: k!.permissions,
      scope_filter: k!.scope_filter,
      expires_at: iso(k!.expires_at),
    };
  });

  app.get('/v1/auth/introspect', { config: adminAuth('either') }, async (req) => {
    const p = req.cycles.principal;
    if (!p) throw new CyclesError('UNAUTHORIZED', 'Authentication required');
    if (p.kind === 'admin') return { authenticated: true, auth_type: 'admin', permissions: ['*'], capabilities: ADMIN_CAPABILITIES };
    const out: Record<string, unknown> = { authenticated: true, auth_type: 'tenant', permissions: [...p.permissions], tenant_id: p.tenantId };
    if (p.scopeFilter.length > 0) out.scope_filter = [...p.scopeFilter];
    out.capabilities = capabilities(p.permissions);
    return out;
  });
}
