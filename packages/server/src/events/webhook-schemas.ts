/** Request schemas of the webhook operations (shapes of the governance spec). */
const selectorList = { type: 'array', maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 128 } } as const;

export const retryPolicySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    max_retries: { type: 'integer', minimum: 0, maximum: 10 },
    initial_delay_ms: { type: 'integer', minimum: 100, maximum: 60_000 },
    backoff_multiplier: { type: 'number', minimum: 1, maximum: 10 },
    max_delay_ms: { type: 'integer', minimum: 1000, maximum: 3_600_000 },
  },
} as const;

export const thresholdsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    budget_utilization: { type: 'array', maxItems: 20, items: { type: 'number', minimum: 0, maximum: 1 } },
    burn_rate_multiplier: { type: 'number', minimum: 1.5 },
    burn_rate_window_seconds: { type: 'integer', minimum: 60, maximum: 86_400 },
    denial_rate_threshold: { type: 'number', minimum: 0, maximum: 1 },
    expiry_rate_threshold: { type: 'number', minimum: 0, maximum: 1 },
    auth_failure_rate_threshold: { type: 'number', minimum: 0, maximum: 1 },
    rate_window_seconds: { type: 'integer', minimum: 60, maximum: 86_400 },
  },
} as const;

const common = {
  name: { type: 'string', maxLength: 256 },
  description: { type: 'string', maxLength: 1024 },
  url: { type: 'string', minLength: 1, maxLength: 2048 },
  event_categories: selectorList,
  scope_filter: { type: 'string', maxLength: 1024 },
  thresholds: thresholdsSchema,
  signing_secret: { type: 'string', minLength: 16, maxLength: 512 },
  headers: { type: 'object', maxProperties: 20, additionalProperties: { type: 'string', maxLength: 4096 } },
  retry_policy: retryPolicySchema,
  disable_after_failures: { type: 'integer', minimum: 1, maximum: 1000 },
  metadata: { type: 'object' },
} as const;

export const webhookCreateBody = {
  type: 'object',
  required: ['url', 'event_types'],
  additionalProperties: false,
  properties: { ...common, event_types: { ...selectorList, minItems: 1 } },
} as const;

export const webhookUpdateBody = {
  type: 'object',
  additionalProperties: false,
  properties: { ...common, event_types: selectorList, status: { type: 'string', enum: ['ACTIVE', 'PAUSED'] } },
} as const;

export const replayBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    from: { type: 'string', format: 'date-time' },
    to: { type: 'string', format: 'date-time' },
    event_types: selectorList,
    max_events: { type: 'integer', minimum: 1, maximum: 1000 },
  },
} as const;
