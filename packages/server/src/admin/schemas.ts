/** Request schemas of the governance operations implemented here (shapes of the admin spec). */
import { amountSchema } from '../runtime/schemas.js';
import { MAX_AMOUNT, UNITS } from '../ledger/amounts.js';
import { OVERAGE_POLICIES } from '../ledger/types.js';

export const PERMISSIONS = [
  'reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list',
  'balances:read', 'budgets:read', 'budgets:write', 'policies:read', 'policies:write', 'webhooks:read', 'webhooks:write',
  'events:read', 'admin:read', 'admin:write', 'admin:tenants:read', 'admin:tenants:write', 'admin:budgets:read',
  'admin:budgets:write', 'admin:policies:read', 'admin:policies:write', 'admin:apikeys:read', 'admin:apikeys:write',
  'admin:webhooks:read', 'admin:webhooks:write', 'admin:events:read', 'admin:audit:read',
] as const;

/** What a key gets when permissions are omitted: the spec's ten tenant defaults. */
export const DEFAULT_PERMISSIONS = [
  'reservations:create', 'reservations:commit', 'reservations:release', 'reservations:extend', 'reservations:list',
  'balances:read', 'budgets:read', 'budgets:write', 'policies:read', 'policies:write',
];

const stringMap = { type: 'object', maxProperties: 32, additionalProperties: { type: 'string', maxLength: 1024 } } as const;
const ttl = { type: 'integer', minimum: 1000, maximum: 86_400_000 } as const;
const overage = { type: 'string', enum: [...OVERAGE_POLICIES] } as const;
const tenantId = { type: 'string', minLength: 3, maxLength: 64, pattern: '^[a-z0-9-]+$' } as const;
const dateTime = { type: 'string', format: 'date-time' } as const;

export const tenantCreateBody = {
  type: 'object',
  required: ['tenant_id', 'name'],
  additionalProperties: false,
  properties: {
    tenant_id: tenantId,
    name: { type: 'string', minLength: 1, maxLength: 256 },
    parent_tenant_id: tenantId,
    metadata: stringMap,
    default_commit_overage_policy: overage,
    default_reservation_ttl_ms: ttl,
    max_reservation_ttl_ms: ttl,
    max_reservation_extensions: { type: 'integer', minimum: 0, maximum: 1000 },
    reservation_expiry_policy: { type: 'string', enum: ['AUTO_RELEASE', 'MANUAL_CLEANUP', 'GRACE_ONLY'] },
  },
} as const;

export const tenantUpdateBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 256 },
    status: { type: 'string', enum: ['ACTIVE', 'SUSPENDED', 'CLOSED'] },
    metadata: stringMap,
    default_commit_overage_policy: overage,
    default_reservation_ttl_ms: ttl,
    max_reservation_ttl_ms: ttl,
    max_reservation_extensions: { type: 'integer', minimum: 0, maximum: 1000 },
  },
} as const;

export const apiKeyCreateBody = {
  type: 'object',
  required: ['tenant_id', 'name'],
  additionalProperties: false,
  properties: {
    tenant_id: tenantId,
    name: { type: 'string', minLength: 1, maxLength: 256 },
    description: { type: 'string', maxLength: 1024 },
    permissions: { type: 'array', maxItems: 64, items: { type: 'string' } },
    scope_filter: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 512 } },
    expires_at: dateTime,
    metadata: stringMap,
  },
} as const;

export const budgetCreateBody = {
  type: 'object',
  required: ['scope', 'unit', 'allocated'],
  additionalProperties: false,
  properties: {
    tenant_id: tenantId,
    scope: { type: 'string', minLength: 1, maxLength: 1024 },
    unit: { type: 'string', enum: [...UNITS] },
    allocated: amountSchema,
    overdraft_limit: amountSchema,
    commit_overage_policy: overage,
    rollover_policy: { type: 'string', enum: ['NONE', 'CARRY_FORWARD', 'CAP_AT_ALLOCATED'] },
    period_start: dateTime,
    period_end: dateTime,
    metadata: stringMap,
  },
} as const;

export const fundingBody = {
  type: 'object',
  required: ['operation', 'amount'],
  additionalProperties: false,
  properties: {
    operation: { type: 'string', enum: ['CREDIT', 'DEBIT', 'RESET', 'RESET_SPENT', 'REPAY_DEBT'] },
    amount: amountSchema,
    spent: amountSchema,
    reason: { type: 'string', maxLength: 512 },
    idempotency_key: { type: 'string', minLength: 1, maxLength: 256 },
    metadata: stringMap,
  },
} as const;

const anyObject = { type: 'object', maxProperties: 64 } as const;
const reason = { type: 'string', maxLength: 512 } as const;
const nonNegative = { type: 'integer', minimum: 0, maximum: MAX_AMOUNT } as const;
const search = { type: 'string', maxLength: 128 } as const;
const bulkKey = { type: 'string', minLength: 1, maxLength: 128 } as const;

export const budgetUpdateBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    overdraft_limit: amountSchema,
    commit_overage_policy: overage,
    metadata: anyObject,
  },
} as const;

/** freezeBudget / unfreezeBudget: an empty body (or none) is valid. */
export const statusTransitionBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason, metadata: anyObject },
} as const;

const permissionList = { type: 'array', maxItems: 64, items: { type: 'string' } } as const;
const scopeFilterList = { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 512 } } as const;

export const apiKeyUpdateBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 256 },
    description: { type: 'string', maxLength: 1024 },
    permissions: permissionList,
    scope_filter: scopeFilterList,
    metadata: anyObject,
  },
} as const;

export const validateKeyBody = {
  type: 'object',
  required: ['key_secret'],
  additionalProperties: false,
  properties: { key_secret: { type: 'string', minLength: 1, maxLength: 1024 } },
} as const;

export const capsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    max_tokens: nonNegative,
    max_steps_remaining: nonNegative,
    tool_allowlist: { type: 'array', maxItems: 256, items: { type: 'string', maxLength: 256 } },
    tool_denylist: { type: 'array', maxItems: 256, items: { type: 'string', maxLength: 256 } },
    cooldown_ms: nonNegative,
  },
} as const;

const ttlOverride = {
  type: 'object',
  additionalProperties: false,
  properties: { default_ttl_ms: ttl, max_ttl_ms: ttl, max_extensions: { type: 'integer', minimum: 0, maximum: 1000 } },
} as const;

const rateLimits = {
  type: 'object',
  additionalProperties: false,
  properties: {
    max_reservations_per_minute: { type: 'integer', minimum: 1, maximum: 100_000_000 },
    max_commits_per_minute: { type: 'integer', minimum: 1, maximum: 100_000_000 },
  },
} as const;

const policyFields = {
  name: { type: 'string', minLength: 1, maxLength: 256 },
  description: { type: 'string', maxLength: 1024 },
  priority: { type: 'integer', minimum: 0, maximum: 1_000_000 },
  caps: capsSchema,
  commit_overage_policy: overage,
  reservation_ttl_override: ttlOverride,
  rate_limits: rateLimits,
  effective_from: dateTime,
  effective_until: dateTime,
} as const;

export const policyCreateBody = {
  type: 'object',
  required: ['name', 'scope_pattern'],
  additionalProperties: false,
  properties: { tenant_id: tenantId, scope_pattern: { type: 'string', minLength: 1, maxLength: 1024 }, ...policyFields },
} as const;

export const policyUpdateBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { ...policyFields, status: { type: 'string', enum: ['ACTIVE', 'DISABLED'] } },
} as const;

export const tenantBulkBody = {
  type: 'object',
  required: ['filter', 'action', 'idempotency_key'],
  additionalProperties: false,
  properties: {
    filter: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        status: { type: 'string', enum: ['ACTIVE', 'SUSPENDED', 'CLOSED'] },
        parent_tenant_id: { type: 'string', maxLength: 64 },
        observe_mode: { type: 'string', maxLength: 32 },
        search,
      },
    },
    action: { type: 'string', enum: ['SUSPEND', 'REACTIVATE', 'CLOSE'] },
    expected_count: { type: 'integer', minimum: 0, maximum: 1_000_000_000 },
    idempotency_key: bulkKey,
  },
} as const;

const utilization = { type: 'number', minimum: 0, maximum: 1 } as const;

export const budgetBulkBody = {
  type: 'object',
  required: ['filter', 'action', 'idempotency_key', 'amount'],
  additionalProperties: false,
  properties: {
    filter: {
      type: 'object',
      required: ['tenant_id'],
      additionalProperties: false,
      properties: {
        tenant_id: { type: 'string', minLength: 1, maxLength: 64 },
        scope_prefix: { type: 'string', minLength: 1, maxLength: 1024 },
        unit: { type: 'string', enum: [...UNITS] },
        status: { type: 'string', enum: ['ACTIVE', 'FROZEN', 'CLOSED'] },
        over_limit: { type: 'boolean' },
        has_debt: { type: 'boolean' },
        utilization_min: utilization,
        utilization_max: utilization,
        search,
      },
    },
    action: { type: 'string', enum: ['CREDIT', 'DEBIT', 'RESET', 'REPAY_DEBT', 'RESET_SPENT'] },
    amount: amountSchema,
    spent: amountSchema,
    reason,
    expected_count: { type: 'integer', minimum: 0, maximum: 1_000_000_000 },
    idempotency_key: bulkKey,
  },
} as const;
