/**
 * Optimistic transactions over the keys of one slot, for the governance plane and the webhook
 * dispatcher (low-rate paths whose rules live in TypeScript). A transaction reads what it needs,
 * runs its logic, and hands its writes to one Lua script that first checks every key it read is
 * unchanged (by fingerprint) and only then applies them all; otherwise nothing is written and
 * the whole transaction runs again on fresh reads. The hot ledger path never goes through here:
 * it has its own scripts (lua/*.ts), which never conflict.
 *
 * Fingerprints are order-independent for hashes (HGETALL order is not stable), so Lua never has
 * to sort strings (its < follows the server's collation locale).
 */
import { createHash } from 'node:crypto';
import type { EventDraft, OpContext } from '../../events/model.js';
import { CyclesError } from '../../ledger/errors.js';
import { LuaScript, type RedisConn } from './conn.js';
import { toHash, type Hash } from './records.js';

/** Lua side of the fingerprints; must compute exactly what fingerprintHash / fingerprintList do. */
const APPLY = new LuaScript(
  'apply',
  String.raw`
local function hash_fp(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return '' end
  local acc = { 0, 0, 0, 0, 0 }
  for j = 1, #flat, 2 do
    local h = redis.sha1hex(flat[j] .. '\0' .. flat[j + 1])
    for w = 1, 5 do acc[w] = bit.bxor(acc[w], tonumber(string.sub(h, w * 8 - 7, w * 8), 16)) end
  end
  local out = { tostring(#flat / 2) }
  for w = 1, 5 do out[w + 1] = bit.tohex(acc[w], 8) end
  return table.concat(out, ':')
end

local n = tonumber(ARGV[1])
local a = 2
for i = 1, n do
  local kind, want = ARGV[a], ARGV[a + 1]
  a = a + 2
  local got
  if kind == 'h' then
    got = hash_fp(KEYS[i])
  elseif kind == 'z' then
    local m = redis.call('ZRANGE', KEYS[i], 0, -1)
    got = (#m == 0) and '' or redis.sha1hex(table.concat(m, '\1'))
  else
    local v = redis.call('GET', KEYS[i])
    got = v and redis.sha1hex(v) or ''
  end
  if got ~= want then return 'CONFLICT' end
end
local entries = { 'OK' }
while a <= #ARGV do
  local op, ki, na = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  -- '?CMD': only when the key exists (a blind update that must not recreate a deleted record).
  if string.sub(op, 1, 1) == '?' then
    if redis.call('EXISTS', KEYS[ki]) == 1 then redis.call(string.sub(op, 2), KEYS[ki], unpack(ARGV, a + 3, a + 2 + na)) end
  else
    local r = redis.call(op, KEYS[ki], unpack(ARGV, a + 3, a + 2 + na))
    if op == 'XADD' then entries[#entries + 1] = r end
  end
  a = a + 3 + na
end
return entries
`,
);

export const TX_SCRIPTS = [APPLY];

const sha1 = (s: string): string => createHash('sha1').update(s, 'utf8').digest('hex');

export function fingerprintHash(h: Hash | undefined): string {
  if (!h) return '';
  const entries = Object.entries(h);
  if (entries.length === 0) return '';
  const acc = [0, 0, 0, 0, 0];
  for (const [f, v] of entries) {
    const d = sha1(`${f}\u0000${v}`);
    for (let w = 0; w < 5; w++) acc[w] = (acc[w]! ^ parseInt(d.slice(w * 8, w * 8 + 8), 16)) >>> 0;
  }
  return [String(entries.length), ...acc.map((x) => x.toString(16).padStart(8, '0'))].join(':');
}

export const fingerprintList = (members: readonly string[]): string => (members.length === 0 ? '' : sha1(members.join('\u0001')));

interface Read {
  kind: 'h' | 'z' | 's';
  fp: string;
}

/** An event to write to an owner's outbox with this transaction. */
interface Emitted {
  outbox: string;
  owner: string;
  draft: EventDraft;
  ctx: OpContext;
}

/** An outbox entry a committed transaction or script wrote. */
export interface OutboxEntry {
  owner: string;
  id: string;
}

export class SlotTx {
  private readonly reads = new Map<string, Read>();
  private readonly view = new Map<string, Hash | undefined>();
  private readonly ops: Array<{ op: string; key: string; args: string[] }> = [];
  private readonly emitted: Emitted[] = [];

  constructor(
    readonly conn: RedisConn,
    /** Any key of the slot (routes the commit on a cluster). */
    readonly slotKey: string,
    /** The store's clock for this attempt (Redis TIME). */
    readonly now: number,
  ) {}

  /** A hash as this transaction sees it (its own writes included); undefined when absent. */
  async hash(key: string): Promise<Hash | undefined> {
    if (!this.view.has(key)) {
      const h = toHash(await this.conn.call(key, ['HGETALL', key], true));
      if (!this.reads.has(key)) this.reads.set(key, { kind: 'h', fp: fingerprintHash(h) });
      this.view.set(key, h);
    }
    const h = this.view.get(key);
    return h ? { ...h } : undefined;
  }

  /** A hash already read by this transaction (synchronous; for the LedgerView adapter). */
  peek(key: string): Hash | undefined {
    if (!this.view.has(key)) throw new Error(`transaction read of ${key} was not preloaded`);
    const h = this.view.get(key);
    return h ? { ...h } : undefined;
  }

  hashes(keys: readonly string[]): Promise<Array<Hash | undefined>> {
    return Promise.all(keys.map((k) => this.hash(k)));
  }

  /** Members of a sorted set, in order; the transaction conflicts if the member list changes. */
  async members(key: string): Promise<string[]> {
    const m = (await this.conn.call<string[]>(key, ['ZRANGE', key, '0', '-1'], true)) ?? [];
    if (!this.reads.has(key)) this.reads.set(key, { kind: 'z', fp: fingerprintList(m) });
    return m;
  }

  async str(key: string): Promise<string | undefined> {
    const v = await this.conn.call(key, ['GET', key], true);
    const s = typeof v === 'string' ? v : undefined;
    if (!this.reads.has(key)) this.reads.set(key, { kind: 's', fp: s === undefined ? '' : sha1(s) });
    return s;
  }

  /** Sets fields (undefined deletes the field). */
  put(key: string, fields: Record<string, string | undefined>): void {
    const set: string[] = [];
    const del: string[] = [];
    const cur = { ...(this.view.get(key) ?? {}) };
    for (const [f, v] of Object.entries(fields)) {
      if (v === undefined) {
        del.push(f);
        delete cur[f];
      } else {
        set.push(f, v);
        cur[f] = v;
      }
    }
    if (set.length) this.ops.push({ op: 'HSET', key, args: set });
    if (del.length) this.ops.push({ op: 'HDEL', key, args: del });
    this.view.set(key, Object.keys(cur).length ? cur : undefined);
  }

  /**
   * Sets fields of a hash only if it still exists when the transaction commits, without reading
   * it: concurrent writers of the same hash do not conflict over this write.
   */
  putIfExists(key: string, fields: Record<string, string>): void {
    this.ops.push({ op: '?HSET', key, args: Object.entries(fields).flat() });
  }

  /** Replaces a hash with exactly these fields. */
  replace(key: string, fields: Hash): void {
    this.ops.push({ op: 'DEL', key, args: [] });
    const set = Object.entries(fields).flat();
    if (set.length) this.ops.push({ op: 'HSET', key, args: set });
    this.view.set(key, Object.keys(fields).length ? { ...fields } : undefined);
  }

  del(key: string): void {
    this.ops.push({ op: 'DEL', key, args: [] });
    this.view.set(key, undefined);
  }

  command(op: string, key: string, ...args: Array<string | number>): void {
    this.ops.push({ op, key, args: args.map(String) });
  }

  emit(outbox: string, owner: string, draft: EventDraft, ctx: OpContext): void {
    this.emitted.push({ outbox, owner, draft, ctx });
  }

  get emittedCount(): number {
    return this.emitted.length;
  }

  /** Applies the writes if nothing read has changed: the outbox entries written, or undefined on a conflict (nothing written). */
  async commit(): Promise<OutboxEntry[] | undefined> {
    // Events of one context go out as one outbox entry (one fact, several events).
    const groups = new Map<string, { outbox: string; owner: string; ctx: OpContext; drafts: EventDraft[] }>();
    for (const e of this.emitted) {
      const id = `${e.outbox}\u0000${JSON.stringify(e.ctx)}`;
      const g = groups.get(id) ?? { outbox: e.outbox, owner: e.owner, ctx: e.ctx, drafts: [] };
      g.drafts.push(e.draft);
      groups.set(id, g);
    }
    const ops = [...this.ops];
    for (const g of groups.values()) {
      ops.push({ op: 'XADD', key: g.outbox, args: ['*', 'f', JSON.stringify({ op: 'drafts', now: this.now, ctx: g.ctx, d: g.drafts })] });
    }
    if (ops.length === 0) return [];
    const keys: string[] = [];
    const index = new Map<string, number>();
    const slot = (k: string): number => {
      let i = index.get(k);
      if (i === undefined) {
        keys.push(k);
        i = keys.length;
        index.set(k, i);
      }
      return i;
    };
    const args: string[] = [String(this.reads.size)];
    for (const [k, r] of this.reads) {
      slot(k);
      args.push(r.kind, r.fp);
    }
    for (const o of ops) args.push(o.op, String(slot(o.key)), String(o.args.length), ...o.args);
    const reply = await this.conn.run(APPLY, keys, args);
    if (!Array.isArray(reply)) return undefined;
    const owners = [...groups.values()].map((g) => g.owner);
    return reply.slice(1).map((id, i) => ({ owner: owners[i]!, id: String(id) }));
  }
}

const TX_ATTEMPTS = 25;

async function redisTime(conn: RedisConn, key: string): Promise<number> {
  const [s, us] = await conn.call<string[]>(key, ['TIME'], true);
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/**
 * Runs `body` as one optimistic transaction over the slot of `slotKey`, again from scratch on a
 * conflict. `body` must only read and write keys of that slot, and must not have side effects
 * beyond the transaction (it may run several times).
 */
export async function runTx<T>(
  conn: RedisConn,
  slotKey: string,
  body: (tx: SlotTx) => Promise<T>,
  /** Told which outbox entries the committed attempt wrote. */
  committed?: (entries: OutboxEntry[]) => Promise<void>,
): Promise<T> {
  for (let attempt = 0; attempt < TX_ATTEMPTS; attempt++) {
    const tx = new SlotTx(conn, slotKey, await redisTime(conn, slotKey));
    const result = await body(tx);
    const entries = await tx.commit();
    if (entries) {
      if (entries.length > 0) await committed?.(entries);
      return result;
    }
    await new Promise((r) => setTimeout(r, Math.min(50, 1 + Math.random() * 2 ** attempt)));
  }
  throw new CyclesError('SERVICE_UNAVAILABLE', 'The store is busy: the change kept conflicting with concurrent updates; retry with the same idempotency key');
}
