import { invalid } from './errors.js';

/** Canonical subject hierarchy, root first. */
export const SCOPE_LEVELS = ['tenant', 'workspace', 'app', 'workflow', 'agent', 'toolset'] as const;
export type ScopeLevel = (typeof SCOPE_LEVELS)[number];

export interface Subject {
  tenant?: string;
  workspace?: string;
  app?: string;
  workflow?: string;
  agent?: string;
  toolset?: string;
  dimensions?: Record<string, string>;
}

/** Values become path segments joined by ':' and '/', so only this charset is stable. */
const SEGMENT_VALUE = /^[a-zA-Z0-9_.-]+$/;

export interface DerivedScopes {
  /** Leaf path, e.g. "tenant:acme/agent:bot". */
  scopePath: string;
  /** Cumulative prefixes in canonical order, root first. */
  affectedScopes: string[];
}

/**
 * Derives the canonical scope path and the affected (cumulative) scopes from a subject.
 * Only levels present in the subject appear; gaps are skipped, never filled.
 * Values are lower-cased so that "Acme" and "acme" name the same budget.
 */
export function deriveScopes(subject: Subject): DerivedScopes {
  const segments: string[] = [];
  for (const level of SCOPE_LEVELS) {
    const raw = subject[level];
    if (raw === undefined) continue;
    if (!SEGMENT_VALUE.test(raw)) {
      throw invalid(`subject.${level} must match ^[a-zA-Z0-9_.-]+$`, { field: `subject.${level}` });
    }
    segments.push(`${level}:${raw.toLowerCase()}`);
  }
  if (segments.length === 0) {
    throw invalid('subject must include at least one of tenant, workspace, app, workflow, agent, toolset', {
      field: 'subject',
    });
  }
  const affectedScopes: string[] = [];
  let path = '';
  for (const seg of segments) {
    path = path ? `${path}/${seg}` : seg;
    affectedScopes.push(path);
  }
  return { scopePath: path, affectedScopes };
}

const BUDGET_SCOPE_ID = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/**
 * Parses and canonicalises a budget scope written by an operator, e.g.
 * "tenant:acme/workspace:prod". It must start at the tenant and follow the canonical
 * order (levels may be skipped, never repeated or reordered).
 */
export function parseBudgetScope(scope: string, field = 'scope'): { tenant: string; scope: string; depth: number } {
  const parts = scope.split('/');
  let lastIndex = -1;
  const canon: string[] = [];
  for (const part of parts) {
    const colon = part.indexOf(':');
    if (colon <= 0) throw invalid(`${field} segment "${part}" must look like <level>:<id>`, { field });
    const level = part.slice(0, colon) as ScopeLevel;
    const id = part.slice(colon + 1);
    const index = SCOPE_LEVELS.indexOf(level);
    if (index < 0) throw invalid(`${field} has unknown level "${level}" (levels: ${SCOPE_LEVELS.join(', ')})`, { field });
    if (index <= lastIndex) throw invalid(`${field} levels must follow ${SCOPE_LEVELS.join(' > ')} without repeats`, { field });
    if (canon.length === 0 && level !== 'tenant') throw invalid(`${field} must start with tenant:<id>`, { field });
    if (id.length === 0 || id.length > 128 || !BUDGET_SCOPE_ID.test(id)) {
      throw invalid(`${field} id "${id}" must be 1-128 characters of [A-Za-z0-9._-], starting and ending alphanumeric`, { field });
    }
    lastIndex = index;
    canon.push(`${level}:${id.toLowerCase()}`);
  }
  const tenant = canon[0]!.slice('tenant:'.length);
  return { tenant, scope: canon.join('/'), depth: canon.length };
}
