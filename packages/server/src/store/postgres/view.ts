/**
 * The LedgerView the PostgreSQL backend hands to the (synchronous) ledger operations.
 *
 * An operation runs against rows already loaded into this view. When it reads something that
 * is not loaded yet, the view throws a `Need` naming the rows; the async driver loads them
 * (locking what the operation may change) and runs the operation again from the start. Writes
 * are buffered per pass and flushed once the operation completes, so a pass cut short by a
 * `Need` leaves nothing behind. Operations are deterministic given the rows they read, apart
 * from generated ids, which are only ever written by the final pass.
 */
import { buildEvent, type EventDraft, type EventRecord, type OpContext } from '../../events/model.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { LedgerView } from '../../ledger/view.js';

export type Want =
  | { kind: 'tenant'; tenantId: string }
  | { kind: 'idempotency'; tenantId: string; endpoint: string; key: string }
  | { kind: 'reservation'; reservationId: string }
  | { kind: 'budgets'; tenantId: string; scopes: string[] }
  | { kind: 'policies'; tenantId: string };

/** Thrown through the operation to ask the driver for rows; deliberately not an Error (no stack). */
export class Need {
  constructor(readonly want: Want) {}
}

export const idemKey = (tenantId: string, endpoint: string, key: string): string => `${tenantId}\u0000${endpoint}\u0000${key}`;
export const budgetKey = (scope: string, unit: string): string => `${scope}\u0000${unit}`;

/** Byte-order comparison of (scope, unit), the order budgets are locked and returned in. */
export function compareBudgets(a: BudgetRecord, b: BudgetRecord): number {
  if (a.scope !== b.scope) return a.scope < b.scope ? -1 : 1;
  return a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0;
}

export interface Writes {
  reservations: Map<string, { record: ReservationRecord; isNew: boolean }>;
  budgets: Map<string, BudgetRecord>;
  idempotency: Map<string, IdempotencyRecord>;
  events: EventRecord[];
}

export class SnapshotView implements LedgerView {
  // Rows loaded in this transaction; null = known not to exist.
  readonly tenants = new Map<string, TenantRecord | null>();
  readonly idempotencyRecords = new Map<string, IdempotencyRecord | null>();
  readonly reservations = new Map<string, ReservationRecord | null>();
  /** Per tenant, the scopes whose budgets (in every unit) are loaded. */
  readonly budgetScopes = new Map<string, Set<string>>();
  /** Per tenant, the loaded budget rows by (scope, unit). */
  readonly budgetRows = new Map<string, Map<string, BudgetRecord>>();
  readonly policyLists = new Map<string, PolicyRecord[]>();
  writes: Writes = SnapshotView.noWrites();

  constructor(readonly now: number) {}

  private static noWrites(): Writes {
    return { reservations: new Map(), budgets: new Map(), idempotency: new Map(), events: [] };
  }

  /** Starts a pass: the loaded rows stay, the writes of an earlier (interrupted) pass go. */
  reset(): void {
    this.writes = SnapshotView.noWrites();
  }

  /** A copy of the buffered writes, to go back to when one row of a bulk action fails. */
  checkpoint(): Writes {
    const w = this.writes;
    return { reservations: new Map(w.reservations), budgets: new Map(w.budgets), idempotency: new Map(w.idempotency), events: [...w.events] };
  }

  restore(saved: Writes): void {
    this.writes = saved;
  }

  get hasWrites(): boolean {
    const w = this.writes;
    return w.reservations.size > 0 || w.budgets.size > 0 || w.idempotency.size > 0 || w.events.length > 0;
  }

  // ---- loading (by the driver) ----

  loadTenant(tenantId: string, t: TenantRecord | undefined): void {
    this.tenants.set(tenantId, t ?? null);
  }

  loadIdempotency(tenantId: string, endpoint: string, key: string, r: IdempotencyRecord | undefined): void {
    this.idempotencyRecords.set(idemKey(tenantId, endpoint, key), r ?? null);
  }

  loadReservation(id: string, r: ReservationRecord | undefined): void {
    this.reservations.set(id, r ?? null);
  }

  loadBudgets(tenantId: string, scopes: readonly string[], rows: readonly BudgetRecord[]): void {
    let loaded = this.budgetScopes.get(tenantId);
    if (!loaded) this.budgetScopes.set(tenantId, (loaded = new Set()));
    for (const s of scopes) loaded.add(s);
    let byKey = this.budgetRows.get(tenantId);
    if (!byKey) this.budgetRows.set(tenantId, (byKey = new Map()));
    for (const b of rows) byKey.set(budgetKey(b.scope, b.unit), b);
  }

  /** Scopes of `scopes` whose budgets are not loaded yet. */
  missingScopes(tenantId: string, scopes: readonly string[]): string[] {
    const loaded = this.budgetScopes.get(tenantId);
    return loaded ? scopes.filter((s) => !loaded.has(s)) : [...scopes];
  }

  loadPolicies(tenantId: string, policies: PolicyRecord[]): void {
    this.policyLists.set(tenantId, policies);
  }

  hasReservation(id: string): boolean {
    return this.reservations.has(id);
  }

  // ---- LedgerView ----

  tenant(tenantId: string): TenantRecord | undefined {
    const t = this.tenants.get(tenantId);
    if (t === undefined) throw new Need({ kind: 'tenant', tenantId });
    return t ?? undefined;
  }

  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined {
    const k = idemKey(tenantId, endpoint, key);
    const written = this.writes.idempotency.get(k);
    if (written) return written;
    const r = this.idempotencyRecords.get(k);
    if (r === undefined) throw new Need({ kind: 'idempotency', tenantId, endpoint, key });
    return r ?? undefined;
  }

  putIdempotency(record: IdempotencyRecord): void {
    this.writes.idempotency.set(idemKey(record.tenant_id, record.endpoint, record.key), record);
  }

  reservation(id: string): ReservationRecord | undefined {
    const written = this.writes.reservations.get(id);
    if (written) return written.record;
    const r = this.reservations.get(id);
    if (r === undefined) throw new Need({ kind: 'reservation', reservationId: id });
    return r ?? undefined;
  }

  insertReservation(record: ReservationRecord): void {
    this.writes.reservations.set(record.reservation_id, { record, isNew: true });
  }

  updateReservation(record: ReservationRecord): void {
    const prior = this.writes.reservations.get(record.reservation_id);
    this.writes.reservations.set(record.reservation_id, { record, isNew: prior?.isNew ?? false });
  }

  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[] {
    if (scopes.length === 0) return [];
    const missing = this.missingScopes(tenantId, scopes);
    if (missing.length > 0) throw new Need({ kind: 'budgets', tenantId, scopes: missing });
    const wanted = new Set(scopes);
    const out: BudgetRecord[] = [];
    for (const [k, b] of this.budgetRows.get(tenantId) ?? []) {
      if (!wanted.has(b.scope)) continue;
      out.push(this.writes.budgets.get(k) ?? b);
    }
    return out.sort(compareBudgets);
  }

  updateBudgets(records: readonly BudgetRecord[]): void {
    for (const b of records) this.writes.budgets.set(budgetKey(b.scope, b.unit), b);
  }

  policies(tenantId: string): PolicyRecord[] {
    const p = this.policyLists.get(tenantId);
    if (p === undefined) throw new Need({ kind: 'policies', tenantId });
    return p;
  }

  emit(draft: EventDraft, ctx: OpContext): void {
    this.writes.events.push(buildEvent(draft, ctx, this.now));
  }
}
