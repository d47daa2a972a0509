import type { Unit } from './amounts.js';
import type { Subject } from './scopes.js';

export const OVERAGE_POLICIES = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'] as const;
export type OveragePolicy = (typeof OVERAGE_POLICIES)[number];

export const RESERVATION_STATUSES = ['ACTIVE', 'COMMITTED', 'RELEASED', 'EXPIRED'] as const;
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];

export type TenantStatus = 'ACTIVE' | 'SUSPENDED' | 'CLOSED';
export type BudgetStatus = 'ACTIVE' | 'FROZEN' | 'CLOSED';
export type Decision = 'ALLOW' | 'ALLOW_WITH_CAPS' | 'DENY';

export interface Action {
  kind: string;
  name: string;
  tags?: string[];
  [extra: string]: unknown;
}

export interface Caps {
  max_tokens?: number;
  max_steps_remaining?: number;
  tool_allowlist?: string[];
  tool_denylist?: string[];
  cooldown_ms?: number;
}

export interface TenantRecord {
  tenant_id: string;
  name: string;
  status: TenantStatus;
  parent_tenant_id?: string | undefined;
  default_commit_overage_policy?: OveragePolicy | undefined;
  default_reservation_ttl_ms?: number | undefined;
  max_reservation_ttl_ms?: number | undefined;
  max_reservation_extensions?: number | undefined;
  reservation_expiry_policy?: string | undefined;
  metadata?: Record<string, string> | undefined;
  created_at: number;
  updated_at?: number | undefined;
  suspended_at?: number | undefined;
  closed_at?: number | undefined;
}

/**
 * One (scope, unit) ledger. `remaining` is never stored: it is always
 * allocated - spent - reserved - debt, so the protocol's ledger invariant cannot drift.
 */
export interface BudgetRecord {
  ledger_id: string;
  tenant_id: string;
  scope: string;
  unit: Unit;
  allocated: number;
  reserved: number;
  spent: number;
  debt: number;
  overdraft_limit: number;
  is_over_limit: boolean;
  status: BudgetStatus;
  commit_overage_policy?: OveragePolicy | undefined;
  rollover_policy?: string | undefined;
  period_start?: number | undefined;
  period_end?: number | undefined;
  metadata?: Record<string, string> | undefined;
  created_at: number;
  updated_at: number;
}

export const remainingOf = (b: Pick<BudgetRecord, 'allocated' | 'spent' | 'reserved' | 'debt'>): number =>
  b.allocated - b.spent - b.reserved - b.debt;

export interface ReservationRecord {
  reservation_id: string;
  tenant_id: string;
  status: ReservationStatus;
  subject: Subject;
  action: Action;
  unit: Unit;
  /** The held amount (the request's estimate). */
  reserved: number;
  scope_path: string;
  affected_scopes: string[];
  /** The subset of affected_scopes that had a budget in `unit` when the hold was taken. */
  budgeted_scopes: string[];
  overage_policy: OveragePolicy;
  idempotency_key: string;
  created_at_ms: number;
  expires_at_ms: number;
  ttl_ms: number;
  grace_period_ms: number;
  max_extensions: number;
  extension_count: number;
  metadata?: Record<string, unknown> | undefined;
  committed?: number | undefined;
  committed_metadata?: Record<string, unknown> | undefined;
  metrics?: Record<string, unknown> | undefined;
  debt_incurred?: number | undefined;
  finalized_at_ms?: number | undefined;
  expired_at_ms?: number | undefined;
}

/** A stored outcome of an idempotent request, replayed verbatim on a same-key retry. */
export interface IdempotencyRecord {
  tenant_id: string;
  endpoint: string;
  key: string;
  request_hash: string;
  status: number;
  body: string;
  reservation_id?: string | undefined;
  created_at: number;
  expires_at: number;
}
