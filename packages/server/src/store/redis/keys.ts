/**
 * The Redis key layout, built in exactly one place (a mistyped key is silent dead code).
 *
 * Every key that holds a tenant's ledger state carries the hash tag `{t:<tenant>}`, so all of
 * them live in one Cluster slot and one Lua script can read and write them atomically. Scripts
 * never build key names: the TypeScript side builds them here and passes them in KEYS.
 *
 * Tenant ids are `[a-z0-9-]`, scopes `[a-z0-9._-:/]` and units `[A-Z_]`, so no key can be
 * mistaken for another (`:` and `|` separate the parts; none of them can contain `{` or `}`).
 */
import type { Unit } from '../../ledger/amounts.js';

export const UNITS_IN_KEYS: readonly Unit[] = ['USD_MICROCENTS', 'TOKENS', 'CREDITS', 'RISK_POINTS'];

/** Lexicographic index members order by a fixed-width decimal (every indexed number is in [0, 2^53)). */
export const pad16 = (n: number): string => String(n).padStart(16, '0');

/** Separates the sort value from the reservation id inside a lexicographic index member. */
export const SEP = '\u0000';

/** The sort indexes kept per tenant for listing reservations; each is a score-0 ZSET ordered by member. */
export const RESERVATION_INDEXES = ['id', 'created', 'expires', 'status', 'reserved', 'scope'] as const;
export type ReservationIndex = (typeof RESERVATION_INDEXES)[number];

export class Keyspace {
  constructor(readonly prefix: string) {
    if (/[{}]/.test(prefix)) throw new Error('the Redis key prefix must not contain { or }');
  }

  /** `{t:<tenant>}`: the hash tag that pins a tenant's keys to one slot. */
  tag(tenant: string): string {
    return `${this.prefix}{t:${tenant}}`;
  }

  tenant(tenant: string): string {
    return `${this.tag(tenant)}:tenant`;
  }

  budget(tenant: string, scope: string, unit: string): string {
    return `${this.tag(tenant)}:b:${unit}|${scope}`;
  }

  /** Budget keys for every unit at every scope, scope-major (the layout reserve/decide/event expect). */
  budgetGrid(tenant: string, scopes: readonly string[]): string[] {
    const out: string[] = [];
    for (const s of scopes) for (const u of UNITS_IN_KEYS) out.push(this.budget(tenant, s, u));
    return out;
  }

  /** ZSET (score 0) of the tenant's ledger ids, and HASH ledger_id -> `unit|scope`. */
  tenantBudgets(tenant: string): string {
    return `${this.tag(tenant)}:budgets`;
  }

  tenantLedgers(tenant: string): string {
    return `${this.tag(tenant)}:ledgers`;
  }

  reservation(tenant: string, id: string): string {
    return `${this.tag(tenant)}:r:${id}`;
  }

  /** ZSET of ACTIVE reservations scored by expires_at_ms + grace: the tenant's expiry queue. */
  due(tenant: string): string {
    return `${this.tag(tenant)}:due`;
  }

  /** ZSET of terminal reservations scored by the time they ended: the retention queue. */
  finalized(tenant: string): string {
    return `${this.tag(tenant)}:rx:final`;
  }

  reservationIndex(tenant: string, index: ReservationIndex): string {
    return `${this.tag(tenant)}:rx:${index}`;
  }

  reservationIndexes(tenant: string): string[] {
    return RESERVATION_INDEXES.map((i) => this.reservationIndex(tenant, i));
  }

  idempotency(tenant: string, endpoint: string, key: string): string {
    return `${this.tag(tenant)}:i:${endpoint}:${key}`;
  }

  /** STREAM of ledger facts from which the tenant's events are derived (the outbox). */
  outbox(tenant: string): string {
    return `${this.tag(tenant)}:outbox`;
  }

  apiKey(tenant: string, keyId: string): string {
    return `${this.tag(tenant)}:k:${keyId}`;
  }

  tenantApiKeys(tenant: string): string {
    return `${this.tag(tenant)}:keys`;
  }

  /** Policies of a tenant: ZSET (score 0) of ids, one HASH per policy, names -> id, and the ledger's view. */
  tenantPolicies(tenant: string): string {
    return `${this.tag(tenant)}:policies`;
  }

  policy(tenant: string, id: string): string {
    return `${this.tag(tenant)}:policy:${id}`;
  }

  policyNames(tenant: string): string {
    return `${this.tag(tenant)}:policy-names`;
  }

  /** HASH policy_id -> the fields the reserve script needs, joined by \x1f (see lua/evaluate.ts). */
  policyRules(tenant: string): string {
    return `${this.tag(tenant)}:policy-rules`;
  }

  /** Audit rows of a tenant (or of a sentinel such as __admin__): ZSET log_id by time, one STRING of JSON each. */
  auditIndex(tenant: string): string {
    return `${this.tag(tenant)}:audit`;
  }

  auditRow(tenant: string, logId: string): string {
    return `${this.tag(tenant)}:audit:${logId}`;
  }

  /** Idempotency records of admin-plane bulk actions (they belong to no tenant). */
  adminIdempotency(endpoint: string, key: string): string {
    return this.idempotency('__admin__', endpoint, key);
  }

  // ---- the webhook dispatcher: all of its state shares the {wh} slot ----

  private wh(suffix: string): string {
    return `${this.prefix}{wh}:${suffix}`;
  }

  webhook(id: string): string {
    return this.wh(`sub:${id}`);
  }

  webhooks(): string {
    return this.wh('subs');
  }

  delivery(id: string): string {
    return this.wh(`dl:${id}`);
  }

  /** ZSET (score 0) of `<attempted_at padded>\0<delivery_id>` per subscription. */
  subscriptionDeliveries(subscriptionId: string): string {
    return this.wh(`dls:${subscriptionId}`);
  }

  /** ZSET of the delivery ids the subscription's latest replay queued (one replay at a time). */
  replayDeliveries(subscriptionId: string): string {
    return this.wh(`replay:${subscriptionId}`);
  }

  /** Every delivery by attempted_at (retention). */
  allDeliveries(): string {
    return this.wh('dls');
  }

  /** Deliveries to attempt, scored by the time they are next due (or their lease ends). */
  deliveryQueue(): string {
    return this.wh('queue');
  }

  /** STRING delivery id of (subscription, event, replay): one delivery per event and subscription. */
  deliveryPair(subscriptionId: string, eventId: string, replayId: string | undefined): string {
    return this.wh(`pair:${subscriptionId}|${eventId}|${replayId ?? ''}`);
  }

  /** Last outbox entry of an owner already fanned out to deliveries. */
  fanoutCursor(owner: string): string {
    return this.wh(`cursor:${owner}`);
  }

  /** Owners whose outbox has entries the fan-out may not have seen. */
  fanoutDirty(): string {
    return this.wh('dirty');
  }

  /** The outbox of events the dispatcher itself writes (delivery failures, auto-disable). */
  dispatcherOutbox(): string {
    return this.wh('outbox');
  }

  /** The outbox stream of an owner: a tenant (or a sentinel tenant), or WH_OWNER for the dispatcher's own. */
  outboxOf(owner: string): string {
    return owner === WH_OWNER ? this.dispatcherOutbox() : this.outbox(owner);
  }

  // ---- global keys (admin paths only; never touched by a ledger script) ----

  /** ZSET (score 0) of every owner of an outbox stream (tenants, sentinels, the dispatcher). */
  streams(): string {
    return `${this.prefix}streams`;
  }

  /** ZSET (score 0) of every owner of audit rows (tenants and sentinels). */
  auditOwners(): string {
    return `${this.prefix}audit-owners`;
  }

  /** STRING tenant of a policy id (immutable once written). */
  policyOwner(id: string): string {
    return `${this.prefix}policy:id:${id}`;
  }

  /** ZSET (score 0) of every tenant id. */
  tenants(): string {
    return `${this.prefix}tenants`;
  }

  /** ZSET (score 0) of every ledger id, and HASH ledger_id -> `unit|scope`. */
  allBudgets(): string {
    return `${this.prefix}budgets`;
  }

  allLedgers(): string {
    return `${this.prefix}ledgers`;
  }

  /** ZSET (score 0) of every API key id. */
  allApiKeys(): string {
    return `${this.prefix}apikeys`;
  }

  /** STRING `<tenant> <key_id>` for a key hash (immutable once written). */
  apiKeyByHash(hash: string): string {
    return `${this.prefix}apikey:h:${hash}`;
  }

  /** STRING tenant of a key id (immutable once written). */
  apiKeyOwner(keyId: string): string {
    return `${this.prefix}apikey:id:${keyId}`;
  }

  meta(): string {
    return `${this.prefix}meta`;
  }

  /** Expiry registry: ZSET tenant -> earliest time worth a look, and SET of tenants touched since. */
  sweepDue(): string {
    return `${this.prefix}{sweep}:due`;
  }

  sweepTouched(): string {
    return `${this.prefix}{sweep}:touched`;
  }

  lease(job: string): string {
    return `${this.prefix}lease:${job}`;
  }
}

/** Owner name of the dispatcher's own outbox stream (cannot be a tenant id). */
export const WH_OWNER = '~wh';

/** Reservation ids name their tenant, so commit/release/extend find the tenant's slot without a global index. */
const RESERVATION_ID = /^rsv_([a-z0-9-]{1,64})_([0-9a-f]{32})$/;

export const reservationIdFor = (tenant: string, random: string): string => `rsv_${tenant}_${random}`;

export function tenantOfReservation(id: string): string | undefined {
  return RESERVATION_ID.exec(id)?.[1];
}

/** Event ids name the tenant, the outbox entry and the event's position in it. */
const EVENT_ID = /^evt_([a-z0-9_~-]{1,64}?)_(\d+-\d+)_(\d+)$/;

export const eventIdFor = (tenant: string, entryId: string, index: number): string => `evt_${tenant}_${entryId}_${index}`;

export function parseEventId(id: string): { tenant: string; entryId: string; index: number } | undefined {
  const m = EVENT_ID.exec(id);
  return m ? { tenant: m[1]!, entryId: m[2]!, index: Number(m[3]) } : undefined;
}

/** Tenant of a budget scope (`tenant:<id>/...`). */
export function tenantOfScope(scope: string): string {
  const first = scope.split('/')[0] ?? '';
  return first.startsWith('tenant:') ? first.slice('tenant:'.length) : '';
}
