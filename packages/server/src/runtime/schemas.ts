/**
 * Request body schemas of the runtime operations, written to the protocol's request shapes.
 * Every object rejects unknown properties; amounts are bounded to the exactly representable
 * range (see ledger/amounts.ts).
 */
import { MAX_AMOUNT, UNITS } from '../ledger/amounts.js';
import { OVERAGE_POLICIES } from '../ledger/types.js';

export const idempotencyKey = { type: 'string', minLength: 1, maxLength: 256 } as const;

export const amountSchema = {
  type: 'object',
  required: ['unit', 'amount'],
  additionalProperties: false,
  properties: {
    unit: { type: 'string', enum: [...UNITS] },
    amount: { type: 'integer', minimum: 0, maximum: MAX_AMOUNT },
  },
} as const;

const level = { type: 'string', maxLength: 128 } as const;

export const subjectSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tenant: level,
    workspace: level,
    app: level,
    workflow: level,
    agent: level,
    toolset: level,
    dimensions: { type: 'object', maxProperties: 16, additionalProperties: { type: 'string', maxLength: 256 } },
  },
} as const;

export const actionSchema = {
  type: 'object',
  required: ['kind', 'name'],
  additionalProperties: false,
  properties: {
    kind: { type: 'string', minLength: 1, maxLength: 64 },
    name: { type: 'string', minLength: 1, maxLength: 256 },
    tags: { type: 'array', maxItems: 10, items: { type: 'string', maxLength: 64 } },
    // v0.1.26 clients may send policy keys; servers without action quotas must accept and ignore them.
    policy_keys: { type: 'object' },
  },
} as const;

const metadata = { type: 'object' } as const;
const overagePolicy = { type: 'string', enum: [...OVERAGE_POLICIES] } as const;

export const metricsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tokens_input: { type: 'integer', minimum: 0, maximum: MAX_AMOUNT },
    tokens_output: { type: 'integer', minimum: 0, maximum: MAX_AMOUNT },
    latency_ms: { type: 'integer', minimum: 0, maximum: MAX_AMOUNT },
    model_version: { type: 'string', maxLength: 128 },
    custom: { type: 'object' },
  },
} as const;

export const reserveBody = {
  type: 'object',
  required: ['idempotency_key', 'subject', 'action', 'estimate'],
  additionalProperties: false,
  properties: {
    idempotency_key: idempotencyKey,
    subject: subjectSchema,
    action: actionSchema,
    estimate: amountSchema,
    ttl_ms: { type: 'integer', minimum: 1000, maximum: 86_400_000 },
    grace_period_ms: { type: 'integer', minimum: 0, maximum: 60_000 },
    overage_policy: overagePolicy,
    dry_run: { type: 'boolean' },
    metadata,
    // v0.1.26 observe mode is not implemented: enforcing is accepted, OBSERVE is refused clearly.
    observe_mode: { type: 'string', enum: ['DISABLED', 'ENFORCE'] },
  },
} as const;

export const decideBody = {
  type: 'object',
  required: ['idempotency_key', 'subject', 'action', 'estimate'],
  additionalProperties: false,
  properties: { idempotency_key: idempotencyKey, subject: subjectSchema, action: actionSchema, estimate: amountSchema, metadata },
} as const;

export const commitBody = {
  type: 'object',
  required: ['idempotency_key', 'actual'],
  additionalProperties: false,
  properties: { idempotency_key: idempotencyKey, actual: amountSchema, metrics: metricsSchema, metadata },
} as const;

export const releaseBody = {
  type: 'object',
  required: ['idempotency_key'],
  additionalProperties: false,
  properties: { idempotency_key: idempotencyKey, reason: { type: 'string', maxLength: 256 } },
} as const;

export const extendBody = {
  type: 'object',
  required: ['idempotency_key', 'extend_by_ms'],
  additionalProperties: false,
  properties: { idempotency_key: idempotencyKey, extend_by_ms: { type: 'integer', minimum: 1, maximum: 86_400_000 }, metadata },
} as const;

export const eventBody = {
  type: 'object',
  required: ['idempotency_key', 'subject', 'action', 'actual'],
  additionalProperties: false,
  properties: {
    idempotency_key: idempotencyKey,
    subject: subjectSchema,
    action: actionSchema,
    actual: amountSchema,
    overage_policy: overagePolicy,
    metrics: metricsSchema,
    client_time_ms: { type: 'integer', minimum: 0, maximum: MAX_AMOUNT },
    metadata,
  },
} as const;

export const reservationIdParams = {
  type: 'object',
  required: ['reservation_id'],
  properties: { reservation_id: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;
