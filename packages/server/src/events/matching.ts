/**
 * Which subscriptions receive an event. Shared by live fan-out and replay so the two can
 * never disagree, and fail-closed on the tenant boundary: a tenant-owned subscription never
 * receives an admin-only event, whatever its selectors say.
 */
import { SYSTEM_TENANT, TENANT_CATEGORIES } from './model.js';

export interface Selectable {
  tenant_id: string;
  status: string;
  event_types: readonly string[];
  event_categories: readonly string[];
  scope_filter?: string | undefined;
}

export interface Matchable {
  event_type: string;
  category: string;
  tenant_id: string;
  scope?: string | undefined;
}

export const isTenantAccessible = (eventType: string, category: string): boolean =>
  (TENANT_CATEGORIES as readonly string[]).includes(category) && (TENANT_CATEGORIES as readonly string[]).includes(eventType.split('.')[0] ?? '');

export function scopeMatches(filter: string | undefined, scope: string | undefined): boolean {
  if (filter === undefined || filter === '') return true;
  if (!scope) return false;
  if (filter === '*') return true;
  if (filter.endsWith('/*')) {
    const prefix = filter.slice(0, -1);
    return scope.startsWith(prefix) && scope.length > prefix.length;
  }
  return scope === filter;
}

/** True when the subscription, as it is, should receive the event. */
export function subscriptionMatches(sub: Selectable, e: Matchable): boolean {
  if (sub.status !== 'ACTIVE') return false;
  if (sub.tenant_id !== SYSTEM_TENANT && sub.tenant_id !== e.tenant_id) return false;
  if (sub.tenant_id !== SYSTEM_TENANT && !isTenantAccessible(e.event_type, e.category)) return false;
  const selected = sub.event_types.includes(e.event_type) || sub.event_categories.includes(e.category);
  if (!selected) return false;
  return scopeMatches(sub.scope_filter, e.scope);
}
