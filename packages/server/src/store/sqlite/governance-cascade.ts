/**
 * The tenant close cascade (spec CASCADE SEMANTICS, Mode A): in the one transaction that flips
 * the tenant to CLOSED, open reservations are released, budgets closed (their holds drained)
 * and API keys revoked, each with a *_via_tenant_cascade event and an audit row that share the
 * correlation id tenant_close_cascade:<tenant>:<request_id>. Only objects that actually change
 * produce rows, so closing again writes nothing twice.
 *
 * Webhook subscriptions (ACTIVE|PAUSED -> DISABLED) are disabled by the webhooks module, not here.
 */
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { OpContext } from '../../events/model.js';
import { applyReleaseHold } from '../../ledger/math.js';
import type { TenantRecord } from '../../ledger/types.js';
import type { LedgerView } from '../../ledger/view.js';
import type { AuditRecord, AuditTemplate } from '../types.js';
import { cascadeCorrelation, cascadeEvent } from './governance-events.js';
import { auditToRow, insertSql, type Row } from './governance-sql.js';
import { apiKeyFromRow, budgetFromRow } from './rows.js';

export interface CascadeAccess {
  stmt(sql: string): Database.Statement;
}

export const DEFAULT_AUDIT_RETENTION_MS = 400 * 86_400_000;

export const newLogId = (): string => `log_${randomBytes(12).toString('hex')}`;

export function insertAudit(db: CascadeAccess, entry: AuditRecord): void {
  const row = auditToRow(entry);
  db.stmt(insertSql('audit_logs', row)).run(row);
}

export interface CascadeOutcome {
  correlationId: string;
  reservationsReleased: number;
  budgetsClosed: number;
  keysRevoked: number;
}

/** Drives every non-terminal child of `tenant` to its terminal state. The caller flips the tenant. */
export function runCloseCascade(db: CascadeAccess, view: LedgerView, tenant: TenantRecord, ctx: OpContext, template: AuditTemplate | undefined): CascadeOutcome {
  const now = view.now;
  const tenantId = tenant.tenant_id;
  const correlationId = cascadeCorrelation(tenantId, ctx.requestId);
  const base: AuditTemplate = template ?? {
    request_id: ctx.requestId,
    trace_id: ctx.traceId,
    source_ip: ctx.actor.source_ip,
    metadata: { actor_type: ctx.actor.type },
    expires_at: now + DEFAULT_AUDIT_RETENTION_MS,
  };
  const audit = (resourceType: string, resourceId: string, kind: string, extra: Record<string, unknown>) =>
    insertAudit(db, {
      ...base,
      log_id: newLogId(),
      timestamp: now,
      tenant_id: tenantId,
      operation: 'tenant_close_cascade',
      resource_type: resourceType,
      resource_id: resourceId,
      status: 200,
      metadata: { ...(base.metadata ?? {}), event_kind: kind, correlation_id: correlationId, cascade_reason: 'tenant_closed', ...extra },
    });

  // 1. Open reservations are released (no overage, no debt); remember what each budget gave back.
  const released = new Map<string, { amount: number; count: number }>();
  const open = db.stmt("SELECT reservation_id FROM reservations WHERE tenant_id = ? AND status = 'ACTIVE' ORDER BY reservation_id").all(tenantId) as Row[];
  for (const row of open) {
    const r = view.reservation(row.reservation_id as string)!;
    const held = view.budgets(tenantId, r.budgeted_scopes).filter((b) => b.unit === r.unit);
    view.updateBudgets(applyReleaseHold(held, r.reserved, now));
    view.updateReservation({ ...r, status: 'RELEASED', finalized_at_ms: now });
    for (const b of held) {
      const k = `${b.scope}|${b.unit}`;
      const acc = released.get(k) ?? { amount: 0, count: 0 };
      acc.amount += r.reserved;
      acc.count += 1;
      released.set(k, acc);
    }
  }

  // 2. Budgets (ACTIVE or FROZEN) close; any hold left is drained back to remaining.
  const budgets = (db.stmt("SELECT * FROM budgets WHERE tenant_id = ? AND status != 'CLOSED' ORDER BY scope, unit").all(tenantId) as Row[]).map(budgetFromRow);
  for (const b of budgets) {
    const rel = released.get(`${b.scope}|${b.unit}`);
    const drained = (rel?.amount ?? 0) + b.reserved;
    const ids = { ledger_id: b.ledger_id, scope: b.scope, unit: b.unit };
    if (drained > 0) {
      view.emit(
        cascadeEvent('reservation.released_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, released_amount: drained }, correlationId, b.scope),
        ctx,
      );
      audit('budget', b.ledger_id, 'reservation.released_via_tenant_cascade', { released_amount: drained, reservations_released: rel?.count ?? 0 });
    }
    view.updateBudgets([{ ...b, reserved: 0, status: 'CLOSED', updated_at: now }]);
    view.emit(cascadeEvent('budget.closed_via_tenant_cascade', tenantId, { ...ids, prior_status: b.status, new_status: 'CLOSED' }, correlationId, b.scope), ctx);
    audit('budget', b.ledger_id, 'budget.closed_via_tenant_cascade', { prior_status: b.status });
  }

  // 3. API keys are revoked.
  const keys = (db.stmt("SELECT * FROM api_keys WHERE tenant_id = ? AND status = 'ACTIVE' ORDER BY key_id").all(tenantId) as Row[]).map(apiKeyFromRow);
  for (const k of keys) {
    db.stmt("UPDATE api_keys SET status = 'REVOKED', revoked_at = ?, revoked_reason = 'tenant_closed' WHERE key_id = ?").run(now, k.key_id);
    view.emit(
      cascadeEvent('api_key.revoked_via_tenant_cascade', tenantId, { key_id: k.key_id, name: k.name, prior_status: 'ACTIVE', new_status: 'REVOKED' }, correlationId),
      ctx,
    );
    audit('api_key', k.key_id, 'api_key.revoked_via_tenant_cascade', { prior_status: 'ACTIVE' });
  }

  // 4. Webhook subscriptions are disabled: nothing more is delivered to the closed tenant's endpoints.
  const subs = db
    .stmt("SELECT subscription_id, name, status FROM webhook_subscriptions WHERE tenant_id = ? AND status IN ('ACTIVE', 'PAUSED') ORDER BY subscription_id")
    .all(tenantId) as Row[];
  for (const w of subs) {
    db.stmt("UPDATE webhook_subscriptions SET status = 'DISABLED', updated_at = ? WHERE subscription_id = ?").run(now, w.subscription_id);
    const data: Record<string, unknown> = { subscription_id: w.subscription_id, prior_status: w.status, new_status: 'DISABLED' };
    if (w.name !== null && w.name !== undefined) data.name = w.name;
    view.emit(cascadeEvent('webhook.disabled_via_tenant_cascade', tenantId, data, correlationId), ctx);
    audit('webhook', w.subscription_id as string, 'webhook.disabled_via_tenant_cascade', { prior_status: w.status });
  }

  return { correlationId, reservationsReleased: open.length, budgetsClosed: budgets.length, keysRevoked: keys.length };
}
