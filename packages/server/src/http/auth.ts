import type { FastifyReply, FastifyRequest } from 'fastify';
import { CyclesError } from '../ledger/errors.js';
import type { ApiKeyCache } from '../security/key-cache.js';
import { hashApiKey, sameDigest, sha256Hex } from '../security/keys.js';
import type { Store } from '../store/types.js';
import { routeOf } from './route-of.js';

/** Who may call a route: a tenant key, the admin key, either (admin-on-behalf-of), or anyone. */
export type AuthMode = 'tenant' | 'admin' | 'either' | 'public';

export type Principal =
  | { kind: 'admin' }
  | { kind: 'tenant'; tenantId: string; keyId: string; permissions: readonly string[]; scopeFilter: readonly string[] };

export interface RouteAuth {
  auth: AuthMode;
  /** Permission a tenant key needs (admin:read / admin:write act as wildcards). */
  permission?: string;
  /** Runtime routes answer a missing permission with FORBIDDEN (their enum has no INSUFFICIENT_PERMISSIONS). */
  plane?: 'runtime' | 'admin';
}

export interface AuthSecrets {
  adminKeyHash: string;
  pepper: string;
}

/** admin:write satisfies any *:write and admin:read any *:read; read never satisfies write. */
export function hasPermission(granted: readonly string[], needed: string): boolean {
  if (granted.includes(needed)) return true;
  if (needed.endsWith(':write') && granted.includes('admin:write')) return true;
  if (needed.endsWith(':read') && granted.includes('admin:read')) return true;
  return false;
}

const unauthorized = (message: string) => new CyclesError('UNAUTHORIZED', message);

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s && s.trim() !== '' ? s.trim() : undefined;
}

/**
 * `keyCache` (API_KEY_CACHE_TTL_MS) spares the store a lookup per request; status and expiry are
 * checked on every request whether the record came from the cache or the store.
 */
export function makeAuthenticator(store: Store, secrets: AuthSecrets, clock: () => number = Date.now, keyCache?: ApiKeyCache) {
  const isAdmin = (presented: string) => sameDigest(sha256Hex(presented), secrets.adminKeyHash);

  const findByHash = (hash: string) => store.findApiKeyByHash(hash);

  async function tenantPrincipal(presented: string): Promise<Principal> {
    const hash = hashApiKey(presented, secrets.pepper);
    const key = keyCache ? await keyCache.lookup(hash, findByHash) : await store.findApiKeyByHash(hash);
    if (!key) throw unauthorized('Invalid API key');
    if (key.status === 'REVOKED') throw unauthorized('API key has been revoked');
    if (key.status !== 'ACTIVE' || key.expires_at <= clock()) throw unauthorized('API key has expired');
    return { kind: 'tenant', tenantId: key.tenant_id, keyId: key.key_id, permissions: key.permissions, scopeFilter: key.scope_filter };
  }

  /** Runs before the body is parsed, so an unauthenticated caller learns nothing about validation. */
  return async function authenticate(req: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const route = routeOf(req).config as Partial<RouteAuth>;
    const mode = route.auth ?? 'public';
    if (mode === 'public') return;
    const admin = header(req, 'x-admin-api-key');
    const tenant = header(req, 'x-cycles-api-key');
    let principal: Principal;
    if (mode === 'admin' || (mode === 'either' && admin !== undefined)) {
      if (admin === undefined) throw unauthorized('Missing X-Admin-API-Key header');
      if (!isAdmin(admin)) throw unauthorized('Invalid admin API key');
      principal = { kind: 'admin' };
    } else {
      if (tenant === undefined) {
        throw unauthorized(admin !== undefined ? 'This operation requires X-Cycles-API-Key; the admin key is not accepted here' : 'Missing X-Cycles-API-Key header');
      }
      const t = await tenantPrincipal(tenant);
      principal = t;
      if (t.kind === 'tenant' && route.permission && !hasPermission(t.permissions, route.permission)) {
        const code = route.plane === 'admin' ? 'INSUFFICIENT_PERMISSIONS' : 'FORBIDDEN';
        throw new CyclesError(code, `API key lacks the ${route.permission} permission`, { required_permission: route.permission });
      }
    }
    req.cycles.principal = principal;
  };
}
