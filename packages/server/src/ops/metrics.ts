/**
 * Every Prometheus metric the server exports, on one registry per process. Other modules import
 * the metric objects they increment from here (the webhook dispatcher: webhookDeliveries and
 * webhookDeliveryDuration). Domain counters are derived at the HTTP layer (route, status,
 * protocol error code, decision) and from the events the store reports after each commit;
 * nothing in ledger/ knows about metrics.
 *
 * Several servers started in one process (tests) share these counters; assert on deltas.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
// The event-loop delay histogram (nodejs_eventloop_lag_p50/p90/p99_seconds) samples the loop
// every 100 ms instead of prom-client's 10: at 10 ms its timer was most of what woke an idle
// server (about 100 wakeups a second), and ten samples a second are plenty between scrapes.
collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });

/** Latency buckets in seconds: sub-millisecond store-local operations up to slow outliers. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// ---------------------------------------------------------------- HTTP

export const httpRequestDuration = new Histogram({
  name: 'http_request_duration_seconds',
  help: 'HTTP request latency by method, route template and status code',
  labelNames: ['method', 'route', 'status_code'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

export const rateLimited = new Counter({
  name: 'cycles_rate_limited_total',
  help: 'Requests refused with 429 LIMIT_EXCEEDED, by the limit that refused them (ip, key, auth_failures)',
  labelNames: ['limit'] as const,
  registers: [registry],
});

export const authFailures = new Counter({
  name: 'cycles_auth_failures_total',
  help: 'Requests refused with 401 UNAUTHORIZED',
  registers: [registry],
});

// ---------------------------------------------------------------- domain (runtime plane)

export const reserveOutcomes = new Counter({
  name: 'cycles_reservations_reserve_total',
  help: 'Reservation requests by decision (ALLOW, DENY, ERROR) and reason (OK, a DecisionReasonCode or an error code); replays excluded',
  labelNames: ['decision', 'reason', 'dry_run', 'tenant'] as const,
  registers: [registry],
});

export const decideOutcomes = new Counter({
  name: 'cycles_decisions_total',
  help: 'POST /v1/decide answers by decision and reason; replays excluded',
  labelNames: ['decision', 'reason', 'tenant'] as const,
  registers: [registry],
});

export const commitOutcomes = new Counter({
  name: 'cycles_reservations_commit_total',
  help: 'Commits by outcome (OK or the protocol error code); replays excluded',
  labelNames: ['outcome', 'tenant'] as const,
  registers: [registry],
});

export const releaseOutcomes = new Counter({
  name: 'cycles_reservations_release_total',
  help: 'Releases by outcome and actor (tenant key or admin on behalf of the tenant); replays excluded',
  labelNames: ['outcome', 'actor', 'tenant'] as const,
  registers: [registry],
});

export const extendOutcomes = new Counter({
  name: 'cycles_reservations_extend_total',
  help: 'Extensions by outcome; replays excluded',
  labelNames: ['outcome', 'tenant'] as const,
  registers: [registry],
});

export const eventOutcomes = new Counter({
  name: 'cycles_events_total',
  help: 'Direct-debit events (POST /v1/events) by outcome; replays excluded',
  labelNames: ['outcome', 'tenant'] as const,
  registers: [registry],
});

export const idempotentReplays = new Counter({
  name: 'cycles_idempotent_replays_total',
  help: 'Requests answered from an idempotency record (same key, same payload) by operation',
  labelNames: ['operation', 'tenant'] as const,
  registers: [registry],
});

export const reservationsExpired = new Counter({
  name: 'cycles_reservations_expired_total',
  help: 'Reservations expired by the sweeper (TTL and grace passed without commit or release)',
  registers: [registry],
});

/** Counted from the events each committed mutation wrote to the outbox. */
export const domainEvents = new Counter({
  name: 'cycles_domain_events_total',
  help: 'Protocol events written by committed mutations, by event type',
  labelNames: ['event_type'] as const,
  registers: [registry],
});

export const overdraftIncurred = new Counter({
  name: 'cycles_overdraft_incurred_total',
  help: 'Times a commit or event put a scope into debt (budget.debt_incurred)',
  labelNames: ['tenant'] as const,
  registers: [registry],
});

export const overLimitEntered = new Counter({
  name: 'cycles_over_limit_entered_total',
  help: 'Times a scope became over limit (budget.over_limit_entered); new reservations there are blocked',
  labelNames: ['tenant'] as const,
  registers: [registry],
});

/** Point-in-time store gauges, refreshed when /metrics is scraped. */
export const scopesOverLimit = new Gauge({
  name: 'cycles_scopes_over_limit',
  help: 'Budgets currently over limit (is_over_limit = true)',
  registers: [registry],
});

export const scopesInDebt = new Gauge({
  name: 'cycles_scopes_in_debt',
  help: 'Budgets currently carrying debt',
  registers: [registry],
});

export const reservationsActive = new Gauge({
  name: 'cycles_reservations_active',
  help: 'Reservations currently ACTIVE (holding budget)',
  registers: [registry],
});

// ---------------------------------------------------------------- background work

export const sweeperLag = new Gauge({
  name: 'cycles_sweeper_lag_seconds',
  help: 'Now minus the due time of the oldest reservation still waiting to be expired (0 when none is due)',
  registers: [registry],
});

export const sweeperRuns = new Counter({
  name: 'cycles_sweeper_runs_total',
  help: 'Expiry sweeps by outcome (ok, error)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const sweeperRunDuration = new Histogram({
  name: 'cycles_sweeper_run_duration_seconds',
  help: 'Duration of one expiry sweep (all batches of one tick)',
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

/** Incremented by the webhook dispatcher: outcome is delivered, failed (will retry), or exhausted (gave up). */
export const webhookDeliveries = new Counter({
  name: 'cycles_webhook_deliveries_total',
  help: 'Webhook delivery attempts by outcome (delivered, failed, exhausted, blocked)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const webhookDeliveryDuration = new Histogram({
  name: 'cycles_webhook_delivery_duration_seconds',
  help: 'Duration of one webhook delivery attempt',
  labelNames: ['outcome'] as const,
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

// ---------------------------------------------------------------- store

export const storeOperationDuration = new Histogram({
  name: 'cycles_store_operation_duration_seconds',
  help: 'Store calls by operation and outcome (ok, error = refused by the ledger rules, unavailable = store failure)',
  labelNames: ['operation', 'outcome'] as const,
  buckets: LATENCY_BUCKETS,
  registers: [registry],
});

export const storeUp = new Gauge({
  name: 'cycles_store_up',
  help: '1 while the store answers and accepts writes, 0 after a store failure until the next success',
  registers: [registry],
});
storeUp.set(1);

export const metricsContentType = registry.contentType;
