/** Shared pieces of the governance routes: auth config, list parameters, tenant routing, scope filters. */
import type { FastifyRequest } from 'fastify';
import type { Principal, RouteAuth } from '../http/auth.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { decodeCursor, encodeCursor, filterHash, single, type Query } from '../runtime/query.js';
import type { KeysetPosition, SortDir } from '../store/types.js';

export const adminAuth = (mode: RouteAuth['auth'], permission?: string): RouteAuth => ({ auth: mode, permission, plane: 'admin' });

/** Lists return at most this many rows per page (spec: limit 1-100, default 50). */
export const MAX_PAGE = 100;
export const DEFAULT_PAGE = 50;
/** Longest accepted `search` text (spec). */
export const MAX_SEARCH = 128;

/** Admin lists clamp limit into [1, 100] like the reference; a non-number is a 400. */
export function adminLimit(q: Query): number {
  const raw = single(q, 'limit');
  if (raw === undefined || raw.trim() === '') return DEFAULT_PAGE;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw invalid('limit must be an integer between 1 and 100', { field: 'limit' });
  return Math.min(MAX_PAGE, Math.max(1, Math.trunc(n)));
}

/** `search`: trimmed, empty = absent, longer than 128 characters = 400. */
export function searchParam(q: Query, name = 'search'): string | undefined {
  const raw = single(q, name)?.trim();
  if (raw === undefined || raw === '') return undefined;
  if (raw.length > MAX_SEARCH) throw invalid(`${name} must be at most ${MAX_SEARCH} characters`, { field: name });
  return raw;
}

/** sort_by from an allowed set (400 otherwise) and sort_dir asc|desc, case-insensitive, default desc. */
export function sortParams<K extends string>(q: Query, keys: readonly K[], fallback: K): { sortBy: K; sortDir: SortDir } {
  const by = single(q, 'sort_by')?.trim();
  const dir = single(q, 'sort_dir')?.trim().toLowerCase();
  if (by !== undefined && by !== '' && !keys.includes(by as K)) throw invalid(`sort_by must be one of ${keys.join(', ')}`, { field: 'sort_by' });
  if (dir !== undefined && dir !== '' && dir !== 'asc' && dir !== 'desc') throw invalid('sort_dir must be asc or desc', { field: 'sort_dir' });
  return { sortBy: by ? (by as K) : fallback, sortDir: dir === 'asc' ? 'asc' : 'desc' };
}

export function boolParam(q: Query, name: string): boolean | undefined {
  const raw = single(q, name)?.trim().toLowerCase();
  if (raw === undefined || raw === '') return undefined;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw invalid(`${name} must be true or false`, { field: name });
}

export function numberParam(q: Query, name: string, min: number, max: number, integer = false): number | undefined {
  const raw = single(q, name)?.trim();
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw invalid(`${name} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max}`, { field: name });
  }
  return n;
}

/** A list query's cursor is bound to its filters and sort: a cursor from another query is a 400. */
export function cursorFor(q: Query, bound: unknown): { hash: string; after: KeysetPosition | undefined } {
  const hash = filterHash(bound);
  return { hash, after: decodeCursor(single(q, 'cursor'), hash) };
}

export function listBody<T>(name: string, rows: T[], hasMore: boolean, hash: string, next: KeysetPosition | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { [name]: rows };
  if (hasMore && next) out.next_cursor = encodeCursor(hash, next);
  out.has_more = hasMore;
  return out;
}

/**
 * The tenant a dual-auth call acts on. A tenant key acts on its own tenant (sending tenant_id in
 * a body is a 400); the admin key must name the tenant (400 when it does not).
 */
export function routingTenant(principal: Principal | undefined, given: string | undefined, where: 'body' | 'query'): string {
  if (principal?.kind === 'tenant') {
    if (where === 'body' && given !== undefined) {
      throw invalid('tenant_id must not be sent with a tenant API key; the key determines the tenant', { field: 'tenant_id' });
    }
    return principal.tenantId;
  }
  if (given === undefined || given === '') {
    throw invalid(`tenant_id ${where === 'body' ? 'field' : 'query parameter'} is required when using admin key authentication`, { field: 'tenant_id' });
  }
  return given;
}

/** The scope_filter of the calling tenant key (undefined for the admin key or an unrestricted key). */
export function keyScopeFilter(req: FastifyRequest): readonly string[] | undefined {
  const p = req.cycles.principal;
  return p?.kind === 'tenant' && p.scopeFilter.length > 0 ? p.scopeFilter : undefined;
}

/**
 * A key's scope_filter lists scope segments it may touch: exact ("workspace:eng") or a level
 * wildcard ("agent:*"). A scope is allowed when one of its segments matches an entry.
 */
export function scopeAllowed(filter: readonly string[] | undefined, scope: string): boolean {
  if (!filter || filter.length === 0) return true;
  const segments = scope.toLowerCase().split('/');
  return filter.some((f) => {
    const entry = f.toLowerCase();
    if (entry.endsWith(':*')) return segments.some((s) => s.startsWith(entry.slice(0, -1)));
    return segments.includes(entry);
  });
}

export function checkScopeFilter(req: FastifyRequest, scope: string): void {
  if (!scopeAllowed(keyScopeFilter(req), scope)) {
    throw new CyclesError('FORBIDDEN', `The API key's scope_filter does not cover ${scope}`, { scope });
  }
}

/** Path parameters never carry traversal segments (the router would otherwise see them verbatim). */
export function pathId(value: string, field: string): string {
  if (value === '' || value === '.' || value === '..' || value.includes('/')) throw invalid(`${field} is not a valid identifier`, { field });
  return value;
}

export const parseTime = (s: string | undefined): number | undefined => (s === undefined ? undefined : Date.parse(s));
