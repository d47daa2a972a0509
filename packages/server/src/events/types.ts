/** Stored shapes of webhook subscriptions and deliveries. */
import { CyclesError } from '../ledger/errors.js';

export interface RetryPolicy {
  max_retries: number;
  initial_delay_ms: number;
  backoff_multiplier: number;
  max_delay_ms: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { max_retries: 5, initial_delay_ms: 1000, backoff_multiplier: 2, max_delay_ms: 60_000 };

export type WebhookStatus = 'ACTIVE' | 'PAUSED' | 'DISABLED';

export interface WebhookRecord {
  subscription_id: string;
  tenant_id: string;
  url: string;
  name?: string | undefined;
  description?: string | undefined;
  event_types: string[];
  event_categories: string[];
  scope_filter?: string | undefined;
  thresholds?: Record<string, unknown> | undefined;
  /** Custom header names, in clear for masking; values live sealed in headers_sealed. */
  header_names: string[];
  headers_sealed?: string | undefined;
  secret_sealed?: string | undefined;
  retry_policy: RetryPolicy;
  disable_after_failures: number;
  status: WebhookStatus;
  consecutive_failures: number;
  metadata?: Record<string, unknown> | undefined;
  created_at: number;
  updated_at?: number | undefined;
  last_triggered_at?: number | undefined;
  last_success_at?: number | undefined;
  last_failure_at?: number | undefined;
}

export type DeliveryStatus = 'PENDING' | 'SUCCESS' | 'FAILED' | 'RETRYING';

export interface DeliveryRecord {
  delivery_id: string;
  subscription_id: string;
  event_id: string;
  event_type: string;
  tenant_id: string;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: number;
  /** When the delivery was created (the protocol's attempted_at). */
  attempted_at: number;
  completed_at?: number | undefined;
  response_status?: number | undefined;
  response_time_ms?: number | undefined;
  error_message?: string | undefined;
  trace_id?: string | undefined;
  trace_flags?: string | undefined;
  traceparent_inbound_valid?: boolean | undefined;
  replay_id?: string | undefined;
}

/** A claimed delivery with what is needed to send it. */
export interface ClaimedDelivery {
  delivery: DeliveryRecord;
  /** The exact Event JSON to send. */
  body: string;
  request_id?: string | undefined;
  subscription: WebhookRecord;
}

export interface DeliveryOutcome {
  delivery_id: string;
  owner: string;
  ok: boolean;
  response_status?: number | undefined;
  response_time_ms?: number | undefined;
  error_message?: string | undefined;
  /** A failure that must not be retried (e.g. blocked by the SSRF guard). */
  terminal?: boolean | undefined;
}

export const newSubscriptionId = (): string => `whsub_${randomHex(8)}`;
export const newDeliveryId = (): string => `del_${randomHex(8)}`;

import { randomBytes } from 'node:crypto';
function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** Delay before retry n (1-based): min(initial * multiplier^(n-1), max). */
export const retryDelay = (p: RetryPolicy, n: number): number => Math.min(Math.round(p.initial_delay_ms * p.backoff_multiplier ** (n - 1)), p.max_delay_ms);

/**
 * The protocol allows one replay per subscription at a time: a replay is in progress while any
 * delivery it queued is still PENDING or RETRYING. Stores check this in the same transaction that
 * queues the next replay, so two concurrent replays cannot both pass.
 */
export function replayInProgress(subscriptionId: string): CyclesError {
  return new CyclesError('REPLAY_IN_PROGRESS', `A replay to webhook ${subscriptionId} is still being delivered; retry once its deliveries have finished`, {
    subscription_id: subscriptionId,
  });
}
