/**
 * The server-level webhook security configuration (getWebhookSecurityConfig /
 * updateWebhookSecurityConfig): blocked CIDR ranges, allowed URL patterns and whether plain http
 * is allowed. It is kept in the store, so every process sharing the store applies the same one.
 *
 * Webhook create and update read it fresh, so a change applies to the very next write, as the
 * protocol asks; the dispatcher re-reads it at most once a second. The operator's
 * WEBHOOK_ALLOWED_HOSTS allow-list stays in force on top of it (hosts and networks admitted even
 * inside a blocked range), and WEBHOOK_ALLOW_HTTP is the default of `allow_http` until a
 * configuration is stored.
 */
import { invalid } from '../ledger/errors.js';
import type { Store } from '../store/types.js';
import { blockListOf, DEFAULT_BLOCKED_CIDRS, invalidCidrs, urlPatternOf, type WebhookNetworkPolicy } from './ssrf.js';

export interface WebhookSecurityConfig {
  blocked_cidr_ranges: string[];
  allowed_url_patterns: string[];
  allow_http: boolean;
}

const META_KEY = 'webhook_security';
const MAX_ENTRIES = 256;
const MAX_PATTERN_LENGTH = 2048;
/** How long the dispatcher may use a configuration before reading it again. */
const DISPATCH_REFRESH_MS = 1000;

/** Request body of updateWebhookSecurityConfig (the spec's WebhookSecurityConfig). */
export const webhookSecurityBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    blocked_cidr_ranges: { type: 'array', maxItems: MAX_ENTRIES, items: { type: 'string', minLength: 1, maxLength: 64 } },
    allowed_url_patterns: { type: 'array', maxItems: MAX_ENTRIES, items: { type: 'string', minLength: 1, maxLength: MAX_PATTERN_LENGTH } },
    allow_http: { type: 'boolean' },
  },
} as const;

export class WebhookSecurity {
  private cached: { policy: WebhookNetworkPolicy; at: number } | undefined;

  constructor(
    private readonly store: Pick<Store, 'getMeta' | 'putMeta'>,
    /** The operator's allow-list and http default from the environment. */
    private readonly base: WebhookNetworkPolicy,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The configuration in force: the stored one, or the defaults. */
  async config(): Promise<WebhookSecurityConfig> {
    const raw = await this.store.getMeta(META_KEY);
    if (raw === undefined) return { blocked_cidr_ranges: [...DEFAULT_BLOCKED_CIDRS], allowed_url_patterns: [], allow_http: this.base.allowHttp };
    return JSON.parse(raw) as WebhookSecurityConfig;
  }

  /**
   * Replaces the configuration. Fields left out take the protocol's defaults (the default
   * blocked ranges, no URL patterns, no plain http): a PUT replaces, it does not merge.
   */
  async update(body: Partial<WebhookSecurityConfig>): Promise<WebhookSecurityConfig> {
    const next: WebhookSecurityConfig = {
      blocked_cidr_ranges: [...new Set(body.blocked_cidr_ranges ?? DEFAULT_BLOCKED_CIDRS)],
      allowed_url_patterns: [...new Set(body.allowed_url_patterns ?? [])],
      allow_http: body.allow_http ?? false,
    };
    const bad = invalidCidrs(next.blocked_cidr_ranges);
    if (bad.length > 0) {
      throw invalid(`blocked_cidr_ranges: not a CIDR range (address/prefix): ${bad.slice(0, 5).join(', ')}`, { field: 'blocked_cidr_ranges', invalid: bad.slice(0, 20) });
    }
    const badPatterns = next.allowed_url_patterns.filter((p) => !/^(https?|\*):\/\/[^/]/i.test(p));
    if (badPatterns.length > 0) {
      throw invalid(`allowed_url_patterns: each pattern must start with http://, https:// or *:// and a host: ${badPatterns.slice(0, 5).join(', ')}`, {
        field: 'allowed_url_patterns',
        invalid: badPatterns.slice(0, 20),
      });
    }
    await this.store.putMeta(META_KEY, JSON.stringify(next));
    this.cached = undefined;
    return next;
  }

  /** The network policy for validating a webhook URL now (read fresh from the store). */
  async policy(): Promise<WebhookNetworkPolicy> {
    const p = this.policyOf(await this.config());
    this.cached = { policy: p, at: this.clock() };
    return p;
  }

  /** The network policy for sending (re-read at most once a second). */
  async sendPolicy(): Promise<WebhookNetworkPolicy> {
    if (this.cached && this.clock() - this.cached.at < DISPATCH_REFRESH_MS) return this.cached.policy;
    return this.policy();
  }

  private policyOf(c: WebhookSecurityConfig): WebhookNetworkPolicy {
    return {
      allowedHosts: this.base.allowedHosts,
      allowedNets: this.base.allowedNets,
      allowHttp: c.allow_http,
      blocked: blockListOf(c.blocked_cidr_ranges),
      urlPatterns: c.allowed_url_patterns.map(urlPatternOf),
    };
  }
}
