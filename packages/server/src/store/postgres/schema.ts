/**
 * The PostgreSQL schema, as an ordered list of migrations. A migration is never edited once
 * released: a change is a new entry with the next version. `schema_migrations` records what a
 * database has; `migrate()` applies the rest under an advisory lock, each in the same
 * transaction as its version row, so a crash mid-migration leaves the previous version intact.
 *
 * Conventions (they keep the PostgreSQL backend byte-for-byte equal to the embedded one):
 * - amounts and times (epoch ms) are BIGINT; the ledger keeps every value within 2^53-1;
 * - text that is compared, sorted or paged on is COLLATE "C" (byte order, as SQLite's BINARY),
 *   so list order and keyset cursors match on every backend whatever the database locale;
 * - JSON fields are TEXT COLLATE "C" holding the exact JSON the ledger wrote (jsonb would reorder keys);
 * - every list the API offers has an index that starts with its filter and ends with its
 *   tie-breaking id, so a keyset page is an index range scan.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const V1_INITIAL = `
CREATE TABLE meta (
  key TEXT COLLATE "C" PRIMARY KEY,
  value TEXT COLLATE "C" NOT NULL
);

CREATE TABLE tenants (
  tenant_id TEXT COLLATE "C" PRIMARY KEY,
  name TEXT COLLATE "C" NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  parent_tenant_id TEXT COLLATE "C",
  default_commit_overage_policy TEXT COLLATE "C",
  default_reservation_ttl_ms BIGINT,
  max_reservation_ttl_ms BIGINT,
  max_reservation_extensions BIGINT,
  reservation_expiry_policy TEXT COLLATE "C",
  metadata TEXT COLLATE "C",
  created_at BIGINT NOT NULL,
  updated_at BIGINT,
  suspended_at BIGINT,
  closed_at BIGINT
);
CREATE INDEX tenants_status ON tenants (status, tenant_id);
CREATE INDEX tenants_name ON tenants (name, tenant_id);
CREATE INDEX tenants_created ON tenants (created_at, tenant_id);
CREATE INDEX tenants_parent ON tenants (parent_tenant_id, tenant_id) WHERE parent_tenant_id IS NOT NULL;

CREATE TABLE api_keys (
  key_id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  key_prefix TEXT COLLATE "C" NOT NULL,
  key_hash TEXT COLLATE "C" NOT NULL UNIQUE,
  name TEXT COLLATE "C" NOT NULL,
  description TEXT COLLATE "C",
  permissions TEXT COLLATE "C" NOT NULL,
  scope_filter TEXT COLLATE "C" NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked_at BIGINT,
  revoked_reason TEXT COLLATE "C",
  last_used_at BIGINT,
  metadata TEXT COLLATE "C"
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, key_id);
CREATE INDEX api_keys_name ON api_keys (name, key_id);
CREATE INDEX api_keys_status ON api_keys (status, key_id);
CREATE INDEX api_keys_created ON api_keys (created_at, key_id);
CREATE INDEX api_keys_expires ON api_keys (expires_at, key_id);

-- One row per (scope, unit) ledger. Transactions lock these rows ORDER BY scope, unit: along one
-- scope path a parent scope is a prefix of its children, so that order is root to leaf.
CREATE TABLE budgets (
  scope TEXT COLLATE "C" NOT NULL,
  unit TEXT COLLATE "C" NOT NULL,
  ledger_id TEXT COLLATE "C" NOT NULL UNIQUE,
  tenant_id TEXT COLLATE "C" NOT NULL,
  allocated BIGINT NOT NULL,
  reserved BIGINT NOT NULL,
  spent BIGINT NOT NULL,
  debt BIGINT NOT NULL,
  overdraft_limit BIGINT NOT NULL,
  is_over_limit BOOLEAN NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  commit_overage_policy TEXT COLLATE "C",
  rollover_policy TEXT COLLATE "C",
  period_start BIGINT,
  period_end BIGINT,
  metadata TEXT COLLATE "C",
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  -- Scope segments by level, for subject-filter matching without parsing scopes in SQL.
  lvl_workspace TEXT COLLATE "C",
  lvl_app TEXT COLLATE "C",
  lvl_workflow TEXT COLLATE "C",
  lvl_agent TEXT COLLATE "C",
  lvl_toolset TEXT COLLATE "C",
  leaf_level TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (scope, unit),
  CONSTRAINT budgets_amounts_in_range CHECK (
    allocated BETWEEN 0 AND 9007199254740991 AND reserved BETWEEN 0 AND 9007199254740991
    AND spent BETWEEN 0 AND 9007199254740991 AND debt BETWEEN 0 AND 9007199254740991
    AND overdraft_limit BETWEEN 0 AND 9007199254740991)
);
-- Ledger lists: one index per sort (ties broken by ledger_id). Sorting by utilization is
-- computed over the filtered rows instead: an index on spent/allocated would make every commit
-- a non-HOT update of the hottest table.
CREATE INDEX budgets_tenant ON budgets (tenant_id, ledger_id);
CREATE INDEX budgets_tenant_scope ON budgets (tenant_id, scope, ledger_id);
CREATE INDEX budgets_scope_ledger ON budgets (scope, ledger_id);
CREATE INDEX budgets_unit ON budgets (unit, ledger_id);
CREATE INDEX budgets_status ON budgets (status, ledger_id);
CREATE INDEX budgets_policy ON budgets ((coalesce(commit_overage_policy, '')), ledger_id);
CREATE INDEX budgets_debt ON budgets (debt, ledger_id);
CREATE INDEX budgets_over_limit ON budgets (ledger_id) WHERE is_over_limit;

CREATE TABLE reservations (
  reservation_id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  subject TEXT COLLATE "C" NOT NULL,
  action TEXT COLLATE "C" NOT NULL,
  unit TEXT COLLATE "C" NOT NULL,
  reserved BIGINT NOT NULL,
  scope_path TEXT COLLATE "C" NOT NULL,
  affected_scopes TEXT COLLATE "C" NOT NULL,
  budgeted_scopes TEXT COLLATE "C" NOT NULL,
  overage_policy TEXT COLLATE "C" NOT NULL,
  idempotency_key TEXT COLLATE "C" NOT NULL,
  created_at_ms BIGINT NOT NULL,
  expires_at_ms BIGINT NOT NULL,
  ttl_ms BIGINT NOT NULL,
  grace_period_ms BIGINT NOT NULL,
  max_extensions BIGINT NOT NULL,
  extension_count BIGINT NOT NULL,
  metadata TEXT COLLATE "C",
  committed BIGINT,
  committed_metadata TEXT COLLATE "C",
  metrics TEXT COLLATE "C",
  debt_incurred BIGINT,
  finalized_at_ms BIGINT,
  expired_at_ms BIGINT,
  workspace TEXT COLLATE "C",
  app TEXT COLLATE "C",
  workflow TEXT COLLATE "C",
  agent TEXT COLLATE "C",
  toolset TEXT COLLATE "C",
  -- expires_at_ms + grace_period_ms while ACTIVE, NULL once terminal: the sweeper's queue.
  due_at_ms BIGINT
);
CREATE INDEX reservations_created ON reservations (tenant_id, created_at_ms, reservation_id);
CREATE INDEX reservations_expires ON reservations (tenant_id, expires_at_ms, reservation_id);
CREATE INDEX reservations_status ON reservations (tenant_id, status, reservation_id);
CREATE INDEX reservations_reserved ON reservations (tenant_id, reserved, reservation_id);
CREATE INDEX reservations_scope ON reservations (tenant_id, scope_path, reservation_id);
CREATE INDEX reservations_id ON reservations (tenant_id, reservation_id);
CREATE INDEX reservations_idem ON reservations (tenant_id, idempotency_key);
CREATE INDEX reservations_due ON reservations (due_at_ms) WHERE due_at_ms IS NOT NULL;
CREATE INDEX reservations_finalized ON reservations (finalized_at_ms) WHERE finalized_at_ms IS NOT NULL;
CREATE INDEX reservations_expired ON reservations (expired_at_ms) WHERE status = 'EXPIRED';

-- The primary key is what makes a same-key retry a replay: two racing first attempts cannot
-- both insert, and the loser's whole transaction is retried and then finds the winner's record.
CREATE TABLE idempotency (
  tenant_id TEXT COLLATE "C" NOT NULL,
  endpoint TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  request_hash TEXT COLLATE "C" NOT NULL,
  status INTEGER NOT NULL,
  body TEXT COLLATE "C" NOT NULL,
  reservation_id TEXT COLLATE "C",
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, endpoint, key)
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);

-- Transactional outbox: every event is written with the change that caused it.
CREATE TABLE events (
  seq BIGSERIAL PRIMARY KEY,
  event_id TEXT COLLATE "C" NOT NULL UNIQUE,
  event_type TEXT COLLATE "C" NOT NULL,
  category TEXT COLLATE "C" NOT NULL,
  timestamp BIGINT NOT NULL,
  tenant_id TEXT COLLATE "C" NOT NULL,
  scope TEXT COLLATE "C",
  correlation_id TEXT COLLATE "C",
  request_id TEXT COLLATE "C",
  trace_id TEXT COLLATE "C",
  trace_flags TEXT COLLATE "C",
  body TEXT COLLATE "C" NOT NULL,
  -- false until the webhook fan-out has read the event. Not a sequence cursor: concurrent
  -- transactions commit out of seq order, so a cursor could step over an event for good.
  fanned_out BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX events_tenant_time ON events (tenant_id, timestamp, event_id);
CREATE INDEX events_time ON events (timestamp, event_id);
CREATE INDEX events_type_time ON events (event_type, timestamp);
CREATE INDEX events_category_time ON events (category, timestamp, event_id);
CREATE INDEX events_type ON events (event_type, event_id);
CREATE INDEX events_category ON events (category, event_id);
CREATE INDEX events_scope ON events ((coalesce(scope, '')), event_id);
CREATE INDEX events_tenant ON events (tenant_id, event_id);
CREATE INDEX events_correlation ON events (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX events_trace ON events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX events_request ON events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX events_unfanned ON events (seq) WHERE NOT fanned_out;

-- Governance: a tenant's policies (the ledger reads the ACTIVE ones at reserve and decide time).
CREATE TABLE policies (
  policy_id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  name TEXT COLLATE "C" NOT NULL,
  description TEXT COLLATE "C",
  scope_pattern TEXT COLLATE "C" NOT NULL,
  priority BIGINT NOT NULL,
  caps TEXT COLLATE "C",
  commit_overage_policy TEXT COLLATE "C",
  reservation_ttl_override TEXT COLLATE "C",
  rate_limits TEXT COLLATE "C",
  status TEXT COLLATE "C" NOT NULL,
  effective_from BIGINT,
  effective_until BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT,
  UNIQUE (tenant_id, name)
);
CREATE INDEX policies_tenant ON policies (tenant_id, created_at, policy_id);
CREATE INDEX policies_active ON policies (tenant_id) WHERE status = 'ACTIVE';

CREATE TABLE webhook_subscriptions (
  subscription_id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  url TEXT COLLATE "C" NOT NULL,
  name TEXT COLLATE "C",
  description TEXT COLLATE "C",
  event_types TEXT COLLATE "C" NOT NULL,
  event_categories TEXT COLLATE "C" NOT NULL,
  scope_filter TEXT COLLATE "C",
  thresholds TEXT COLLATE "C",
  header_names TEXT COLLATE "C" NOT NULL,
  headers_sealed TEXT COLLATE "C",
  secret_sealed TEXT COLLATE "C",
  retry_policy TEXT COLLATE "C" NOT NULL,
  disable_after_failures BIGINT NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  consecutive_failures BIGINT NOT NULL,
  metadata TEXT COLLATE "C",
  created_at BIGINT NOT NULL,
  updated_at BIGINT,
  last_triggered_at BIGINT,
  last_success_at BIGINT,
  last_failure_at BIGINT
);
CREATE INDEX webhooks_tenant ON webhook_subscriptions (tenant_id, status);
CREATE INDEX webhooks_status ON webhook_subscriptions (status, subscription_id);
CREATE INDEX webhooks_failures ON webhook_subscriptions (consecutive_failures, subscription_id);
CREATE INDEX webhooks_url ON webhook_subscriptions (url, subscription_id);
CREATE INDEX webhooks_tenant_id ON webhook_subscriptions (tenant_id, subscription_id);

CREATE TABLE webhook_deliveries (
  delivery_id TEXT COLLATE "C" PRIMARY KEY,
  subscription_id TEXT COLLATE "C" NOT NULL,
  event_id TEXT COLLATE "C" NOT NULL,
  event_type TEXT COLLATE "C" NOT NULL,
  tenant_id TEXT COLLATE "C" NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  attempts BIGINT NOT NULL,
  next_attempt_at BIGINT NOT NULL,
  attempted_at BIGINT NOT NULL,
  completed_at BIGINT,
  response_status BIGINT,
  response_time_ms BIGINT,
  error_message TEXT COLLATE "C",
  trace_id TEXT COLLATE "C",
  trace_flags TEXT COLLATE "C",
  traceparent_inbound_valid BOOLEAN,
  -- '' for live fan-out; a replay id for replayed deliveries. Unique per triple: delivered once.
  replay_id TEXT COLLATE "C" NOT NULL DEFAULT '',
  lease_owner TEXT COLLATE "C",
  lease_until BIGINT,
  UNIQUE (subscription_id, event_id, replay_id)
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('PENDING', 'RETRYING');
CREATE INDEX deliveries_subscription ON webhook_deliveries (subscription_id, attempted_at, delivery_id);
CREATE INDEX deliveries_finished ON webhook_deliveries (attempted_at) WHERE status IN ('SUCCESS', 'FAILED');

-- The audit log: append-only, each row stamped with its own retention (expires_at).
CREATE TABLE audit_logs (
  log_id TEXT COLLATE "C" PRIMARY KEY,
  timestamp BIGINT NOT NULL,
  tenant_id TEXT COLLATE "C" NOT NULL,
  key_id TEXT COLLATE "C",
  user_agent TEXT COLLATE "C",
  source_ip TEXT COLLATE "C",
  operation TEXT COLLATE "C" NOT NULL,
  resource_type TEXT COLLATE "C",
  resource_id TEXT COLLATE "C",
  request_id TEXT COLLATE "C",
  trace_id TEXT COLLATE "C",
  status BIGINT NOT NULL,
  error_code TEXT COLLATE "C",
  subject TEXT COLLATE "C",
  action TEXT COLLATE "C",
  amount TEXT COLLATE "C",
  metadata TEXT COLLATE "C",
  expires_at BIGINT NOT NULL
);
CREATE INDEX audit_time ON audit_logs (timestamp, log_id);
CREATE INDEX audit_tenant_time ON audit_logs (tenant_id, timestamp, log_id);
CREATE INDEX audit_tenant ON audit_logs (tenant_id, log_id);
CREATE INDEX audit_operation ON audit_logs (operation, log_id);
CREATE INDEX audit_resource_type ON audit_logs ((coalesce(resource_type, '')), log_id);
CREATE INDEX audit_key ON audit_logs ((coalesce(key_id, '')), log_id);
CREATE INDEX audit_status ON audit_logs (status, log_id);
CREATE INDEX audit_resource ON audit_logs (resource_id) WHERE resource_id IS NOT NULL;
CREATE INDEX audit_request ON audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_trace ON audit_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX audit_expiry ON audit_logs (expires_at);
`;

/**
 * The check at the end of every write statement (writes.ts): a part that touched other than the
 * expected number of rows fails the statement, and with it the transaction, on the server. The
 * COMMIT can then travel in the same network write as the statement: it turns into a rollback
 * whenever the check failed. An idempotency record that could not be written means another
 * request with the key committed first: that is reported as a unique violation, which retries the
 * whole transaction (and then replays that request's answer).
 */
const V2_WRITE_CHECK = `
CREATE OR REPLACE FUNCTION cycles_expect_rows(part TEXT, got BIGINT, want BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF got IS DISTINCT FROM want THEN
    IF part = 'put_i' THEN
      RAISE EXCEPTION 'idempotency record written concurrently' USING ERRCODE = 'unique_violation';
    END IF;
    RAISE EXCEPTION 'Store write % touched % rows, expected %', part, got, want USING ERRCODE = 'CYW01';
  END IF;
  RETURN got;
END
$$;
`;

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: 'initial schema', sql: V1_INITIAL },
  { version: 2, name: 'write check function', sql: V2_WRITE_CHECK },
];

/** The schema version this build needs. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
