/**
 * SQL building blocks of the governance lists: keyset pages over any sort column with a unique
 * tie-breaker, the shared budget filter (listBudgets and bulkActionBudgets use the same one),
 * scope_filter matching, and the row mappings of policies and audit entries.
 */
import type { PolicyRecord } from '../../ledger/ops/shared.js';
import type { AuditRecord, KeyedPage, KeysetPosition, LedgerFilter, SortDir } from '../types.js';

export type Row = Record<string, unknown>;

const opt = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (v as T));
const json = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (JSON.parse(v as string) as T));
const toJson = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));

/** Accumulates WHERE clauses and their named parameters. */
export class Where {
  readonly clauses: string[] = [];
  readonly params: Row = {};
  private n = 0;

  /** Registers a parameter and returns its placeholder. */
  param(value: unknown): string {
    const name = `p${this.n++}`;
    this.params[name] = value;
    return `@${name}`;
  }

  /** Adds `clause` (which uses `@p` for `value`) unless value is undefined. */
  add(clause: string, value: unknown): this {
    if (value === undefined) return this;
    const ph = this.param(value);
    // `@p` not followed by a digit: clauses may embed placeholders registered earlier (@p0, @p1...).
    this.clauses.push(clause.replace(/@p(?!\d)/g, ph));
    return this;
  }

  raw(clause: string): this {
    this.clauses.push(clause);
    return this;
  }

  /** `column IN (...)` for a non-empty list. */
  in(column: string, values: readonly string[] | undefined): this {
    if (!values || values.length === 0) return this;
    this.clauses.push(`${column} IN (${values.map((v) => this.param(v)).join(', ')})`);
    return this;
  }

  /** Case-insensitive substring match over several columns (instr: no LIKE wildcards to escape). */
  search(columns: readonly string[], text: string | undefined): this {
    if (text === undefined) return this;
    const ph = this.param(text.toLowerCase());
    this.clauses.push(`(${columns.map((c) => `instr(lower(COALESCE(${c}, '')), ${ph}) > 0`).join(' OR ')})`);
    return this;
  }

  sql(): string {
    return this.clauses.length ? `WHERE ${this.clauses.join(' AND ')}` : '';
  }
}

/**
 * Keyset pagination: ORDER BY (sort expression, id) in one direction, resuming strictly after
 * `after`. The id is unique, so rows are never skipped or repeated, and rows added while a
 * client pages appear at most once (at their place in the order).
 */
export function keyset(where: Where, sortExpr: string, idColumn: string, dir: SortDir, after: KeysetPosition | undefined): string {
  const cmp = dir === 'asc' ? '>' : '<';
  const d = dir === 'asc' ? 'ASC' : 'DESC';
  if (after) {
    const i = where.param(after.id);
    if (sortExpr === idColumn) where.raw(`${idColumn} ${cmp} ${i}`);
    else {
      const v = where.param(after.value);
      where.raw(`((${sortExpr}) ${cmp} ${v} OR ((${sortExpr}) = ${v} AND ${idColumn} ${cmp} ${i}))`);
    }
  }
  return sortExpr === idColumn ? `ORDER BY ${idColumn} ${d}` : `ORDER BY ${sortExpr} ${d}, ${idColumn} ${d}`;
}

/** Runs a keyset query (the SELECT must expose the sort value as `_k` and the id as `_i`). */
export function keyedPage<T>(rows: Row[], limit: number, map: (r: Row) => T): KeyedPage<T> {
  const hasMore = rows.length > limit;
  const kept = rows.slice(0, limit);
  const last = kept[kept.length - 1];
  return {
    rows: kept.map(map),
    hasMore,
    next: hasMore && last ? { value: last._k as string | number, id: last._i as string } : undefined,
  };
}

/**
 * A key's scope_filter as SQL over a canonical scope column: the scope must contain one
 * matching segment, exact ("workspace:eng") or by level ("agent:*"). Empty = unrestricted.
 */
export function scopeFilterClause(where: Where, column: string, filter: readonly string[] | undefined): void {
  if (!filter || filter.length === 0) return;
  const parts = filter.map((entry) => {
    const e = entry.toLowerCase();
    return e.endsWith(':*')
      ? `instr('/' || ${column}, ${where.param(`/${e.slice(0, -1)}`)}) > 0`
      : `instr('/' || ${column} || '/', ${where.param(`/${e}/`)}) > 0`;
  });
  where.raw(`(${parts.join(' OR ')})`);
}

/** spent / allocated, with allocated 0 counting as 0 (the spec's utilization). */
export const UTILIZATION_SQL = 'CASE WHEN allocated = 0 THEN 0.0 ELSE CAST(spent AS REAL) / allocated END';

/** The listBudgets / bulkActionBudgets filter, identical for both. */
export function ledgerWhere(f: LedgerFilter): Where {
  const w = new Where();
  w.add('tenant_id = @p', f.tenantId);
  if (f.scopePrefix !== undefined) {
    w.add("(scope = @p OR substr(scope, 1, length(@p) + 1) = @p || '/')", f.scopePrefix);
  }
  w.add('unit = @p', f.unit);
  w.add('status = @p', f.status);
  if (f.overLimit !== undefined) w.raw(f.overLimit ? 'is_over_limit = 1' : 'is_over_limit = 0');
  if (f.hasDebt !== undefined) w.raw(f.hasDebt ? 'debt > 0' : 'debt = 0');
  w.add(`(${UTILIZATION_SQL}) >= @p`, f.utilizationMin);
  w.add(`(${UTILIZATION_SQL}) <= @p`, f.utilizationMax);
  w.search(['tenant_id', 'scope'], f.search);
  scopeFilterClause(w, 'scope', f.scopeFilter);
  return w;
}

export const LEDGER_SORT_SQL: Record<string, string> = {
  tenant_id: 'tenant_id',
  scope: 'scope',
  unit: 'unit',
  status: 'status',
  commit_overage_policy: "COALESCE(commit_overage_policy, '')",
  utilization: UTILIZATION_SQL,
  debt: 'debt',
};

// ---- policies ----

export function policyFromRow(r: Row): PolicyRecord {
  return {
    policy_id: r.policy_id as string,
    tenant_id: r.tenant_id as string,
    name: r.name as string,
    description: opt(r.description),
    scope_pattern: r.scope_pattern as string,
    priority: r.priority as number,
    caps: json(r.caps),
    commit_overage_policy: opt(r.commit_overage_policy),
    reservation_ttl_override: json(r.reservation_ttl_override),
    rate_limits: json(r.rate_limits),
    status: r.status as PolicyRecord['status'],
    effective_from: opt(r.effective_from),
    effective_until: opt(r.effective_until),
    created_at: r.created_at as number,
    updated_at: opt(r.updated_at),
  };
}

export function policyToRow(p: PolicyRecord): Row {
  return {
    policy_id: p.policy_id,
    tenant_id: p.tenant_id,
    name: p.name,
    description: p.description ?? null,
    scope_pattern: p.scope_pattern,
    priority: p.priority,
    caps: toJson(p.caps),
    commit_overage_policy: p.commit_overage_policy ?? null,
    reservation_ttl_override: toJson(p.reservation_ttl_override),
    rate_limits: toJson(p.rate_limits),
    status: p.status,
    effective_from: p.effective_from ?? null,
    effective_until: p.effective_until ?? null,
    created_at: p.created_at,
    updated_at: p.updated_at ?? null,
  };
}

// ---- audit ----

export function auditFromRow(r: Row): AuditRecord {
  return {
    log_id: r.log_id as string,
    timestamp: r.timestamp as number,
    tenant_id: r.tenant_id as string,
    key_id: opt(r.key_id),
    user_agent: opt(r.user_agent),
    source_ip: opt(r.source_ip),
    operation: r.operation as string,
    resource_type: opt(r.resource_type),
    resource_id: opt(r.resource_id),
    request_id: opt(r.request_id),
    trace_id: opt(r.trace_id),
    status: r.status as number,
    error_code: opt(r.error_code),
    subject: json(r.subject),
    action: json(r.action),
    amount: json(r.amount),
    metadata: json(r.metadata),
    expires_at: r.expires_at as number,
  };
}

export function auditToRow(a: AuditRecord): Row {
  return {
    log_id: a.log_id,
    timestamp: a.timestamp,
    tenant_id: a.tenant_id,
    key_id: a.key_id ?? null,
    user_agent: a.user_agent ?? null,
    source_ip: a.source_ip ?? null,
    operation: a.operation,
    resource_type: a.resource_type ?? null,
    resource_id: a.resource_id ?? null,
    request_id: a.request_id ?? null,
    trace_id: a.trace_id ?? null,
    status: a.status,
    error_code: a.error_code ?? null,
    subject: toJson(a.subject),
    action: toJson(a.action),
    amount: toJson(a.amount),
    metadata: toJson(a.metadata),
    expires_at: a.expires_at,
  };
}

export const insertSql = (table: string, row: Row): string => {
  const cols = Object.keys(row);
  return `INSERT INTO ${table} (${cols.join(',')}) VALUES (${cols.map((c) => '@' + c).join(',')})`;
};
