/**
 * Webhook URLs must not reach the authority's own network: loopback, private, link-local,
 * carrier-grade NAT, multicast and cloud metadata addresses are refused unless the operator's
 * allow-list (WEBHOOK_ALLOWED_HOSTS: host names and CIDRs, comma-separated) admits them.
 * The check runs when a URL is stored and again at send time on the addresses actually
 * connected to (the guarded DNS lookup), which closes the DNS-rebinding gap.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { CyclesError } from '../ledger/errors.js';

const BLOCKED_V4 = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const;
const BLOCKED_V6 = [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['64:ff9b::', 96],
] as const;

/**
 * The default blocked ranges (the webhook security configuration's `blocked_cidr_ranges` until an
 * operator replaces them): a superset of the protocol's default list.
 */
export const DEFAULT_BLOCKED_CIDRS: readonly string[] = [...BLOCKED_V4, ...BLOCKED_V6].map(([net, prefix]) => `${net}/${prefix}`);

/** A CIDR ("10.0.0.0/8", "fc00::/7") as BlockList arguments, or undefined if it is not one. */
function cidrOf(entry: string): { net: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const slash = entry.indexOf('/');
  if (slash <= 0) return undefined;
  const net = entry.slice(0, slash);
  const bits = entry.slice(slash + 1);
  const family = isIP(net);
  if (!family || !/^\d{1,3}$/.test(bits)) return undefined;
  const prefix = Number(bits);
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { net, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

/** The entries that are not valid CIDRs. */
export function invalidCidrs(entries: readonly string[]): string[] {
  return entries.filter((e) => cidrOf(e) === undefined);
}

/** A BlockList of CIDRs (validate them with invalidCidrs first: invalid entries are skipped). */
export function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const e of cidrs) {
    const c = cidrOf(e);
    if (c) list.addSubnet(c.net, c.prefix, c.family);
  }
  return list;
}

const defaultBlocked = blockListOf(DEFAULT_BLOCKED_CIDRS);

/**
 * An allowed-URL glob ("https://*.example.com/*") as a RegExp over the whole URL. In the scheme and
 * host part a `*` never crosses `/`, `?`, `#` or `@`, so `https://*.example.com/*` cannot be
 * satisfied by `https://evil.test/?.example.com/`; in the path a `*` matches anything.
 */
export function urlPatternOf(glob: string): RegExp {
  const authorityEnd = glob.indexOf('/', glob.indexOf('://') + 3);
  const part = (s: string, star: string) => s.split('*').map((t) => t.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join(star);
  const head = authorityEnd < 0 ? glob : glob.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? '' : glob.slice(authorityEnd);
  return new RegExp(`^${part(head, '[^/?#@]*')}${part(tail, '.*')}$`, 'i');
}

export interface WebhookNetworkPolicy {
  /** Host names (exact, case-insensitive) admitted even when they resolve to blocked addresses. */
  allowedHosts: ReadonlySet<string>;
  /** CIDRs whose addresses are admitted. */
  allowedNets: BlockList;
  /** Plain http is refused unless allowed (or the host is allow-listed). */
  allowHttp: boolean;
  /** Addresses refused unless allow-listed; the built-in ranges when absent. */
  blocked?: BlockList;
  /** When non-empty, a webhook URL must match one of these to be stored. */
  urlPatterns?: readonly RegExp[];
}

export function parseAllowList(raw: string | undefined, allowHttp = false): WebhookNetworkPolicy {
  const allowedHosts = new Set<string>();
  const allowedNets = new BlockList();
  for (const entry of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const net = entry.slice(0, slash);
      const prefix = Number(entry.slice(slash + 1));
      const family = isIP(net);
      if (!family || !Number.isInteger(prefix)) throw new Error(`WEBHOOK_ALLOWED_HOSTS: "${entry}" is not a valid CIDR`);
      allowedNets.addSubnet(net, prefix, family === 4 ? 'ipv4' : 'ipv6');
    } else if (isIP(entry)) {
      allowedNets.addAddress(entry, isIP(entry) === 4 ? 'ipv4' : 'ipv6');
    } else {
      allowedHosts.add(entry.toLowerCase());
    }
  }
  return { allowedHosts, allowedNets, allowHttp };
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it carries. */
function normalise(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (m) return { address: m[1]!, family: 'ipv4' };
  return { address, family: isIP(address) === 6 ? 'ipv6' : 'ipv4' };
}

export function addressAllowed(address: string, policy: WebhookNetworkPolicy): boolean {
  const a = normalise(address);
  if (policy.allowedNets.check(a.address, a.family)) return true;
  return !(policy.blocked ?? defaultBlocked).check(a.address, a.family);
}

const invalidUrl = (url: string, reason: string) => new CyclesError('WEBHOOK_URL_INVALID', `Webhook URL invalid: ${url} (${reason})`, { url, reason });

/** Validates a webhook URL at write time: syntax, scheme, and every address its host resolves to. */
export async function validateWebhookUrl(url: string, policy: WebhookNetworkPolicy): Promise<void> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidUrl(url, 'not a valid absolute URL');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw invalidUrl(url, 'scheme must be https or http');
  if (u.username || u.password) throw invalidUrl(url, 'credentials in the URL are not allowed; use headers');
  // Matched against the normalised URL (lower-case host, a path of at least "/").
  if (policy.urlPatterns?.length && !policy.urlPatterns.some((re) => re.test(u.href))) {
    throw invalidUrl(url, 'does not match any of the allowed URL patterns');
  }
  const host = u.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (!host) throw invalidUrl(url, 'host is required');
  const hostAllowed = policy.allowedHosts.has(host);
  if (u.protocol === 'http:' && !policy.allowHttp && !hostAllowed && !(isIP(host) && policy.allowedNets.check(normalise(host).address, normalise(host).family))) {
    throw invalidUrl(url, 'https is required');
  }
  if (hostAllowed) return;
  const addresses = await resolveAll(host).catch(() => {
    throw invalidUrl(url, 'host does not resolve');
  });
  for (const a of addresses) {
    if (!addressAllowed(a.address, policy)) throw invalidUrl(url, `resolves to a blocked address (${a.address})`);
  }
}

function resolveAll(host: string): Promise<LookupAddress[]> {
  if (isIP(host)) return Promise.resolve([{ address: host, family: isIP(host) }]);
  return new Promise((resolve, reject) => dnsLookup(host, { all: true }, (err, addrs) => (err ? reject(err) : resolve(addrs))));
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A dns.lookup replacement for outgoing webhook requests: the connection is made only to
 * addresses that pass the policy, so a host that re-resolves to a private address is refused.
 */
export function guardedLookup(policy: WebhookNetworkPolicy, host: string) {
  const hostAllowed = policy.allowedHosts.has(host.toLowerCase());
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback): void => {
    dnsLookup(hostname, { all: true }, (err, addrs) => {
      if (err) return callback(err, []);
      const ok = hostAllowed ? addrs : addrs.filter((a) => addressAllowed(a.address, policy));
      if (ok.length === 0) {
        const e: NodeJS.ErrnoException = new Error(`SSRF guard: ${hostname} resolves only to blocked addresses`);
        e.code = 'ESSRFBLOCKED';
        return callback(e, []);
      }
      if (options?.all) return callback(null, ok);
      callback(null, ok[0]!.address, ok[0]!.family);
    });
  };
}
