/** The HTTP side of `cycles admin`: calls with the admin key, errors as messages, tables for people. */

export class AdminCliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'AdminCliError';
  }
}

export interface ClientOptions {
  url: string;
  adminKey: string;
}

export type Json = Record<string, unknown>;

export class AdminClient {
  constructor(private readonly opts: ClientOptions) {}

  /** One call; any non-2xx answer becomes an AdminCliError carrying the protocol's error code and message. */
  async call(method: string, path: string, query: Record<string, string | number | boolean | undefined> = {}, body?: unknown): Promise<Json> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') qs.set(k, String(v));
    const url = `${this.opts.url}${path}${qs.size > 0 ? `?${qs.toString()}` : ''}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { 'x-admin-api-key': this.opts.adminKey, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new AdminCliError(`cannot reach ${this.opts.url}: ${(e as Error).message}`);
    }
    const text = await res.text();
    let parsed: Json = {};
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text) as Json;
      } catch {
        throw new AdminCliError(`HTTP ${res.status} from ${method} ${path}: not JSON: ${text.slice(0, 200)}`);
      }
    }
    if (!res.ok) {
      const code = typeof parsed.error === 'string' ? parsed.error : 'ERROR';
      const message = typeof parsed.message === 'string' ? parsed.message : text.slice(0, 200);
      throw new AdminCliError(`${code}: ${message} (HTTP ${res.status}${parsed.request_id ? `, request ${String(parsed.request_id)}` : ''})`);
    }
    return parsed;
  }

  /** A list endpoint, one page or (all) every page. */
  async list(path: string, wrapper: string, query: Record<string, string | number | boolean | undefined>, all: boolean): Promise<{ rows: Json[]; next?: string }> {
    const rows: Json[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.call('GET', path, { ...query, cursor });
      rows.push(...((page[wrapper] as Json[] | undefined) ?? []));
      cursor = page.has_more ? (page.next_cursor as string | undefined) : undefined;
    } while (all && cursor);
    return { rows, next: cursor };
  }
}

/** Renders rows as an aligned text table (amounts shown as plain numbers). */
export function table(rows: Json[], columns: Array<[header: string, cell: (r: Json) => unknown]>): string {
  const cells = rows.map((r) => columns.map(([, f]) => text(f(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns.map(([h]) => h)), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

/** Key/value lines for one object. */
export function details(obj: Json): string {
  const keys = Object.keys(obj);
  const width = Math.max(0, ...keys.map((k) => k.length));
  return keys.map((k) => `${k.padEnd(width)}  ${text(obj[k])}`).join('\n');
}

function text(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object' && 'amount' in (v as Json) && 'unit' in (v as Json)) return String((v as Json).amount);
  if (Array.isArray(v)) return v.map(text).join(',');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export const amountOf = (v: unknown): unknown => (v && typeof v === 'object' ? (v as Json).amount : v);
