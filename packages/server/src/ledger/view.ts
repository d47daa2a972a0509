import type { EventDraft, OpContext } from '../events/model.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from './types.js';
import type { PolicyRecord } from './ops/shared.js';

/**
 * What one ledger operation may read and write inside a single atomic step.
 * A backend provides a view bound to an open transaction (SQLite, PostgreSQL) so that an
 * operation's reads and writes, its idempotency record and its outcome commit together.
 */
export interface LedgerView {
  /** Authoritative time for this step (the store's clock). */
  readonly now: number;
  tenant(tenantId: string): TenantRecord | undefined;
  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined;
  putIdempotency(record: IdempotencyRecord): void;
  reservation(reservationId: string): ReservationRecord | undefined;
  insertReservation(record: ReservationRecord): void;
  updateReservation(record: ReservationRecord): void;
  /** All budgets of the tenant at these scopes, in every unit. */
  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[];
  updateBudgets(records: readonly BudgetRecord[]): void;
  /** Writes an event to the outbox in this same atomic step, stamped with the request context. */
  emit(draft: EventDraft, ctx: OpContext): void;
  /** The tenant's ACTIVE policies (the ledger picks the one that governs a reservation). */
  policies(tenantId: string): PolicyRecord[];
}
