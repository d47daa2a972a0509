import type { Unit } from '../ledger/amounts.js';
import type { CommitRequest, ExtendRequest, ReleaseRequest, ReservationCommand } from '../ledger/ops/settle.js';
import type { DecideCommand } from '../ledger/ops/decide.js';
import type { EventCommand } from '../ledger/ops/event.js';
import type { ReserveCommand } from '../ledger/ops/reserve.js';
import type { OpResult } from '../ledger/ops/shared.js';
import type { FundingCommand } from '../ledger/ops/fund.js';
import type { EventDraft, EventRecord, OpContext } from '../events/model.js';
import type { ClaimedDelivery, DeliveryOutcome, DeliveryRecord, DeliveryStatus, WebhookRecord, WebhookStatus } from '../events/types.js';

export type { FundingCommand, FundingOperation } from '../ledger/ops/fund.js';
import type { BudgetRecord, BudgetStatus, OveragePolicy, ReservationRecord, ReservationStatus, TenantRecord, TenantStatus } from '../ledger/types.js';
import type { FundingOperation } from '../ledger/ops/fund.js';
import type { PolicyRecord } from '../ledger/ops/shared.js';

export interface ApiKeyRecord {
  key_id: string;
  tenant_id: string;
  key_prefix: string;
  /** Keyed hash of the full secret; the secret itself is never stored. */
  key_hash: string;
  name: string;
  description?: string | undefined;
  permissions: string[];
  scope_filter: string[];
  status: 'ACTIVE' | 'REVOKED' | 'EXPIRED';
  created_at: number;
  expires_at: number;
  revoked_at?: number | undefined;
  revoked_reason?: string | undefined;
  last_used_at?: number | undefined;
  metadata?: Record<string, string> | undefined;
}

export type SortDir = 'asc' | 'desc';

export const RESERVATION_SORT_KEYS = ['reservation_id', 'tenant', 'scope_path', 'status', 'reserved', 'created_at_ms', 'expires_at_ms'] as const;
export type ReservationSortKey = (typeof RESERVATION_SORT_KEYS)[number];

/** A keyset position: the sort value and id of the last row already returned. */
export interface KeysetPosition {
  value: string | number;
  id: string;
}

export interface ReservationQuery {
  tenantId: string;
  status?: ReservationStatus | undefined;
  idempotencyKey?: string | undefined;
  /** Exact subject-level filters, e.g. { workspace: 'prod' }. */
  subject: Partial<Record<'workspace' | 'app' | 'workflow' | 'agent' | 'toolset', string>>;
  createdFrom?: number | undefined;
  createdTo?: number | undefined;
  expiresFrom?: number | undefined;
  expiresTo?: number | undefined;
  finalizedFrom?: number | undefined;
  finalizedTo?: number | undefined;
  sortBy: ReservationSortKey;
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

export interface Page<T> {
  rows: T[];
  hasMore: boolean;
}

export interface BudgetQuery {
  tenantId?: string | undefined;
  /** Segment-aware prefix: "tenant:a" matches "tenant:a" and "tenant:a/...", never "tenant:ab". */
  scopePrefix?: string | undefined;
  /** Exact scopes. */
  scopes?: string[] | undefined;
  /**
   * Subject-filter matching (getBalances): every given level must appear in the scope with that
   * value; unless `includeChildren`, the scope must end at the deepest given level.
   */
  segments?: Partial<Record<'workspace' | 'app' | 'workflow' | 'agent' | 'toolset', string>> | undefined;
  leafLevel?: string | undefined;
  unit?: Unit | undefined;
  status?: BudgetStatus | undefined;
  afterId?: string | undefined;
  limit: number;
}

export interface TenantQuery {
  status?: TenantStatus | undefined;
  parentTenantId?: string | undefined;
  afterId?: string | undefined;
  limit: number;
}

export interface ApiKeyQuery {
  tenantId?: string | undefined;
  status?: ApiKeyRecord['status'] | undefined;
  afterId?: string | undefined;
  limit: number;
}

export interface BudgetPatch {
  overdraft_limit?: number | undefined;
  commit_overage_policy?: OveragePolicy | undefined;
  metadata?: Record<string, string> | undefined;
  status?: BudgetStatus | undefined;
}

export const EVENT_SORT_KEYS = ['timestamp', 'event_type', 'category', 'scope', 'tenant_id'] as const;
export type EventSortKey = (typeof EVENT_SORT_KEYS)[number];

export interface EventQuery {
  tenantId?: string | undefined;
  /** Restricts to these categories (the tenant events API sees budget, reservation, tenant only). */
  categories?: readonly string[] | undefined;
  eventType?: string | undefined;
  category?: string | undefined;
  /** Segment-aware prefix of the event's scope. */
  scopePrefix?: string | undefined;
  correlationId?: string | undefined;
  traceId?: string | undefined;
  requestId?: string | undefined;
  from?: number | undefined;
  to?: number | undefined;
  /** Case-insensitive substring of correlation_id or scope. */
  search?: string | undefined;
  sortBy: EventSortKey;
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

export const WEBHOOK_SORT_KEYS = ['consecutive_failures', 'url', 'tenant_id', 'status'] as const;
export type WebhookSortKey = (typeof WEBHOOK_SORT_KEYS)[number];

export interface WebhookQuery {
  tenantId?: string | undefined;
  status?: WebhookStatus | undefined;
  /** Subscriptions that list this event type. */
  eventType?: string | undefined;
  /** Case-insensitive substring of subscription_id or url. */
  search?: string | undefined;
  sortBy: WebhookSortKey;
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

export interface DeliveryQuery {
  subscriptionId: string;
  status?: DeliveryStatus | undefined;
  from?: number | undefined;
  to?: number | undefined;
  after?: KeysetPosition | undefined;
  limit: number;
}

/**
 * The one door to persistent state. Handlers never reach a backend any other way, so the
 * SQLite, Redis and PostgreSQL backends are interchangeable. Every ledger mutation is one
 * atomic step that also stores its idempotency record.
 */
export interface Store extends GovernanceStore {
  readonly kind: 'sqlite' | 'redis' | 'postgres';
  /** Throws when the store cannot be reached (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;

  // Runtime ledger operations.
  reserve(cmd: ReserveCommand): Promise<OpResult>;
  decide(cmd: DecideCommand): Promise<OpResult>;
  commit(cmd: ReservationCommand<CommitRequest>): Promise<OpResult>;
  release(cmd: ReservationCommand<ReleaseRequest>): Promise<OpResult>;
  extend(cmd: ReservationCommand<ExtendRequest>): Promise<OpResult>;
  createEvent(cmd: EventCommand): Promise<OpResult>;
  /** Expires up to `limit` reservations past expiry + grace; returns how many it expired. */
  expireDue(limit: number): Promise<number>;
  /** Deletes idempotency records and finalized reservations older than their retention. */
  purge(reservationRetentionMs: number): Promise<void>;

  getReservation(reservationId: string): Promise<ReservationRecord | undefined>;
  listReservations(query: ReservationQuery): Promise<Page<ReservationRecord>>;

  // Tenants.
  createTenant(record: TenantRecord): Promise<{ created: boolean; tenant: TenantRecord }>;
  getTenant(tenantId: string): Promise<TenantRecord | undefined>;
  listTenants(query: TenantQuery): Promise<Page<TenantRecord>>;
  updateTenant(tenantId: string, patch: Partial<TenantRecord>): Promise<TenantRecord | undefined>;
  /**
   * Closes a tenant in one atomic step: its keys are revoked, its open reservations released,
   * its budgets closed, and the tenant flipped to CLOSED. Re-closing changes nothing.
   */
  closeTenant(tenantId: string, now: number, ctx?: OpContext): Promise<TenantRecord>;

  // API keys.
  createApiKey(record: ApiKeyRecord): Promise<void>;
  getApiKey(keyId: string): Promise<ApiKeyRecord | undefined>;
  findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | undefined>;
  listApiKeys(query: ApiKeyQuery): Promise<Page<ApiKeyRecord>>;
  updateApiKey(keyId: string, patch: Partial<ApiKeyRecord>): Promise<ApiKeyRecord | undefined>;

  // Budgets.
  createBudget(record: BudgetRecord): Promise<void>;
  getBudget(scope: string, unit: Unit): Promise<BudgetRecord | undefined>;
  listBudgets(query: BudgetQuery): Promise<Page<BudgetRecord>>;
  updateBudget(scope: string, unit: Unit, patch: BudgetPatch): Promise<BudgetRecord | undefined>;
  /** Applies a funding operation atomically with its idempotency record; returns the reply body. */
  fundBudget(cmd: FundingCommand & FundingNote): Promise<OpResult>;

  // Events (the outbox written by mutations).
  listEvents(query: EventQuery): Promise<Page<EventRecord>>;
  getEvent(eventId: string): Promise<EventRecord | undefined>;

  // Webhook subscriptions and deliveries. Mutations write their events in the same step.
  createWebhook(record: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void>;
  getWebhook(subscriptionId: string): Promise<WebhookRecord | undefined>;
  listWebhooks(query: WebhookQuery): Promise<Page<WebhookRecord>>;
  /** Replaces the stored record (the caller merged and validated it). */
  updateWebhook(record: WebhookRecord, events: EventDraft[], ctx: OpContext): Promise<void>;
  deleteWebhook(subscriptionId: string, events: EventDraft[], ctx: OpContext): Promise<boolean>;
  listDeliveries(query: DeliveryQuery): Promise<Page<DeliveryRecord>>;
  /** Creates deliveries for events not yet fanned out; returns how many events it consumed. */
  fanOutEvents(limit: number): Promise<number>;
  /** Leases up to `limit` due deliveries to `owner` for `leaseMs`. */
  claimDeliveries(owner: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]>;
  /** Records an attempt's outcome (retry schedule, subscription health, auto-disable, events). */
  completeDelivery(outcome: DeliveryOutcome): Promise<void>;
  /**
   * Queues a fresh delivery of each event to the subscription; returns how many were queued.
   * Throws REPLAY_IN_PROGRESS while deliveries of an earlier replay to it are still pending.
   */
  enqueueReplay(subscriptionId: string, eventIds: string[], replayId: string): Promise<number>;
  /** Deletes events and deliveries older than their retention. */
  purgeEvents(eventRetentionMs: number, deliveryRetentionMs: number): Promise<void>;

  // Server-wide settings that must be shared by every process on the store.
  getMeta(key: string): Promise<string | undefined>;
  /** Sets the value unless one exists; returns the value in force. */
  putMetaIfAbsent(key: string, value: string): Promise<string>;
  /** Sets the value, replacing any. */
  putMeta(key: string, value: string): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Governance plane (admin/**; SQLite: store/sqlite/governance*.ts). Every mutation here is one
// atomic step that writes its events (view.emit) with it; the close cascade also writes its
// per-child audit rows in that step. A closed tenant's objects refuse every mutation (409).
// ---------------------------------------------------------------------------------------------

export type { PolicyRecord } from '../ledger/ops/shared.js';

/** A page of a sorted list and the keyset position of its last row (for next_cursor). */
export interface KeyedPage<T> extends Page<T> {
  next?: KeysetPosition | undefined;
}

export const TENANT_SORT_KEYS = ['tenant_id', 'name', 'status', 'created_at'] as const;
export interface TenantListQuery {
  status?: TenantStatus | undefined;
  parentTenantId?: string | undefined;
  /** Case-insensitive substring of tenant_id or name. */
  search?: string | undefined;
  sortBy: (typeof TENANT_SORT_KEYS)[number];
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

/** updateTenant: settings and/or a status transition (CLOSED runs the close cascade). */
export interface TenantChange {
  name?: string | undefined;
  metadata?: Record<string, string> | undefined;
  default_commit_overage_policy?: OveragePolicy | undefined;
  default_reservation_ttl_ms?: number | undefined;
  max_reservation_ttl_ms?: number | undefined;
  max_reservation_extensions?: number | undefined;
  status?: TenantStatus | undefined;
  /** Correlation id of the tenant.* event (bulk actions); close cascade children keep their own. */
  correlationId?: string | undefined;
  /** @deprecated The former name of correlationId (close only); read as a fallback. */
  closeCorrelationId?: string | undefined;
  /** Stamped on the close cascade's per-child audit rows (who asked, which request, retention). */
  cascadeAudit?: AuditTemplate | undefined;
}

export const API_KEY_SORT_KEYS = ['key_id', 'name', 'tenant_id', 'status', 'created_at', 'expires_at'] as const;
export interface ApiKeyListQuery {
  tenantId?: string | undefined;
  /** Effective status: an ACTIVE key past expires_at is EXPIRED. */
  status?: ApiKeyRecord['status'] | undefined;
  /** Case-insensitive substring of key_id or name. */
  search?: string | undefined;
  sortBy: (typeof API_KEY_SORT_KEYS)[number];
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
  now: number;
}

export interface ApiKeyChange {
  name?: string | undefined;
  description?: string | undefined;
  permissions?: string[] | undefined;
  scope_filter?: string[] | undefined;
  metadata?: Record<string, unknown> | undefined;
}

export const LEDGER_SORT_KEYS = ['tenant_id', 'scope', 'unit', 'status', 'commit_overage_policy', 'utilization', 'debt'] as const;
/** The listBudgets filter; bulkActionBudgets uses the very same one, so a preview counts what a bulk run touches. */
export interface LedgerFilter {
  tenantId?: string | undefined;
  /** Segment-aware: "tenant:a" matches "tenant:a" and "tenant:a/...", never "tenant:ab". */
  scopePrefix?: string | undefined;
  unit?: Unit | undefined;
  status?: BudgetStatus | undefined;
  overLimit?: boolean | undefined;
  hasDebt?: boolean | undefined;
  /** Inclusive bounds on spent / allocated (allocated 0 counts as 0). */
  utilizationMin?: number | undefined;
  utilizationMax?: number | undefined;
  /** Case-insensitive substring of tenant_id or scope. */
  search?: string | undefined;
  /** A tenant key's scope_filter: only scopes with a matching segment. */
  scopeFilter?: readonly string[] | undefined;
}
export interface LedgerListQuery extends LedgerFilter {
  sortBy: (typeof LEDGER_SORT_KEYS)[number];
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

/** updateBudget, freezeBudget and unfreezeBudget. */
export interface BudgetChange {
  overdraft_limit?: number | undefined;
  commit_overage_policy?: OveragePolicy | undefined;
  metadata?: Record<string, unknown> | undefined;
  /** FROZEN = freeze, ACTIVE = unfreeze; the current status must be the other one (else 409). */
  status?: 'ACTIVE' | 'FROZEN' | undefined;
  reason?: string | undefined;
}

/** What fundBudget records beside the ledger change (on its event). */
export interface FundingNote {
  reason?: string | undefined;
  correlationId?: string | undefined;
}

export interface PolicyListQuery {
  tenantId: string;
  scopePattern?: string | undefined;
  status?: PolicyRecord['status'] | undefined;
  scopeFilter?: readonly string[] | undefined;
  after?: KeysetPosition | undefined;
  limit: number;
}

export type PolicyChange = Partial<Pick<PolicyRecord,
  'name' | 'description' | 'priority' | 'caps' | 'commit_overage_policy' | 'reservation_ttl_override' | 'rate_limits' | 'effective_from' | 'effective_until' | 'status'>>;

/** One row of a bulk-action response. */
export interface BulkRow {
  id: string;
  error_code?: string | undefined;
  message?: string | undefined;
  reason?: string | undefined;
}

interface BulkCommon {
  ctx: OpContext;
  idempotencyKey: string;
  /** Hash of the canonical request: a replay with another payload is 409 IDEMPOTENCY_MISMATCH. */
  hash: string;
  expectedCount?: number | undefined;
  /** More matches than this is 400 LIMIT_EXCEEDED, with nothing written. */
  maxRows: number;
}
export interface TenantBulkCommand extends BulkCommon {
  filter: { status?: TenantStatus | undefined; parentTenantId?: string | undefined; search?: string | undefined };
  action: 'SUSPEND' | 'REACTIVATE' | 'CLOSE';
  cascadeAudit?: AuditTemplate | undefined;
}
export interface BudgetBulkCommand extends BulkCommon {
  filter: LedgerFilter & { tenantId: string };
  action: FundingOperation;
  amount: { unit: Unit; amount: number };
  spent?: number | undefined;
  reason?: string | undefined;
}

export interface AuditRecord {
  log_id: string;
  timestamp: number;
  /** The tenant acted for, or a sentinel: __admin__ (admin key, no single tenant) or __unauth__. */
  tenant_id: string;
  key_id?: string | undefined;
  user_agent?: string | undefined;
  source_ip?: string | undefined;
  operation: string;
  resource_type?: string | undefined;
  resource_id?: string | undefined;
  request_id?: string | undefined;
  trace_id?: string | undefined;
  status: number;
  error_code?: string | undefined;
  subject?: Record<string, unknown> | undefined;
  action?: Record<string, unknown> | undefined;
  amount?: Record<string, unknown> | undefined;
  metadata?: Record<string, unknown> | undefined;
  /** Retention is stamped when the row is written; the hourly purge deletes rows past it. */
  expires_at: number;
}

/** The request-level fields of an audit row, for rows a mutation writes itself (the close cascade). */
export type AuditTemplate = Omit<AuditRecord, 'log_id' | 'timestamp' | 'tenant_id' | 'operation' | 'resource_type' | 'resource_id' | 'status'>;

export const AUDIT_SORT_KEYS = ['timestamp', 'operation', 'resource_type', 'tenant_id', 'key_id', 'status'] as const;
export interface AuditQuery {
  tenantId?: string | undefined;
  keyId?: string | undefined;
  resourceId?: string | undefined;
  traceId?: string | undefined;
  requestId?: string | undefined;
  /** IN-lists (OR within, AND across). */
  operations?: string[] | undefined;
  resourceTypes?: string[] | undefined;
  /** A row without error_code never matches errorCodes and always passes errorCodesExclude. */
  errorCodes?: string[] | undefined;
  errorCodesExclude?: string[] | undefined;
  status?: number | undefined;
  statusMin?: number | undefined;
  statusMax?: number | undefined;
  from?: number | undefined;
  to?: number | undefined;
  /** Case-insensitive substring of resource_id, log_id, error_code or operation. */
  search?: string | undefined;
  sortBy: (typeof AUDIT_SORT_KEYS)[number];
  sortDir: SortDir;
  after?: KeysetPosition | undefined;
  limit: number;
}

/** The dashboard home page in one read. */
export interface OverviewSnapshot {
  tenants: { total: number; active: number; suspended: number; closed: number };
  budgets: { total: number; active: number; frozen: number; closed: number; over_limit: number; with_debt: number; by_unit: Record<string, number> };
  overLimit: BudgetRecord[];
  inDebt: BudgetRecord[];
  webhooks: { total: number; active: number; disabled: number; with_failures: number };
  failingWebhooks: Array<{ subscription_id: string; url: string; consecutive_failures: number; last_failure_at?: number | undefined }>;
  eventsByCategory: Record<string, number>;
  /** Event JSON bodies, newest first. */
  recentDenials: string[];
  recentExpiries: string[];
  denialsByReason: Record<string, number>;
}

export interface GovernanceStore {
  // Tenants.
  queryTenants(query: TenantListQuery): Promise<KeyedPage<TenantRecord>>;
  /** createTenant: inserts unless the id exists (emits tenant.created only when it inserts). */
  openTenant(record: TenantRecord, ctx: OpContext): Promise<{ created: boolean; tenant: TenantRecord }>;
  changeTenant(tenantId: string, change: TenantChange, ctx: OpContext): Promise<TenantRecord>;

  // API keys.
  queryApiKeys(query: ApiKeyListQuery): Promise<KeyedPage<ApiKeyRecord>>;
  issueApiKey(record: ApiKeyRecord, ctx: OpContext): Promise<void>;
  changeApiKey(keyId: string, change: ApiKeyChange, ctx: OpContext): Promise<ApiKeyRecord>;
  revokeApiKey(keyId: string, reason: string | undefined, ctx: OpContext): Promise<ApiKeyRecord>;
  /** Stamps last_used_at, at most once per minute per key, and never on a revoked key. */
  touchApiKey(keyId: string, now: number): Promise<void>;

  // Budgets.
  openBudget(record: BudgetRecord, ctx: OpContext): Promise<void>;
  queryLedgers(query: LedgerListQuery): Promise<KeyedPage<BudgetRecord>>;
  changeBudget(scope: string, unit: Unit, change: BudgetChange, ctx: OpContext): Promise<BudgetRecord>;

  // Policies.
  createPolicy(record: PolicyRecord, ctx: OpContext): Promise<void>;
  getPolicy(policyId: string): Promise<PolicyRecord | undefined>;
  queryPolicies(query: PolicyListQuery): Promise<KeyedPage<PolicyRecord>>;
  changePolicy(policyId: string, change: PolicyChange, ctx: OpContext): Promise<PolicyRecord>;

  // Bulk actions: replies are stored for 15 minutes under the idempotency key and replayed verbatim.
  bulkTenants(cmd: TenantBulkCommand): Promise<OpResult>;
  bulkBudgets(cmd: BudgetBulkCommand): Promise<OpResult>;

  // Audit log and events written outside a state change.
  appendAudit(entries: readonly AuditRecord[]): Promise<void>;
  queryAudit(query: AuditQuery): Promise<KeyedPage<AuditRecord>>;
  appendEvents(drafts: readonly EventDraft[], ctx: OpContext): Promise<void>;

  overview(now: number, windowMs: number): Promise<OverviewSnapshot>;
}
