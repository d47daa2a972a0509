/**
 * A per-process cache of API key records by key hash, so that authenticating a tenant request
 * does not read the store every time (API_KEY_CACHE_TTL_MS, default 1000; 0 = no cache).
 *
 * What it holds is the record as the store returned it; the authenticator still checks its
 * status and `expires_at` against the clock on every request, so expiry is exact. What may be
 * stale is a change made to the record itself (revocation, new permissions or scope filter):
 *
 *  - in this process never: every store call that can change a key (KEY_WRITES) clears the cache
 *    before it starts and again once it settles, and a lookup that was in flight across such a
 *    call does not store its answer (generation check), so the next request reads the store;
 *  - in another process sharing the store, for at most `ttlMs` after the change committed: an
 *    entry is kept `ttlMs` from the moment its lookup started, which is before the read.
 *
 * Unknown hashes are never cached (a key created elsewhere works at once, and guessed keys
 * cannot fill the cache). The cache is keyed by the HMAC of the key, never the key itself.
 */
import type { ApiKeyRecord } from '../store/types.js';

/** Most keys remembered per process; beyond it the oldest entry is dropped. */
export const API_KEY_CACHE_MAX_ENTRIES = 4096;

/** Store methods that can change what findApiKeyByHash returns (keys, and tenants: a close revokes their keys). */
export const KEY_WRITES: ReadonlySet<string> = new Set([
  'createApiKey',
  'updateApiKey',
  'issueApiKey',
  'changeApiKey',
  'revokeApiKey',
  'createTenant',
  'updateTenant',
  'closeTenant',
  'openTenant',
  'changeTenant',
  'bulkTenants',
]);

export interface ApiKeyCacheOptions {
  ttlMs: number;
  maxEntries?: number | undefined;
  clock?: (() => number) | undefined;
}

export class ApiKeyCache {
  private readonly entries = new Map<string, { record: ApiKeyRecord; until: number }>();
  private generation = 0;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly clock: () => number;

  constructor(opts: ApiKeyCacheOptions) {
    this.ttlMs = opts.ttlMs;
    this.maxEntries = opts.maxEntries ?? API_KEY_CACHE_MAX_ENTRIES;
    this.clock = opts.clock ?? Date.now;
  }

  /** The record for `hash`, from the cache while fresh, otherwise from `load` (and remembered). */
  async lookup(hash: string, load: (hash: string) => Promise<ApiKeyRecord | undefined>): Promise<ApiKeyRecord | undefined> {
    const now = this.clock();
    const hit = this.entries.get(hash);
    if (hit !== undefined) {
      if (hit.until > now) return hit.record;
      this.entries.delete(hash);
    }
    const generation = this.generation;
    const record = await load(hash);
    if (record !== undefined && generation === this.generation && this.ttlMs > 0) {
      if (this.entries.size >= this.maxEntries) {
        const oldest = this.entries.keys().next();
        if (!oldest.done) this.entries.delete(oldest.value);
      }
      this.entries.set(hash, { record, until: now + this.ttlMs });
    }
    return record;
  }

  /** Forgets every entry, and any lookup still in flight will not be remembered. */
  invalidate(): void {
    this.generation++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
