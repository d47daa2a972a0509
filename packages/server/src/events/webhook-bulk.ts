/**
 * bulkActionWebhooks: PAUSE, RESUME or DELETE every subscription a filter matches, with the
 * same filter semantics as the list (so a preview count is what the action touches), the 500-row
 * cap, expected_count, and idempotent replay. Built on the Store's webhook operations, so it works
 * on every backend; each row is applied and evented on its own and a row failure never aborts
 * the batch. The reply is kept under the idempotency key: a repeated key replays it byte for byte.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { noteAudit } from '../admin/audit.js';
import { opContext, type AppDeps } from '../http/app.js';
import { CyclesError, invalid } from '../ledger/errors.js';
import { requestHash } from '../ledger/ops/shared.js';
import type { Store, WebhookQuery } from '../store/types.js';
import type { WebhookRecord } from './types.js';
import { checkSelectors } from './webhook-routes.js';

export const BULK_MAX_ROWS = 500;
/** A claim older than this with no recorded reply belongs to a request that died; it may be retried. */
const STALE_CLAIM_MS = 60_000;

export const webhookBulkBody = {
  type: 'object',
  required: ['filter', 'action', 'idempotency_key'],
  additionalProperties: false,
  properties: {
    filter: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        tenant_id: { type: 'string', minLength: 1, maxLength: 64 },
        status: { type: 'string', enum: ['ACTIVE', 'PAUSED', 'DISABLED'] },
        event_type: { type: 'string', minLength: 1, maxLength: 128 },
        search: { type: 'string', maxLength: 128 },
      },
    },
    action: { type: 'string', enum: ['PAUSE', 'RESUME', 'DELETE'] },
    expected_count: { type: 'integer', minimum: 0 },
    idempotency_key: { type: 'string', minLength: 1, maxLength: 128 },
  },
} as const;

interface Body {
  filter: { tenant_id?: string; status?: WebhookRecord['status']; event_type?: string; search?: string };
  action: 'PAUSE' | 'RESUME' | 'DELETE';
  expected_count?: number;
  idempotency_key: string;
}

interface Claim {
  hash: string;
  owner: string;
  at: number;
  body?: string;
}

interface Row {
  id: string;
  error_code?: string;
  message?: string;
  reason?: string;
}

async function matching(store: Store, f: Body['filter']): Promise<WebhookRecord[]> {
  const out: WebhookRecord[] = [];
  let after: WebhookQuery['after'];
  for (;;) {
    const page = await store.listWebhooks({
      tenantId: f.tenant_id,
      status: f.status,
      eventType: f.event_type,
      search: f.search?.trim() || undefined,
      sortBy: 'url',
      sortDir: 'asc',
      after,
      limit: 100,
    });
    out.push(...page.rows);
    const last = page.rows[page.rows.length - 1];
    // One past the cap is enough to know the filter is too wide.
    if (!page.hasMore || !last || out.length > BULK_MAX_ROWS) return out;
    after = { value: last.url, id: last.subscription_id };
  }
}

export function registerWebhookBulk(app: FastifyInstance, { store }: AppDeps): void {
  app.post('/v1/admin/webhooks/bulk-action', { schema: { body: webhookBulkBody }, config: { auth: 'admin', plane: 'admin' } }, async (req, reply) => {
    const body = req.body as Body;
    const hash = requestHash('bulkActionWebhooks', body);
    const key = `bulk:webhooks:${body.idempotency_key}`;
    const me = req.cycles.requestId;
    const send = (text: string) => reply.type('application/json; charset=utf-8').send(text);

    // Claim the key first, so two concurrent requests with one key never both apply.
    const now = Date.now();
    let claim = JSON.parse(await store.putMetaIfAbsent(key, JSON.stringify({ hash, owner: me, at: now } satisfies Claim))) as Claim;
    // An empty owner is a claim released by a request that applied nothing: free to take.
    if (claim.owner !== me && claim.owner !== '') {
      if (claim.hash !== hash) throw new CyclesError('IDEMPOTENCY_MISMATCH', `idempotency_key "${body.idempotency_key}" was already used with a different request`);
      if (claim.body !== undefined) {
        noteAudit(req, { metadata: { replayed: true } });
        return send(claim.body);
      }
      if (now - claim.at < STALE_CLAIM_MS) {
        return reply.code(503).header('retry-after', '1').send({ error: 'INTERNAL_ERROR', message: 'A bulk action with this idempotency key is still in progress; retry shortly', request_id: me, trace_id: req.cycles.traceId });
      }
    }
    if (claim.owner !== me) {
      await store.putMeta(key, JSON.stringify({ hash, owner: me, at: now } satisfies Claim));
      claim = JSON.parse((await store.getMeta(key))!) as Claim;
      if (claim.owner !== me) return reply.code(503).header('retry-after', '1').send({ error: 'INTERNAL_ERROR', message: 'A bulk action with this idempotency key is in progress; retry shortly', request_id: me, trace_id: req.cycles.traceId });
    }

    try {
      const rows = await matching(store, body.filter);
      if (rows.length > BULK_MAX_ROWS) {
        throw new CyclesError('LIMIT_EXCEEDED', `The filter matches more than ${BULK_MAX_ROWS} subscriptions; narrow it`, { total_matched: rows.length, max_rows: BULK_MAX_ROWS }, 400);
      }
      if (body.expected_count !== undefined && body.expected_count !== rows.length) {
        throw new CyclesError('COUNT_MISMATCH', `expected_count is ${body.expected_count} but the filter matches ${rows.length}; nothing was changed`, { total_matched: rows.length, expected_count: body.expected_count });
      }
      const out = await apply(req, store, body, rows);
      const text = JSON.stringify({ action: body.action, total_matched: rows.length, ...out, idempotency_key: body.idempotency_key });
      await store.putMeta(key, JSON.stringify({ hash, owner: me, at: now, body: text } satisfies Claim));
      noteAudit(req, {
        metadata: {
          correlation_id: `webhook_bulk_action:${body.action.toLowerCase()}:${me}`,
          total_matched: rows.length,
          succeeded: out.succeeded.map((r) => r.id),
          failed: out.failed.map((r) => r.id),
          skipped: out.skipped.map((r) => r.id),
        },
      });
      return send(text);
    } catch (err) {
      // Nothing was applied (validation, cap, count): release the claim so the key can be retried.
      await store.putMeta(key, JSON.stringify({ hash: '', owner: '', at: 0 } satisfies Claim)).catch(() => undefined);
      throw err;
    }
  });
}

async function apply(req: FastifyRequest, store: Store, body: Body, rows: WebhookRecord[]) {
  const succeeded: Row[] = [];
  const failed: Row[] = [];
  const skipped: Row[] = [];
  const ctx = opContext(req, true);
  const correlation = `webhook_bulk_action:${body.action.toLowerCase()}:${req.cycles.requestId}`;
  const tenants = new Map<string, boolean>();
  const closed = async (tenantId: string) => {
    if (tenantId === '__system__') return false;
    if (!tenants.has(tenantId)) tenants.set(tenantId, (await store.getTenant(tenantId))?.status === 'CLOSED');
    return tenants.get(tenantId)!;
  };
  for (const w of rows) {
    const id = w.subscription_id;
    try {
      if (await closed(w.tenant_id)) {
        failed.push({ id, error_code: 'TENANT_CLOSED', message: `Tenant ${w.tenant_id} is closed` });
        continue;
      }
      const data = (next?: string) => ({ subscription_id: id, tenant_id: w.tenant_id, previous_status: w.status, ...(next ? { new_status: next } : {}) });
      if (body.action === 'DELETE') {
        const gone = await store.deleteWebhook(id, [{ event_type: 'webhook.deleted', tenant_id: w.tenant_id, correlation_id: correlation, data: data() }], ctx);
        (gone ? succeeded : skipped).push(gone ? { id } : { id, reason: 'ALREADY_DELETED' });
        continue;
      }
      if (body.action === 'PAUSE') {
        if (w.status !== 'ACTIVE') {
          skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
          continue;
        }
        await store.updateWebhook({ ...w, status: 'PAUSED', updated_at: Date.now() }, [{ event_type: 'webhook.paused', tenant_id: w.tenant_id, correlation_id: correlation, data: data('PAUSED') }], ctx);
        succeeded.push({ id });
        continue;
      }
      // RESUME: only paused subscriptions; a disabled one needs an explicit PATCH after its endpoint is fixed.
      if (w.status === 'ACTIVE') {
        skipped.push({ id, reason: 'ALREADY_IN_TARGET_STATE' });
        continue;
      }
      if (w.status === 'DISABLED') {
        failed.push({ id, error_code: 'INVALID_TRANSITION', message: 'A DISABLED subscription is re-enabled by PATCH status ACTIVE, not by bulk RESUME' });
        continue;
      }
      checkSelectors(w.tenant_id, w.event_types, w.event_categories);
      await store.updateWebhook({ ...w, status: 'ACTIVE', consecutive_failures: 0, updated_at: Date.now() }, [{ event_type: 'webhook.resumed', tenant_id: w.tenant_id, correlation_id: correlation, data: data('ACTIVE') }], ctx);
      succeeded.push({ id });
    } catch (err) {
      failed.push({ id, error_code: err instanceof CyclesError ? err.code : 'INTERNAL_ERROR', message: err instanceof CyclesError ? err.message : 'Internal error while applying the action' });
    }
  }
  return { succeeded, failed, skipped };
}

export { invalid };
