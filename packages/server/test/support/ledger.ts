/**
 * Reads a tenant's whole ledger over HTTP (every Balance, every reservation, following
 * cursors) as one consistent snapshot, and checks the protocol's ledger rules on it.
 */
import type { Client, Json } from './http.js';
import { show } from './http.js';

export interface Balance {
  scope: string;
  unit: string;
  remaining: number;
  reserved: number;
  spent: number;
  allocated: number;
  debt: number;
  overdraft_limit: number;
  is_over_limit: boolean;
  /** Units of every amount field, for the single-unit rule. */
  units: string[];
  raw: Json;
}

export interface ReservationRow {
  reservation_id: string;
  status: 'ACTIVE' | 'COMMITTED' | 'RELEASED' | 'EXPIRED';
  reserved: { unit: string; amount: number };
  committed?: { unit: string; amount: number };
  affected_scopes: string[];
  scope_path: string;
  expires_at_ms: number;
  finalized_at_ms?: number;
  idempotency_key?: string;
  raw: Json;
}

export interface Snapshot {
  balances: Balance[];
  /** The balances exactly as served (all pages, in order), for byte comparisons. */
  balancesText: string;
  reservations: ReservationRow[];
  /** Date.now() when the snapshot was complete. */
  at: number;
}

const STATUSES = ['ACTIVE', 'COMMITTED', 'RELEASED', 'EXPIRED'] as const;

function toBalance(b: Json): Balance {
  const amt = (f: string): number => (b[f] === undefined ? NaN : (b[f].amount as number));
  const units = ['remaining', 'reserved', 'spent', 'allocated', 'debt', 'overdraft_limit'].filter((f) => b[f] !== undefined).map((f) => b[f].unit as string);
  return {
    scope: b.scope,
    unit: b.remaining?.unit,
    remaining: amt('remaining'),
    reserved: amt('reserved'),
    spent: amt('spent'),
    allocated: amt('allocated'),
    debt: amt('debt'),
    overdraft_limit: amt('overdraft_limit'),
    is_over_limit: b.is_over_limit === true,
    units,
    raw: b,
  };
}

/** Every Balance under the tenant (include_children=true), all pages. */
export async function fetchBalances(client: Client, apiKey: string, tenant: string, pageSize = 200): Promise<{ balances: Balance[]; text: string }> {
  const texts: string[] = [];
  const rows: Json[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const q = `/v1/balances?tenant=${encodeURIComponent(tenant)}&include_children=true&limit=${pageSize}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const r = await client.get(q, { apiKey });
    if (r.status !== 200) throw new Error(`GET ${q}: ${show(r)}`);
    texts.push(JSON.stringify(r.body.balances));
    rows.push(...(r.body.balances as Json[]));
    if (!r.body.has_more) break;
    cursor = r.body.next_cursor;
    if (!cursor) throw new Error(`has_more without next_cursor: ${show(r)}`);
  }
  return { balances: rows.map(toBalance), text: texts.join('\n') };
}

/** Every reservation of the tenant with the given status, all pages. */
export async function fetchReservations(client: Client, apiKey: string, status: (typeof STATUSES)[number], pageSize = 200): Promise<ReservationRow[]> {
  const out: ReservationRow[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const q = `/v1/reservations?status=${status}&limit=${pageSize}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const r = await client.get(q, { apiKey });
    if (r.status !== 200) throw new Error(`GET ${q}: ${show(r)}`);
    for (const row of r.body.reservations as Json[]) out.push({ ...row, raw: row });
    if (!r.body.has_more) break;
    cursor = r.body.next_cursor;
    if (!cursor) throw new Error(`has_more without next_cursor: ${show(r)}`);
  }
  return out;
}

/**
 * Balances and reservations are separate reads, and the sweeper may expire a reservation
 * between them. Balances are read before and after the listings; equal texts mean no
 * ledger mutation happened in between (every mutation changes some amount).
 */
export async function snapshot(client: Client, apiKey: string, tenant: string, pageSize = 200): Promise<Snapshot> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const before = await fetchBalances(client, apiKey, tenant, pageSize);
    const reservations: ReservationRow[] = [];
    for (const s of STATUSES) reservations.push(...(await fetchReservations(client, apiKey, s, pageSize)));
    const after = await fetchBalances(client, apiKey, tenant, pageSize);
    if (before.text === after.text) {
      const ids = new Set(reservations.map((r) => r.reservation_id));
      if (ids.size !== reservations.length) throw new Error('a reservation was listed twice across pages/statuses');
      return { balances: after.balances, balancesText: after.text, reservations, at: Date.now() };
    }
  }
  throw new Error('could not take a consistent ledger snapshot in 50 attempts (ledger kept changing)');
}

export interface LedgerCheckOptions {
  /** No ALLOW_WITH_OVERDRAFT was used: debt must be 0 everywhere. */
  noOverdraft?: boolean;
  /** Only REJECT was used: additionally nothing may be over limit. */
  rejectOnly?: boolean;
  /** No events or funding were used: spent + debt must equal the sum of committed charges. */
  reservationsOnly?: boolean;
}

/**
 * The ledger rules, per scope:
 *  - every amount of a Balance shares one unit;
 *  - remaining == allocated - spent - reserved - debt (RT ledger invariant);
 *  - amounts are non-negative integers (remaining may be negative);
 *  - no oversubscription: reserved <= allocated and spent + reserved <= allocated (holds need
 *    remaining >= estimate; overage that remaining cannot fund becomes debt, never spent);
 *  - debt > overdraft_limit implies is_over_limit;
 *  - reserved == the sum of holds of ACTIVE reservations whose affected scopes include it;
 *  - spent + debt == the sum of `committed` of COMMITTED reservations under it.
 * Returns a list of human-readable violations (empty when all hold).
 */
export function checkLedger(s: Snapshot, opts: LedgerCheckOptions = {}): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const b of s.balances) {
    const id = `${b.scope} (${b.unit})`;
    if (seen.has(id)) problems.push(`${id}: listed twice`);
    seen.add(id);
    const bad = (msg: string) => problems.push(`${id}: ${msg} — ${JSON.stringify(b.raw)}`);
    if (new Set(b.units).size !== 1) bad(`mixed units ${b.units.join(',')}`);
    for (const f of ['reserved', 'spent', 'allocated', 'debt', 'overdraft_limit'] as const) {
      if (!Number.isSafeInteger(b[f]) || b[f] < 0) bad(`${f} must be a non-negative integer, got ${b[f]}`);
    }
    if (!Number.isSafeInteger(b.remaining)) bad(`remaining must be an integer, got ${b.remaining}`);
    if (b.remaining !== b.allocated - b.spent - b.reserved - b.debt) {
      bad(`remaining ${b.remaining} != allocated ${b.allocated} - spent ${b.spent} - reserved ${b.reserved} - debt ${b.debt}`);
    }
    if (b.reserved > b.allocated) bad(`oversubscribed: reserved ${b.reserved} > allocated ${b.allocated}`);
    if (b.spent + b.reserved > b.allocated) bad(`oversubscribed: spent ${b.spent} + reserved ${b.reserved} > allocated ${b.allocated}`);
    if (b.debt > b.overdraft_limit && !b.is_over_limit) bad(`debt ${b.debt} > overdraft_limit ${b.overdraft_limit} but is_over_limit is false`);
    if (opts.noOverdraft && b.debt !== 0) bad(`debt ${b.debt} although no ALLOW_WITH_OVERDRAFT reservation exists`);
    if (opts.rejectOnly && b.is_over_limit) bad('is_over_limit although every reservation used REJECT');
    if (opts.rejectOnly && b.remaining < 0) bad(`remaining ${b.remaining} < 0 although every reservation used REJECT`);

    let held = 0;
    let committed = 0;
    for (const r of s.reservations) {
      if (!r.affected_scopes.includes(b.scope) || r.reserved.unit !== b.unit) continue;
      if (r.status === 'ACTIVE') held += r.reserved.amount;
      if (r.status === 'COMMITTED') committed += r.committed?.amount ?? NaN;
    }
    if (b.reserved !== held) bad(`reserved ${b.reserved} != sum of ACTIVE holds ${held}`);
    if (opts.reservationsOnly && b.spent + b.debt !== committed) {
      bad(`spent ${b.spent} + debt ${b.debt} != sum of committed charges ${committed}`);
    }
  }
  for (const r of s.reservations) {
    if (r.status === 'COMMITTED' && (r.committed === undefined || r.committed.unit !== r.reserved.unit)) {
      problems.push(`reservation ${r.reservation_id} is COMMITTED without a committed amount in ${r.reserved.unit}: ${JSON.stringify(r.raw)}`);
    }
  }
  return problems;
}
