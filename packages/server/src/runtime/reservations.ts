/** Read shapes of reservations: ReservationDetail and ReservationSummary. */
import type { ReservationRecord } from '../ledger/types.js';

export type Projection = { metadata: boolean; committed_metadata: boolean };

export function parseInclude(raw: string | undefined): Projection {
  const tokens = new Set((raw ?? '').split(',').map((t) => t.trim()));
  return { metadata: tokens.has('metadata'), committed_metadata: tokens.has('committed_metadata') };
}

/** Detail (GET by id) carries everything; list rows carry the maps only when asked for. */
export function reservationView(r: ReservationRecord, projection: Projection | 'all'): Record<string, unknown> {
  const out: Record<string, unknown> = {
    reservation_id: r.reservation_id,
    status: r.status,
    idempotency_key: r.idempotency_key,
    subject: r.subject,
    action: r.action,
    reserved: { unit: r.unit, amount: r.reserved },
  };
  if (r.status === 'COMMITTED' && r.committed !== undefined) out.committed = { unit: r.unit, amount: r.committed };
  out.created_at_ms = r.created_at_ms;
  out.expires_at_ms = r.expires_at_ms;
  if ((r.status === 'COMMITTED' || r.status === 'RELEASED') && r.finalized_at_ms !== undefined) out.finalized_at_ms = r.finalized_at_ms;
  out.scope_path = r.scope_path;
  out.affected_scopes = r.affected_scopes;
  const all = projection === 'all';
  if (r.metadata !== undefined && (all || projection.metadata)) out.metadata = r.metadata;
  if (r.committed_metadata !== undefined && (all || projection.committed_metadata)) out.committed_metadata = r.committed_metadata;
  return out;
}
