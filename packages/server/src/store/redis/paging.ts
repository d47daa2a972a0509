/**
 * Sorted keyset pages computed in TypeScript, for admin lists whose filters and sort keys have
 * no dedicated Redis index (they read the candidate rows, then filter, sort and cut here).
 * Order and cursor semantics match the SQL backends: ORDER BY value, id in one direction,
 * resuming strictly after the cursor's (value, id).
 */
import type { KeyedPage, KeysetPosition, SortDir } from '../types.js';

export type SortValue = string | number;

export const compareValues = (a: SortValue, b: SortValue): number => {
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  const x = String(a);
  const y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
};

export function keyedPage<T>(
  rows: readonly T[],
  value: (r: T) => SortValue,
  id: (r: T) => string,
  dir: SortDir,
  after: KeysetPosition | undefined,
  limit: number,
): KeyedPage<T> {
  const sign = dir === 'asc' ? 1 : -1;
  const cmp = (a: T, b: T) => sign * (compareValues(value(a), value(b)) || compareValues(id(a), id(b)));
  let list = [...rows].sort(cmp);
  if (after) {
    list = list.filter((r) => {
      const v = value(r);
      const av = typeof v === 'number' ? Number(after.value) : String(after.value);
      return sign * (compareValues(v, av) || compareValues(id(r), after.id)) > 0;
    });
  }
  const kept = list.slice(0, limit);
  const last = kept[kept.length - 1];
  const hasMore = list.length > limit;
  return { rows: kept, hasMore, next: hasMore && last ? { value: value(last), id: id(last) } : undefined };
}

/** Case-insensitive substring over several fields (like the SQL backends' instr(lower(...))). */
export const matchesSearch = (text: string | undefined, ...fields: Array<string | undefined>): boolean =>
  text === undefined || fields.some((f) => (f ?? '').toLowerCase().includes(text.toLowerCase()));

/**
 * A key's scope_filter over a canonical scope: one segment must match exactly ("workspace:eng")
 * or by level ("agent:*"). Empty = unrestricted. Same rule as the SQL scopeFilterClause.
 */
export function scopeFilterMatches(scope: string, filter: readonly string[] | undefined): boolean {
  if (!filter || filter.length === 0) return true;
  return filter.some((entry) => {
    const e = entry.toLowerCase();
    return e.endsWith(':*') ? `/${scope}`.includes(`/${e.slice(0, -1)}`) : `/${scope}/`.includes(`/${e}/`);
  });
}
