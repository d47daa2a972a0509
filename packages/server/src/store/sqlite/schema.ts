/**
 * The embedded store's schema. Amounts are SQLite INTEGERs (64-bit). The reservation list's sort
 * keys (created, expires, status, reserved, scope) each have an index that starts with the tenant
 * and ends with the reservation id, so a keyset page is an index range scan whatever the table
 * size. Every secondary index costs a B-tree insert (and, where its key is random, a page of
 * WAL) per reservation, so there are no others beyond the partial indexes of the sweeper and the
 * purge (a row is in them only while it awaits expiry, or once it is settled or expired): sorting
 * by the reservation id walks the primary key, and the idempotency-key filter is applied to the
 * rows of the chosen sort index (it was already: SQLite prefers the sort index to a filter index
 * that would need a sort).
 */
export const SCHEMA_VERSION = 4;

/**
 * Steps that bring a file of an older schema version to this one, by the version they upgrade
 * from. Each runs in one transaction with the version bump; new files get the current SCHEMA.
 */
export const UPGRADES: Record<number, string> = {
  // v1 -> v2: indexes the primary key and the sort indexes make redundant.
  1: `
DROP INDEX IF EXISTS reservations_id;
DROP INDEX IF EXISTS reservations_idem;
`,
  // v2 -> v3: the hourly purge of expired reservations read the whole table without it.
  2: `
CREATE INDEX IF NOT EXISTS reservations_expired ON reservations (expired_at_ms) WHERE expired_at_ms IS NOT NULL;
`,
  // v3 -> v4: idempotency becomes a rowid table. As a WITHOUT ROWID table its B-tree cells held
  // whole rows (the stored reply, about 1.4 KB) and spilled to overflow pages, which a key lookup
  // read from the file at every level of the descent; now the key lives in a small index and the
  // row is appended in insertion order.
  3: `
CREATE TABLE idempotency_v4 (
  tenant_id TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  status INTEGER NOT NULL,
  body TEXT NOT NULL,
  reservation_id TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, endpoint, key)
);
INSERT INTO idempotency_v4 (tenant_id, endpoint, key, request_hash, status, body, reservation_id, created_at, expires_at)
  SELECT tenant_id, endpoint, key, request_hash, status, body, reservation_id, created_at, expires_at FROM idempotency ORDER BY created_at;
DROP TABLE idempotency;
ALTER TABLE idempotency_v4 RENAME TO idempotency;
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
`,
};

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tenants (
  tenant_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  parent_tenant_id TEXT,
  default_commit_overage_policy TEXT,
  default_reservation_ttl_ms INTEGER,
  max_reservation_ttl_ms INTEGER,
  max_reservation_extensions INTEGER,
  reservation_expiry_policy TEXT,
  metadata TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER,
  suspended_at INTEGER,
  closed_at INTEGER
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  key_prefix TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  description TEXT,
  permissions TEXT NOT NULL,
  scope_filter TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER,
  revoked_reason TEXT,
  last_used_at INTEGER,
  metadata TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, key_id);

CREATE TABLE IF NOT EXISTS budgets (
  scope TEXT NOT NULL,
  unit TEXT NOT NULL,
  ledger_id TEXT NOT NULL UNIQUE,
  tenant_id TEXT NOT NULL,
  allocated INTEGER NOT NULL,
  reserved INTEGER NOT NULL,
  spent INTEGER NOT NULL,
  debt INTEGER NOT NULL,
  overdraft_limit INTEGER NOT NULL,
  is_over_limit INTEGER NOT NULL,
  status TEXT NOT NULL,
  commit_overage_policy TEXT,
  rollover_policy TEXT,
  period_start INTEGER,
  period_end INTEGER,
  metadata TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  -- Scope segments by level, for subject-filter matching without parsing scopes in SQL.
  lvl_workspace TEXT,
  lvl_app TEXT,
  lvl_workflow TEXT,
  lvl_agent TEXT,
  lvl_toolset TEXT,
  leaf_level TEXT NOT NULL,
  PRIMARY KEY (scope, unit)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budgets_tenant ON budgets (tenant_id, ledger_id);

CREATE TABLE IF NOT EXISTS reservations (
  reservation_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  status TEXT NOT NULL,
  subject TEXT NOT NULL,
  action TEXT NOT NULL,
  unit TEXT NOT NULL,
  reserved INTEGER NOT NULL,
  scope_path TEXT NOT NULL,
  affected_scopes TEXT NOT NULL,
  budgeted_scopes TEXT NOT NULL,
  overage_policy TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  ttl_ms INTEGER NOT NULL,
  grace_period_ms INTEGER NOT NULL,
  max_extensions INTEGER NOT NULL,
  extension_count INTEGER NOT NULL,
  metadata TEXT,
  committed INTEGER,
  committed_metadata TEXT,
  metrics TEXT,
  debt_incurred INTEGER,
  finalized_at_ms INTEGER,
  expired_at_ms INTEGER,
  workspace TEXT,
  app TEXT,
  workflow TEXT,
  agent TEXT,
  toolset TEXT,
  -- expires_at_ms + grace_period_ms while ACTIVE, NULL once terminal: the sweeper's queue.
  due_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_created ON reservations (tenant_id, created_at_ms, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_expires ON reservations (tenant_id, expires_at_ms, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_status ON reservations (tenant_id, status, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_reserved ON reservations (tenant_id, reserved, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_scope ON reservations (tenant_id, scope_path, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_due ON reservations (due_at_ms) WHERE due_at_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS reservations_finalized ON reservations (finalized_at_ms) WHERE finalized_at_ms IS NOT NULL;
-- Partial: an entry only once a reservation expires, for the purge of expired reservations.
CREATE INDEX IF NOT EXISTS reservations_expired ON reservations (expired_at_ms) WHERE expired_at_ms IS NOT NULL;

CREATE TABLE IF NOT EXISTS idempotency (
  tenant_id TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  status INTEGER NOT NULL,
  body TEXT NOT NULL,
  reservation_id TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  -- A rowid table: the reply stays out of the key's B-tree (see the v4 upgrade).
  PRIMARY KEY (tenant_id, endpoint, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);

-- Transactional outbox: every event is written with the change that caused it.
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  event_type TEXT NOT NULL,
  category TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  tenant_id TEXT NOT NULL,
  scope TEXT,
  correlation_id TEXT,
  request_id TEXT,
  trace_id TEXT,
  trace_flags TEXT,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant_time ON events (tenant_id, timestamp, event_id);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp, event_id);
CREATE INDEX IF NOT EXISTS events_type_time ON events (event_type, timestamp);
CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id) WHERE correlation_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS webhook_subscriptions (
  subscription_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  url TEXT NOT NULL,
  name TEXT,
  description TEXT,
  event_types TEXT NOT NULL,
  event_categories TEXT NOT NULL,
  scope_filter TEXT,
  thresholds TEXT,
  header_names TEXT NOT NULL,
  headers_sealed TEXT,
  secret_sealed TEXT,
  retry_policy TEXT NOT NULL,
  disable_after_failures INTEGER NOT NULL,
  status TEXT NOT NULL,
  consecutive_failures INTEGER NOT NULL,
  metadata TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER,
  last_triggered_at INTEGER,
  last_success_at INTEGER,
  last_failure_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhooks_tenant ON webhook_subscriptions (tenant_id, status);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
  delivery_id TEXT PRIMARY KEY,
  subscription_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL,
  attempted_at INTEGER NOT NULL,
  completed_at INTEGER,
  response_status INTEGER,
  response_time_ms INTEGER,
  error_message TEXT,
  trace_id TEXT,
  trace_flags TEXT,
  traceparent_inbound_valid INTEGER,
  -- '' for live fan-out; a replay id for replayed deliveries. Unique per pair: delivered once.
  replay_id TEXT NOT NULL DEFAULT '',
  lease_owner TEXT,
  lease_until INTEGER,
  UNIQUE (subscription_id, event_id, replay_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('PENDING', 'RETRYING');
CREATE INDEX IF NOT EXISTS deliveries_subscription ON webhook_deliveries (subscription_id, attempted_at, delivery_id);

-- How far the fan-out has read the event outbox.
CREATE TABLE IF NOT EXISTS dispatch_state (
  name TEXT PRIMARY KEY,
  last_seq INTEGER NOT NULL
) WITHOUT ROWID;

-- Governance plane: policies and the audit log (store/sqlite/governance*.ts).
CREATE TABLE IF NOT EXISTS policies (
  policy_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  name TEXT NOT NULL,
  description TEXT,
  scope_pattern TEXT NOT NULL,
  priority INTEGER NOT NULL,
  caps TEXT,
  commit_overage_policy TEXT,
  reservation_ttl_override TEXT,
  rate_limits TEXT,
  status TEXT NOT NULL,
  effective_from INTEGER,
  effective_until INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER,
  UNIQUE (tenant_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS policies_tenant ON policies (tenant_id, created_at, policy_id);

CREATE TABLE IF NOT EXISTS audit_logs (
  log_id TEXT PRIMARY KEY,
  timestamp INTEGER NOT NULL,
  tenant_id TEXT NOT NULL,
  key_id TEXT,
  user_agent TEXT,
  source_ip TEXT,
  operation TEXT NOT NULL,
  resource_type TEXT,
  resource_id TEXT,
  request_id TEXT,
  trace_id TEXT,
  status INTEGER NOT NULL,
  error_code TEXT,
  subject TEXT,
  action TEXT,
  amount TEXT,
  metadata TEXT,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_time ON audit_logs (timestamp, log_id);
CREATE INDEX IF NOT EXISTS audit_tenant_time ON audit_logs (tenant_id, timestamp, log_id);
CREATE INDEX IF NOT EXISTS audit_request ON audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_trace ON audit_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_expiry ON audit_logs (expires_at);
CREATE INDEX IF NOT EXISTS tenants_created ON tenants (created_at, tenant_id);
CREATE INDEX IF NOT EXISTS api_keys_created ON api_keys (created_at, key_id);
`;
