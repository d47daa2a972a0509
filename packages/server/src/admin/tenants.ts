/** Tenants: create, list, get, update (incl. suspend / reactivate / close) and bulk actions. */
import type { FastifyInstance } from 'fastify';
import { opContext, type AppDeps } from '../http/app.js';
import { CyclesError } from '../ledger/errors.js';
import { requestHash } from '../ledger/ops/shared.js';
import type { TenantRecord, TenantStatus } from '../ledger/types.js';
import { enumParam, single, type Query } from '../runtime/query.js';
import { TENANT_SORT_KEYS, type TenantBulkCommand, type TenantChange } from '../store/types.js';
import { auditRetention, auditTemplate, noteAudit } from './audit.js';
import { adminAuth, adminLimit, cursorFor, listBody, pathId, searchParam, sortParams } from './common.js';
import { tenantBulkBody, tenantCreateBody, tenantUpdateBody } from './schemas.js';
import { tenantShape } from './shapes.js';

/** A bulk action touches at most this many rows (spec hard limit). */
export const BULK_MAX_ROWS = 500;

const TENANT_STATUSES = ['ACTIVE', 'SUSPENDED', 'CLOSED'] as const;

export function registerTenantRoutes(app: FastifyInstance, { store, config }: AppDeps): void {
  const retention = auditRetention(config);

  app.post('/v1/admin/tenants', { schema: { body: tenantCreateBody }, config: adminAuth('admin') }, async (req, reply) => {
    const b = req.body as Omit<TenantRecord, 'status' | 'created_at'>;
    const { created, tenant } = await store.openTenant({ ...b, status: 'ACTIVE', created_at: 0 }, opContext(req));
    if (!created && tenant.name !== b.name) {
      throw new CyclesError('DUPLICATE_RESOURCE', `Tenant ${b.tenant_id} already exists with a different name`, { tenant_id: b.tenant_id });
    }
    noteAudit(req, { tenantId: tenant.tenant_id, resourceId: tenant.tenant_id, metadata: { created } });
    return reply.code(created ? 201 : 200).send(tenantShape(tenant));
  });

  app.get('/v1/admin/tenants', { config: adminAuth('admin') }, async (req) => {
    const q = req.query as Query;
    // observe_mode (v0.1.26) is accepted and ignored: this server has no observe mode yet.
    const filter = {
      status: enumParam(q, 'status', TENANT_STATUSES),
      parentTenantId: single(q, 'parent_tenant_id') || undefined,
      search: searchParam(q),
      ...sortParams(q, TENANT_SORT_KEYS, 'created_at'),
    };
    const { hash, after } = cursorFor(q, filter);
    const page = await store.queryTenants({ ...filter, after, limit: adminLimit(q) });
    return listBody('tenants', page.rows.map(tenantShape), page.hasMore, hash, page.next);
  });

  app.get('/v1/admin/tenants/:tenant_id', { config: adminAuth('admin') }, async (req) => {
    const id = pathId((req.params as { tenant_id: string }).tenant_id, 'tenant_id');
    const t = await store.getTenant(id);
    if (!t) throw new CyclesError('TENANT_NOT_FOUND', `Tenant ${id} not found`, { tenant_id: id });
    return tenantShape(t);
  });

  app.patch('/v1/admin/tenants/:tenant_id', { schema: { body: tenantUpdateBody }, config: adminAuth('admin') }, async (req) => {
    const id = pathId((req.params as { tenant_id: string }).tenant_id, 'tenant_id');
    const change = req.body as TenantChange;
    const ctx = opContext(req);
    noteAudit(req, { tenantId: id, resourceId: id });
    const t = await store.changeTenant(id, { ...change, cascadeAudit: auditTemplate(req, retention, Date.now()) }, ctx);
    if (change.status === 'CLOSED') noteAudit(req, { metadata: { correlation_id: `tenant_close_cascade:${id}:${ctx.requestId}` } });
    return tenantShape(t);
  });

  app.post('/v1/admin/tenants/bulk-action', { schema: { body: tenantBulkBody }, config: adminAuth('admin') }, async (req, reply) => {
    const body = req.body as {
      filter: { status?: TenantStatus; parent_tenant_id?: string; observe_mode?: string; search?: string };
      action: TenantBulkCommand['action'];
      expected_count?: number;
      idempotency_key: string;
    };
    const search = body.filter.search?.trim() || undefined;
    noteAudit(req, { onBehalfOf: true });
    const cmd: TenantBulkCommand = {
      ctx: opContext(req, true),
      filter: { status: body.filter.status, parentTenantId: body.filter.parent_tenant_id, search },
      action: body.action,
      idempotencyKey: body.idempotency_key,
      expectedCount: body.expected_count,
      hash: requestHash('bulkActionTenants', body),
      maxRows: BULK_MAX_ROWS,
      cascadeAudit: auditTemplate(req, retention, Date.now()),
    };
    const result = await store.bulkTenants(cmd);
    const outcome = JSON.parse(result.body) as Record<string, Array<{ id: string }>>;
    noteAudit(req, { metadata: bulkSummary(outcome, result.replayed, `tenant_bulk_action:${body.action.toLowerCase()}:${cmd.ctx.requestId}`) });
    return reply.code(result.status).type('application/json; charset=utf-8').send(result.body);
  });
}

/** The per-row outcome recorded on a bulk action's single audit entry. */
export function bulkSummary(outcome: Record<string, Array<{ id: string }>>, replayed: boolean, correlationId: string): Record<string, unknown> {
  const ids = (k: string) => (outcome[k] ?? []).map((r) => r.id);
  return {
    correlation_id: correlationId,
    replayed,
    total_matched: outcome.total_matched,
    succeeded: ids('succeeded'),
    failed: ids('failed'),
    skipped: ids('skipped'),
  };
}
