/**
 * SQL building blocks of the governance lists on PostgreSQL, mirroring the embedded store's
 * (store/sqlite/governance-sql.ts) clause for clause: keyset pages over any sort column with a
 * unique tie-breaker, the shared budget filter (listBudgets and bulkActionBudgets use the same
 * one), scope_filter matching, and the audit row mapping.
 */
import type { AuditRecord, KeyedPage, KeysetPosition, LedgerFilter, SortDir } from '../types.js';
import { int, type Row } from './rows.js';

const opt = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (v as T));
const json = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (JSON.parse(v as string) as T));
const toJson = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));

/** Accumulates WHERE clauses and their positional parameters. */
export class Where {
  readonly clauses: string[] = [];
  readonly values: unknown[] = [];

  /** Registers a parameter and returns its placeholder. */
  param(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }

  /** Adds `clause` (which uses `@p` for `value`) unless value is undefined. */
  add(clause: string, value: unknown): this {
    if (value === undefined) return this;
    const ph = this.param(value);
    this.clauses.push(clause.replaceAll('@p', ph));
    return this;
  }

  raw(clause: string): this {
    this.clauses.push(clause);
    return this;
  }

  /** `column = ANY(...)` for a non-empty list. */
  in(column: string, values: readonly string[] | undefined): this {
    if (!values || values.length === 0) return this;
    this.clauses.push(`${column} = ANY(${this.param([...values])}::text[])`);
    return this;
  }

  /** Case-insensitive substring match over several columns (strpos: no LIKE wildcards to escape). */
  search(columns: readonly string[], text: string | undefined): this {
    if (text === undefined) return this;
    const ph = this.param(text.toLowerCase());
    this.clauses.push(`(${columns.map((c) => `strpos(lower(coalesce(${c}, '')), ${ph}::text) > 0`).join(' OR ')})`);
    return this;
  }

  sql(): string {
    return this.clauses.length ? `WHERE ${this.clauses.join(' AND ')}` : '';
  }
}

/**
 * Keyset pagination: ORDER BY (sort expression, id) in one direction, resuming strictly after
 * `after`. A cursor value that cannot be of the sort's type matches nothing (never a 500).
 */
export function keyset(where: Where, sortExpr: string, idColumn: string, dir: SortDir, after: KeysetPosition | undefined, kind: SortKind = 'text'): string {
  const cmp = dir === 'asc' ? '>' : '<';
  const d = dir === 'asc' ? 'ASC' : 'DESC';
  if (after) {
    const i = where.param(String(after.id));
    if (sortExpr === idColumn) where.raw(`${idColumn} ${cmp} ${i}`);
    else {
      const value = kind === 'text' ? String(after.value) : Number(after.value);
      if (kind !== 'text' && !Number.isFinite(value as number)) where.raw('false');
      else {
        // A fractional bound on a BIGINT sort compares exactly as numeric (the index still serves integers).
        const cast = kind === 'float' ? '::float8' : kind === 'int' && !Number.isSafeInteger(value) ? '::numeric' : '';
        const v = where.param(value) + cast;
        where.raw(`((${sortExpr}) ${cmp} ${v} OR ((${sortExpr}) = ${v} AND ${idColumn} ${cmp} ${i}))`);
      }
    }
  }
  return sortExpr === idColumn ? `ORDER BY ${idColumn} ${d}` : `ORDER BY ${sortExpr} ${d}, ${idColumn} ${d}`;
}

/** How a sort value is typed: BIGINT columns come back as strings and are turned into numbers. */
export type SortKind = 'text' | 'int' | 'float';

/** Runs a keyset query result (the SELECT exposes the sort value as `_k` and the id as `_i`). */
export function keyedPage<T>(rows: Row[], limit: number, map: (r: Row) => T, kind: SortKind = 'text'): KeyedPage<T> {
  const hasMore = rows.length > limit;
  const kept = rows.slice(0, limit);
  const last = kept[kept.length - 1];
  const value = (v: unknown): string | number => (kind === 'int' ? int(v) : kind === 'float' ? Number(v) : (v as string));
  return {
    rows: kept.map(map),
    hasMore,
    next: hasMore && last ? { value: value(last._k), id: last._i as string } : undefined,
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
      ? `strpos('/' || ${column}, ${where.param(`/${e.slice(0, -1)}`)}::text) > 0`
      : `strpos('/' || ${column} || '/', ${where.param(`/${e}/`)}::text) > 0`;
  });
  where.raw(`(${parts.join(' OR ')})`);
}

/** spent / allocated, with allocated 0 counting as 0 (the spec's utilization), as a double like SQLite's REAL. */
export const UTILIZATION_SQL = 'CASE WHEN allocated = 0 THEN 0.0::float8 ELSE spent::float8 / allocated END';

/** The listBudgets / bulkActionBudgets filter, identical for both. */
export function ledgerWhere(f: LedgerFilter): Where {
  const w = new Where();
  w.add('tenant_id = @p', f.tenantId);
  if (f.scopePrefix !== undefined) w.add("(scope = @p OR starts_with(scope, @p::text || '/'))", f.scopePrefix);
  w.add('unit = @p', f.unit);
  w.add('status = @p', f.status);
  if (f.overLimit !== undefined) w.raw(f.overLimit ? 'is_over_limit' : 'NOT is_over_limit');
  if (f.hasDebt !== undefined) w.raw(f.hasDebt ? 'debt > 0' : 'debt = 0');
  w.add(`(${UTILIZATION_SQL}) >= @p::float8`, f.utilizationMin);
  w.add(`(${UTILIZATION_SQL}) <= @p::float8`, f.utilizationMax);
  w.search(['tenant_id', 'scope'], f.search);
  scopeFilterClause(w, 'scope', f.scopeFilter);
  return w;
}

export const LEDGER_SORT_SQL: Record<string, { expr: string; kind: SortKind }> = {
  tenant_id: { expr: 'tenant_id', kind: 'text' },
  scope: { expr: 'scope', kind: 'text' },
  unit: { expr: 'unit', kind: 'text' },
  status: { expr: 'status', kind: 'text' },
  commit_overage_policy: { expr: "coalesce(commit_overage_policy, '')", kind: 'text' },
  utilization: { expr: UTILIZATION_SQL, kind: 'float' },
  debt: { expr: 'debt', kind: 'int' },
};

// ---- audit ----

export function auditFromRow(r: Row): AuditRecord {
  return {
    log_id: r.log_id as string,
    timestamp: int(r.timestamp),
    tenant_id: r.tenant_id as string,
    key_id: opt(r.key_id),
    user_agent: opt(r.user_agent),
    source_ip: opt(r.source_ip),
    operation: r.operation as string,
    resource_type: opt(r.resource_type),
    resource_id: opt(r.resource_id),
    request_id: opt(r.request_id),
    trace_id: opt(r.trace_id),
    status: int(r.status),
    error_code: opt(r.error_code),
    subject: json(r.subject),
    action: json(r.action),
    amount: json(r.amount),
    metadata: json(r.metadata),
    expires_at: int(r.expires_at),
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

export const AUDIT_COLS = Object.keys(auditToRow({ log_id: '', timestamp: 0, tenant_id: '', operation: '', status: 0, expires_at: 0 }));

/** All audit rows of a transaction in one statement. */
export const INSERT_AUDIT = `INSERT INTO audit_logs (${AUDIT_COLS.join(', ')})
  SELECT ${AUDIT_COLS.join(', ')} FROM json_populate_recordset(NULL::audit_logs, $1::json)`;
