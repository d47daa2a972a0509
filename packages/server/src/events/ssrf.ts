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

const blocked = new BlockList();
for (const [net, prefix] of BLOCKED_V4) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of BLOCKED_V6) blocked.addSubnet(net, prefix, 'ipv6');

export interface WebhookNetworkPolicy {
  /** Host names (exact, case-insensitive) admitted even when they resolve to blocked addresses. */
  allowedHosts: ReadonlySet<string>;
  /** CIDRs whose addresses are admitted. */
  allowedNets: BlockList;
  /** Plain http is refused unless allowed (or the host is allow-listed). */
  allowHttp: boolean;
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
  return !blocked.check(a.address, a.family);
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
