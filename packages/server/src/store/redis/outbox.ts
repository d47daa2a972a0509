/**
 * The Redis outbox holds facts, not events: each ledger script appends to the tenant's stream
 * what changed (budget states before and after, the reservation involved, the request context)
 * in the same atomic step as the change. Events are derived from a fact deterministically with
 * the TypeScript ledger's own event builders (ledger/transitions.ts, reserve.ts deniedEvent) and
 * buildEvent, with ids named after the stream entry, so every read yields the same bytes.
 * The scripts append a fact only when at least one event follows from it.
 */
import { buildEvent, type EventDraft, type EventRecord, type OpContext } from '../../events/model.js';
import type { Unit } from '../../ledger/amounts.js';
import { deniedEvent } from '../../ledger/ops/reserve.js';
import { budgetTransitions } from '../../ledger/transitions.js';
import type { BudgetRecord } from '../../ledger/types.js';
import { eventIdFor } from './keys.js';

type Pair = [string, Unit, number, number, number, number, number, boolean, number, number, number, number, number, boolean];

interface FactBase {
  now: number;
  ctx: OpContext;
}

export type Fact = FactBase &
  (
    | { op: 'reserve'; rid: string; b: Pair[] }
    | { op: 'commit'; rid: string; policy: string; scope_path: string; unit: Unit; est: number; actual: number; delta: number; debt_incurred: number; b: Pair[] }
    | { op: 'event'; policy: string; b: Pair[] }
    | { op: 'deny'; scope_path: string; unit: Unit; reason: string; requested: number; remaining?: number; action: object; subject: object }
    | { op: 'expire'; rid: string; scope_path: string; unit: Unit; est: number; created: number; ttl: number; ext: number }
    /** Events built in TypeScript by a governance or dispatcher transaction. */
    | { op: 'drafts'; d: EventDraft[] }
  );

function budgetsOf(tenant: string, pairs: Pair[]): { before: BudgetRecord[]; after: BudgetRecord[] } {
  const mk = (p: Pair, o: number): BudgetRecord => ({
    ledger_id: '',
    tenant_id: tenant,
    scope: p[0],
    unit: p[1],
    allocated: p[o] as number,
    spent: p[o + 1] as number,
    reserved: p[o + 2] as number,
    debt: p[o + 3] as number,
    overdraft_limit: p[o + 4] as number,
    is_over_limit: p[o + 5] as boolean,
    status: 'ACTIVE',
    created_at: 0,
    updated_at: 0,
  });
  return { before: pairs.map((p) => mk(p, 2)), after: pairs.map((p) => mk(p, 8)) };
}

/** The drafts a fact stands for, in the order the TypeScript ledger emits them. */
export function draftsOf(tenant: string, f: Fact): EventDraft[] {
  switch (f.op) {
    case 'drafts':
      return f.d;
    case 'reserve': {
      const { before, after } = budgetsOf(tenant, f.b);
      return budgetTransitions(before, after, { reservationId: f.rid });
    }
    case 'commit': {
      const { before, after } = budgetsOf(tenant, f.b);
      const out = budgetTransitions(before, after, { reservationId: f.rid, overagePolicy: f.policy });
      if (f.delta > 0) {
        out.push({
          event_type: 'reservation.commit_overage',
          tenant_id: tenant,
          scope: f.scope_path,
          data: {
            reservation_id: f.rid,
            scope: f.scope_path,
            unit: f.unit,
            estimated_amount: f.est,
            actual_amount: f.actual,
            overage: f.delta,
            overage_policy: f.policy,
            debt_incurred: f.debt_incurred,
          },
        });
      }
      return out;
    }
    case 'event': {
      const { before, after } = budgetsOf(tenant, f.b);
      return budgetTransitions(before, after, { overagePolicy: f.policy });
    }
    case 'deny':
      return [deniedEvent(tenant, f.scope_path, { subject: f.subject, action: f.action, estimate: { unit: f.unit, amount: f.requested } }, f.reason, f.remaining)];
    case 'expire':
      return [
        {
          event_type: 'reservation.expired',
          tenant_id: tenant,
          scope: f.scope_path,
          data: {
            reservation_id: f.rid,
            scope: f.scope_path,
            unit: f.unit,
            estimated_amount: f.est,
            created_at: new Date(f.created).toISOString(),
            expired_at: new Date(f.now).toISOString(),
            ttl_ms: f.ttl,
            extensions_used: f.ext,
          },
        },
      ];
  }
}

/** A stream entry as XRANGE returns it: [id, [field, value, ...]]. */
export type StreamEntry = [string, string[]];

/** The events of one entry of `owner`'s outbox, as stored records with their exact JSON. */
export function eventsOf(owner: string, entry: StreamEntry): EventRecord[] {
  const [entryId, fields] = entry;
  const i = fields.indexOf('f');
  if (i < 0 || fields[i + 1] === undefined) return [];
  const fact = JSON.parse(fields[i + 1]!) as Fact;
  return draftsOf(owner, fact).map((d, n) => buildEvent(d, fact.ctx, fact.now, eventIdFor(owner, entryId, n)));
}
