/**
 * A LedgerView over an optimistic transaction (tx.ts), so the TypeScript ledger and governance
 * functions (fund, the close cascade) run unchanged on Redis for the admin plane. Its reads are
 * synchronous, so the caller preloads every key the operation will touch.
 */
import type { EventDraft, OpContext } from '../../events/model.js';
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { BudgetRecord, IdempotencyRecord, ReservationRecord, TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import { pad16, SEP, UNITS_IN_KEYS, type Keyspace } from './keys.js';
import { budgetFromHash, encodeField, reservationFromHash, tenantFromHash } from './records.js';
import type { SlotTx } from './tx.js';

export class TxLedgerView implements LedgerView {
  readonly now: number;

  constructor(
    private readonly tx: SlotTx,
    private readonly keys: Keyspace,
    /** The tenant whose slot the transaction runs in. */
    private readonly tenantId: string,
    private readonly policyList: PolicyRecord[] = [],
  ) {
    this.now = tx.now;
  }

  /** Reads what tenant(), idempotency(), budgets() and reservation() will be asked for. */
  static async preload(
    tx: SlotTx,
    keys: Keyspace,
    tenantId: string,
    what: { idempotency?: Array<[string, string]>; scopes?: readonly string[]; reservations?: readonly string[] },
  ): Promise<void> {
    await tx.hashes([
      keys.tenant(tenantId),
      ...(what.idempotency ?? []).map(([endpoint, key]) => keys.idempotency(tenantId, endpoint, key)),
      ...keys.budgetGrid(tenantId, what.scopes ?? []),
      ...(what.reservations ?? []).map((id) => keys.reservation(tenantId, id)),
    ]);
  }

  private own(tenantId: string): void {
    if (tenantId !== this.tenantId) throw new Error(`a transaction on tenant ${this.tenantId} cannot touch tenant ${tenantId}`);
  }

  tenant(tenantId: string): TenantRecord | undefined {
    this.own(tenantId);
    const h = this.tx.peek(this.keys.tenant(tenantId));
    return h ? tenantFromHash(h) : undefined;
  }

  idempotency(tenantId: string, endpoint: string, key: string): IdempotencyRecord | undefined {
    this.own(tenantId);
    const h = this.tx.peek(this.keys.idempotency(tenantId, endpoint, key));
    if (!h) return undefined;
    return {
      tenant_id: tenantId,
      endpoint,
      key,
      request_hash: h.h!,
      status: Number(h.s),
      body: h.b!,
      reservation_id: h.r || undefined,
      created_at: Number(h.c),
      expires_at: Number(h.e),
    };
  }

  putIdempotency(r: IdempotencyRecord): void {
    this.own(r.tenant_id);
    const key = this.keys.idempotency(r.tenant_id, r.endpoint, r.key);
    this.tx.replace(key, { h: r.request_hash, s: String(r.status), b: r.body, r: r.reservation_id ?? '', c: String(r.created_at), e: String(r.expires_at) });
    this.tx.command('PEXPIREAT', key, r.expires_at);
  }

  reservation(id: string): ReservationRecord | undefined {
    const h = this.tx.peek(this.keys.reservation(this.tenantId, id));
    return h ? reservationFromHash(h) : undefined;
  }

  insertReservation(): void {
    throw new Error('reservations are created by the reserve script only');
  }

  /** Writes the changed fields and keeps the due queue and the status / expires indexes in step. */
  updateReservation(r: ReservationRecord): void {
    const prev = this.reservation(r.reservation_id);
    if (!prev) throw new Error(`reservation ${r.reservation_id} was not preloaded`);
    const k = this.keys;
    const t = this.tenantId;
    const id = r.reservation_id;
    const fields: Record<string, string | undefined> = {};
    for (const f of ['status', 'expires_at_ms', 'extension_count', 'committed', 'committed_metadata', 'metrics', 'debt_incurred', 'finalized_at_ms', 'expired_at_ms'] as const) {
      const v = r[f];
      fields[f] = v === undefined ? undefined : encodeField(v as string | number | object);
    }
    this.tx.put(k.reservation(t, id), fields);
    if (prev.status !== r.status) {
      this.tx.command('ZREM', k.reservationIndex(t, 'status'), prev.status + SEP + id);
      this.tx.command('ZADD', k.reservationIndex(t, 'status'), 0, r.status + SEP + id);
    }
    if (prev.expires_at_ms !== r.expires_at_ms) {
      this.tx.command('ZREM', k.reservationIndex(t, 'expires'), pad16(prev.expires_at_ms) + SEP + id);
      this.tx.command('ZADD', k.reservationIndex(t, 'expires'), 0, pad16(r.expires_at_ms) + SEP + id);
    }
    if (r.status === 'ACTIVE') this.tx.command('ZADD', k.due(t), r.expires_at_ms + r.grace_period_ms, id);
    else {
      this.tx.command('ZREM', k.due(t), id);
      this.tx.command('ZADD', k.finalized(t), r.finalized_at_ms ?? r.expired_at_ms ?? this.now, id);
    }
  }

  budgets(tenantId: string, scopes: readonly string[]): BudgetRecord[] {
    this.own(tenantId);
    const out: BudgetRecord[] = [];
    for (const s of scopes) {
      for (const u of UNITS_IN_KEYS) {
        const h = this.tx.peek(this.keys.budget(tenantId, s, u));
        if (h) out.push(budgetFromHash(h));
      }
    }
    return out;
  }

  updateBudgets(records: readonly BudgetRecord[]): void {
    for (const b of records) {
      this.own(b.tenant_id);
      this.tx.put(this.keys.budget(b.tenant_id, b.scope, b.unit), {
        allocated: String(b.allocated),
        reserved: String(b.reserved),
        spent: String(b.spent),
        debt: String(b.debt),
        overdraft_limit: String(b.overdraft_limit),
        is_over_limit: b.is_over_limit ? '1' : '0',
        status: b.status,
        commit_overage_policy: b.commit_overage_policy,
        metadata: b.metadata === undefined ? undefined : JSON.stringify(b.metadata),
        updated_at: String(b.updated_at),
      });
    }
  }

  emit(draft: EventDraft, ctx: OpContext): void {
    this.tx.emit(this.keys.outbox(this.tenantId), this.tenantId, draft, ctx);
  }

  policies(): PolicyRecord[] {
    return this.policyList;
  }
}
