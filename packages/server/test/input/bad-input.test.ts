/**
 * Bad input never gets a 500 or a stack trace, and changes nothing.
 *
 * Every runtime mutation endpoint (reserve, decide, events, commit, release, extend) and the
 * admin POST endpoints (tenants, api-keys, budgets, budgets/fund) get a systematic set of
 * malformed requests, generated from a valid template per endpoint: wrong types for every
 * field, missing required fields, extra properties at every nesting level, over-long
 * strings, out-of-range and huge amounts, bad enums and units, bad subject values, broken
 * bodies, wrong Content-Types and oversized bodies.
 *
 * Each must answer 400 with an ErrorResponse {error: INVALID_REQUEST (UNIT_MISMATCH where the
 * spec says), message, request_id, trace_id} whose message names the offending field, with
 * no stack frames. After the whole batch the tenant's balances, reservations and the admin
 * listings are byte-identical, and finally each valid template succeeds with the same
 * idempotency keys (so no failed request consumed a key).
 *
 * Spec: cycles-protocol-v0.yaml (every request schema has additionalProperties: false,
 * Amount int64 >= 0, Subject anyOf a standard field, ErrorResponse, INVALID_REQUEST and
 * UNIT_MISMATCH rows); digest §1.2, §2, §3, §4.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { idem, show, uid, type Json, type Res } from '../support/http.js';
import { provision, startInProcess, type InProcessServer } from '../support/server.js';

const TENANT = uid('bad');
const RID = '{rid}';
let srv: InProcessServer;
let apiKey: string;
let reservationId: string;

// ------------------------------------------------------------------ valid templates

const subject = () => ({ tenant: TENANT, workspace: 'w', agent: 'a', dimensions: { run_id: 'r1' } });
const action = () => ({ kind: 'llm.completion', name: 'model-x', tags: ['t1'] });
const tokens = (amount: number) => ({ unit: 'TOKENS', amount });
const metrics = () => ({ tokens_input: 1, tokens_output: 2, latency_ms: 3, model_version: 'v1', custom: { a: 1 } });

type Auth = 'tenant' | 'admin';
interface Endpoint {
  name: string;
  path: string;
  auth: Auth;
  template: Record<string, unknown>;
  /** Status of a successful request (control test). */
  ok: number;
  required: string[][];
  /** Objects whose keys are free-form (not recursed into for type mutations). */
  free: string[];
  /** Body paths that hold an Amount. */
  amounts: string[][];
}

const runtime: Endpoint[] = [
  {
    name: 'POST /v1/reservations',
    path: '/v1/reservations',
    auth: 'tenant',
    ok: 200,
    template: {
      idempotency_key: idem('ctl-rsv'),
      subject: subject(),
      action: action(),
      estimate: tokens(5),
      ttl_ms: 60_000,
      grace_period_ms: 1000,
      overage_policy: 'REJECT',
      dry_run: false,
      metadata: { note: 'x' },
    },
    required: [['idempotency_key'], ['subject'], ['action'], ['estimate'], ['estimate', 'unit'], ['estimate', 'amount'], ['action', 'kind'], ['action', 'name']],
    free: ['metadata', 'dimensions'],
    amounts: [['estimate']],
  },
  {
    name: 'POST /v1/decide',
    path: '/v1/decide',
    auth: 'tenant',
    ok: 200,
    template: { idempotency_key: idem('ctl-dec'), subject: subject(), action: action(), estimate: tokens(5), metadata: { note: 'x' } },
    required: [['idempotency_key'], ['subject'], ['action'], ['estimate'], ['estimate', 'unit'], ['estimate', 'amount'], ['action', 'kind'], ['action', 'name']],
    free: ['metadata', 'dimensions'],
    amounts: [['estimate']],
  },
  {
    name: 'POST /v1/events',
    path: '/v1/events',
    auth: 'tenant',
    ok: 201,
    template: {
      idempotency_key: idem('ctl-evt'),
      subject: subject(),
      action: action(),
      actual: tokens(3),
      overage_policy: 'REJECT',
      metrics: metrics(),
      client_time_ms: 1_700_000_000_000,
      metadata: { note: 'x' },
    },
    required: [['idempotency_key'], ['subject'], ['action'], ['actual'], ['actual', 'unit'], ['actual', 'amount'], ['action', 'kind'], ['action', 'name']],
    free: ['metadata', 'dimensions', 'custom'],
    amounts: [['actual']],
  },
  {
    name: 'POST /v1/reservations/{id}/commit',
    path: `/v1/reservations/${RID}/commit`,
    auth: 'tenant',
    ok: 200,
    template: { idempotency_key: idem('ctl-cmt'), actual: tokens(7), metrics: metrics(), metadata: { note: 'x' } },
    required: [['idempotency_key'], ['actual'], ['actual', 'unit'], ['actual', 'amount']],
    free: ['metadata', 'custom'],
    amounts: [['actual']],
  },
  {
    name: 'POST /v1/reservations/{id}/release',
    path: `/v1/reservations/${RID}/release`,
    auth: 'tenant',
    ok: 200,
    template: { idempotency_key: idem('ctl-rel'), reason: 'done' },
    required: [['idempotency_key']],
    free: [],
    amounts: [],
  },
  {
    name: 'POST /v1/reservations/{id}/extend',
    path: `/v1/reservations/${RID}/extend`,
    auth: 'tenant',
    ok: 200,
    template: { idempotency_key: idem('ctl-ext'), extend_by_ms: 1000, metadata: { note: 'x' } },
    required: [['idempotency_key'], ['extend_by_ms']],
    free: ['metadata'],
    amounts: [],
  },
];

const CONTROL_TENANT = uid('ctl');
const admin: Endpoint[] = [
  {
    name: 'POST /v1/admin/tenants',
    path: '/v1/admin/tenants',
    auth: 'admin',
    ok: 201,
    template: {
      tenant_id: CONTROL_TENANT,
      name: 'Control tenant',
      default_commit_overage_policy: 'REJECT',
      default_reservation_ttl_ms: 60_000,
      max_reservation_ttl_ms: 3_600_000,
      max_reservation_extensions: 5,
      reservation_expiry_policy: 'AUTO_RELEASE',
      metadata: { team: 'x' },
    },
    required: [['tenant_id'], ['name']],
    free: ['metadata'],
    amounts: [],
  },
  {
    name: 'POST /v1/admin/api-keys',
    path: '/v1/admin/api-keys',
    auth: 'admin',
    ok: 201,
    template: {
      tenant_id: TENANT,
      name: 'second key',
      description: 'control',
      permissions: ['reservations:create', 'balances:read'],
      scope_filter: ['workspace:w'],
      expires_at: '2099-01-01T00:00:00Z',
      metadata: { team: 'x' },
    },
    required: [['tenant_id'], ['name']],
    free: ['metadata'],
    amounts: [],
  },
  {
    name: 'POST /v1/admin/budgets',
    path: '/v1/admin/budgets',
    auth: 'admin',
    ok: 201,
    template: {
      tenant_id: TENANT,
      scope: `tenant:${TENANT}/workspace:ctl`,
      unit: 'TOKENS',
      allocated: tokens(100),
      overdraft_limit: tokens(10),
      commit_overage_policy: 'REJECT',
      rollover_policy: 'NONE',
      period_start: '2026-01-01T00:00:00Z',
      period_end: '2099-01-01T00:00:00Z',
      metadata: { team: 'x' },
    },
    required: [['scope'], ['unit'], ['allocated'], ['allocated', 'unit'], ['allocated', 'amount']],
    free: ['metadata'],
    amounts: [['allocated'], ['overdraft_limit']],
  },
  {
    name: 'POST /v1/admin/budgets/fund',
    path: `/v1/admin/budgets/fund?tenant_id=${TENANT}&scope=tenant:${TENANT}&unit=TOKENS`,
    auth: 'admin',
    ok: 200,
    template: { operation: 'CREDIT', amount: tokens(10), reason: 'top-up', idempotency_key: idem('ctl-fund'), metadata: { team: 'x' } },
    required: [['operation'], ['amount'], ['amount', 'unit'], ['amount', 'amount']],
    free: ['metadata'],
    amounts: [['amount']],
  },
];

// ------------------------------------------------------------------ mutations

interface Case {
  label: string;
  body?: unknown;
  raw?: string;
  contentType?: string | null;
  headers?: Record<string, string>;
  path?: string;
  /** The message must contain this (string) or match it (RegExp). */
  field: string | RegExp;
  codes?: string[];
}

const clone = <T>(v: T): T => structuredClone(v);
const dotted = (p: string[]) => p.join('.');

function setAt(obj: Record<string, unknown>, p: string[], value: unknown): Record<string, unknown> {
  const out = clone(obj);
  let cur: Json = out;
  for (const k of p.slice(0, -1)) cur = cur[k];
  cur[p[p.length - 1]!] = value;
  return out;
}

function deleteAt(obj: Record<string, unknown>, p: string[]): Record<string, unknown> {
  const out = clone(obj);
  let cur: Json = out;
  for (const k of p.slice(0, -1)) cur = cur[k];
  delete cur[p[p.length - 1]!];
  return out;
}

/** Every property path of the template; free-form objects are leaves. */
function paths(obj: Record<string, unknown>, free: string[], prefix: string[] = []): Array<{ p: string[]; v: unknown }> {
  const out: Array<{ p: string[]; v: unknown }> = [];
  for (const [k, v] of Object.entries(obj)) {
    const p = [...prefix, k];
    out.push({ p, v });
    if (v && typeof v === 'object' && !Array.isArray(v) && !free.includes(k)) out.push(...paths(v as Record<string, unknown>, free, p));
  }
  return out;
}

function wrongTypes(v: unknown): unknown[] {
  if (typeof v === 'string') return [123, true, null, {}, ['x']];
  if (typeof v === 'number') return ['7', 1.5, true, null, {}, []];
  if (typeof v === 'boolean') return ['true', 0, null];
  if (Array.isArray(v)) return ['x', 3, {}, null];
  return ['x', 3, true, null, []];
}

function typeCases(e: Endpoint): Case[] {
  const out: Case[] = [];
  for (const { p, v } of paths(e.template, e.free)) {
    for (const w of wrongTypes(v)) out.push({ label: `${dotted(p)} = ${JSON.stringify(w)}`, body: setAt(e.template, p, w), field: dotted(p) });
  }
  return out;
}

function missingCases(e: Endpoint): Case[] {
  return e.required.map((p) => ({ label: `without ${dotted(p)}`, body: deleteAt(e.template, p), field: dotted(p) }));
}

function extraCases(e: Endpoint): Case[] {
  const out: Case[] = [{ label: 'extra property on the body', body: { ...clone(e.template), zz_extra: 1 }, field: 'zz_extra' }];
  for (const { p, v } of paths(e.template, e.free)) {
    if (!v || typeof v !== 'object' || Array.isArray(v) || e.free.includes(p[p.length - 1]!)) continue;
    out.push({ label: `extra property in ${dotted(p)}`, body: setAt(e.template, [...p, 'zz_extra'], 'x'), field: 'zz_extra' });
  }
  return out;
}

function amountCases(e: Endpoint): Case[] {
  const out: Case[] = [];
  for (const p of e.amounts) {
    const f = dotted([...p, 'amount']);
    for (const [label, value] of [
      ['2^53', 2 ** 53],
      ['2^63', 2 ** 63],
      ['1e30', 1e30],
      ['-1', -1],
      ['1.5', 1.5],
    ] as const) {
      out.push({ label: `${f} = ${label}`, body: setAt(e.template, [...p, 'amount'], value), field: f });
    }
    // Exact int64 overflow and a literal that parses to Infinity, sent verbatim.
    for (const literal of ['9223372036854775808', '1e400', '-0.5e1']) {
      const marker = 424242424242;
      out.push({ label: `${f} = ${literal} (raw)`, raw: JSON.stringify(setAt(e.template, [...p, 'amount'], marker)).replace(String(marker), literal), field: f });
    }
    for (const unit of ['EUR', 'tokens', '', 'USD']) {
      out.push({ label: `${dotted([...p, 'unit'])} = ${JSON.stringify(unit)}`, body: setAt(e.template, [...p, 'unit'], unit), field: dotted([...p, 'unit']) });
    }
  }
  return out;
}

const long = (n: number) => 'x'.repeat(n);

function bodyShapeCases(): Case[] {
  const malformed = ['{', '{"idempotency_key": "x",}', "{'idempotency_key': 'x'}", 'nul', '{"idempotency_key": "x"', '{"a":1}{"b":2}', '\u0000'];
  const out: Case[] = malformed.map((raw) => ({ label: `malformed JSON ${JSON.stringify(raw)}`, raw, field: /JSON/ }));
  for (const raw of ['', '   ', '[]', '[{"idempotency_key":"x"}]', '"a string"', '42', 'null', 'true']) {
    out.push({ label: `body ${JSON.stringify(raw)}`, raw, field: /body/ });
  }
  out.push({ label: 'no body and no Content-Type', raw: '', contentType: null, field: /body|content-type/i });
  return out;
}

function contentTypeCases(e: Endpoint): Case[] {
  const raw = JSON.stringify(e.template);
  return [
    { label: 'Content-Type text/plain', raw, contentType: 'text/plain', field: /body|content-type/i },
    { label: 'Content-Type application/x-www-form-urlencoded', raw, contentType: 'application/x-www-form-urlencoded', field: /content-type/i },
    { label: 'Content-Type application/xml', raw, contentType: 'application/xml', field: /content-type/i },
    { label: 'no Content-Type', raw, contentType: null, field: /content-type/i },
    { label: 'oversized body (> 64 KiB)', body: setAt(e.template, ['zz_padding'], long(70 * 1024)), field: /body/i },
  ];
}

function subjectCases(e: Endpoint): Case[] {
  const out: Case[] = [];
  out.push({ label: 'subject.tenant of 129 characters', body: setAt(e.template, ['subject', 'tenant'], long(129)), field: 'subject.tenant' });
  for (const level of ['workspace', 'app', 'workflow', 'agent', 'toolset']) {
    out.push({ label: `subject.${level} of 129 characters`, body: setAt(e.template, ['subject', level], long(129)), field: `subject.${level}` });
    for (const bad of ['a/b', 'a:b', 'a b', 'prod/agent:x']) {
      out.push({ label: `subject.${level} = ${JSON.stringify(bad)}`, body: setAt(e.template, ['subject', level], bad), field: `subject.${level}` });
    }
  }
  out.push({ label: 'subject with only dimensions', body: setAt(e.template, ['subject'], { dimensions: { run_id: 'r1' } }), field: 'subject' });
  out.push({ label: 'empty subject', body: setAt(e.template, ['subject'], {}), field: 'subject' });
  out.push({ label: 'subject.dimensions value not a string', body: setAt(e.template, ['subject', 'dimensions'], { run_id: 5 }), field: 'subject.dimensions' });
  out.push({ label: 'subject.dimensions value of 257 characters', body: setAt(e.template, ['subject', 'dimensions'], { run_id: long(257) }), field: 'subject.dimensions' });
  const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
  out.push({ label: 'subject.dimensions with 17 entries', body: setAt(e.template, ['subject', 'dimensions'], many), field: 'subject.dimensions' });
  out.push({ label: 'action.kind of 65 characters', body: setAt(e.template, ['action', 'kind'], long(65)), field: 'action.kind' });
  out.push({ label: 'action.kind empty', body: setAt(e.template, ['action', 'kind'], ''), field: 'action.kind' });
  out.push({ label: 'action.name of 257 characters', body: setAt(e.template, ['action', 'name'], long(257)), field: 'action.name' });
  out.push({ label: 'action.tags with 11 items', body: setAt(e.template, ['action', 'tags'], Array.from({ length: 11 }, (_, i) => `t${i}`)), field: 'action.tags' });
  out.push({ label: 'action.tags item of 65 characters', body: setAt(e.template, ['action', 'tags'], [long(65)]), field: 'action.tags' });
  out.push({ label: 'action.tags item not a string', body: setAt(e.template, ['action', 'tags'], [5]), field: 'action.tags' });
  return out;
}

function idempotencyCases(e: Endpoint): Case[] {
  return [
    { label: 'idempotency_key of 257 characters', body: setAt(e.template, ['idempotency_key'], long(257)), field: 'idempotency_key' },
    { label: 'idempotency_key empty', body: setAt(e.template, ['idempotency_key'], ''), field: 'idempotency_key' },
    { label: 'X-Idempotency-Key header differs from the body key', body: e.template, headers: { 'x-idempotency-key': 'some-other-key' }, field: 'idempotency_key' },
  ];
}

const runtimeExtra: Record<string, () => Case[]> = {
  'POST /v1/reservations': () => {
    const e = runtime[0]!;
    return [
      ...[0, 999, 86_400_001, -1].map((v) => ({ label: `ttl_ms = ${v}`, body: setAt(e.template, ['ttl_ms'], v), field: 'ttl_ms' })),
      ...[-1, 60_001].map((v) => ({ label: `grace_period_ms = ${v}`, body: setAt(e.template, ['grace_period_ms'], v), field: 'grace_period_ms' })),
      ...['reject', 'DENY', '', 'ALLOW'].map((v) => ({ label: `overage_policy = ${JSON.stringify(v)}`, body: setAt(e.template, ['overage_policy'], v), field: 'overage_policy' })),
      { label: 'observe_mode = "SHADOW"', body: setAt(e.template, ['observe_mode'], 'SHADOW'), field: 'observe_mode' },
      { label: 'estimate in a unit with no budget (CREDITS)', body: setAt(e.template, ['estimate'], { unit: 'CREDITS', amount: 5 }), field: /unit/, codes: ['UNIT_MISMATCH'] },
    ];
  },
  'POST /v1/decide': () => {
    const e = runtime[1]!;
    return [
      { label: 'estimate in a unit with no budget (CREDITS)', body: setAt(e.template, ['estimate'], { unit: 'CREDITS', amount: 5 }), field: /unit/, codes: ['UNIT_MISMATCH'] },
      { label: 'ttl_ms is not a decide field', body: setAt(e.template, ['ttl_ms'], 60_000), field: 'ttl_ms' },
      { label: 'dry_run is not a decide field', body: setAt(e.template, ['dry_run'], true), field: 'dry_run' },
    ];
  },
  'POST /v1/events': () => {
    const e = runtime[2]!;
    return [
      ...['reject', 'DENY', ''].map((v) => ({ label: `overage_policy = ${JSON.stringify(v)}`, body: setAt(e.template, ['overage_policy'], v), field: 'overage_policy' })),
      { label: 'client_time_ms = -1', body: setAt(e.template, ['client_time_ms'], -1), field: 'client_time_ms' },
      { label: 'metrics.tokens_input = -1', body: setAt(e.template, ['metrics', 'tokens_input'], -1), field: 'metrics.tokens_input' },
      { label: 'metrics.latency_ms = 2^63', body: setAt(e.template, ['metrics', 'latency_ms'], 2 ** 63), field: 'metrics.latency_ms' },
      { label: 'metrics.model_version of 129 characters', body: setAt(e.template, ['metrics', 'model_version'], long(129)), field: 'metrics.model_version' },
      { label: 'actual in a unit with no budget (CREDITS)', body: setAt(e.template, ['actual'], { unit: 'CREDITS', amount: 3 }), field: /unit/, codes: ['UNIT_MISMATCH'] },
    ];
  },
  'POST /v1/reservations/{id}/commit': () => {
    const e = runtime[3]!;
    return [
      { label: 'actual.unit differs from the reservation unit', body: setAt(e.template, ['actual'], { unit: 'USD_MICROCENTS', amount: 7 }), field: /unit/, codes: ['UNIT_MISMATCH'] },
      { label: 'overage_policy is not a commit field', body: setAt(e.template, ['overage_policy'], 'REJECT'), field: 'overage_policy' },
      { label: 'metrics.tokens_output = 1.5', body: setAt(e.template, ['metrics', 'tokens_output'], 1.5), field: 'metrics.tokens_output' },
      { label: 'reservation_id of 129 characters', path: `/v1/reservations/${long(129)}/commit`, body: e.template, field: 'reservation_id' },
      { label: 'reservation_id of 4096 characters', path: `/v1/reservations/${long(4096)}/commit`, body: e.template, field: 'reservation_id' },
    ];
  },
  'POST /v1/reservations/{id}/release': () => {
    const e = runtime[4]!;
    return [
      { label: 'reason of 257 characters', body: setAt(e.template, ['reason'], long(257)), field: 'reason' },
      { label: 'reservation_id of 129 characters', path: `/v1/reservations/${long(129)}/release`, body: e.template, field: 'reservation_id' },
      { label: 'reservation_id of 4096 characters', path: `/v1/reservations/${long(4096)}/release`, body: e.template, field: 'reservation_id' },
    ];
  },
  'POST /v1/reservations/{id}/extend': () => {
    const e = runtime[5]!;
    return [
      ...[0, -5, 86_400_001].map((v) => ({ label: `extend_by_ms = ${v}`, body: setAt(e.template, ['extend_by_ms'], v), field: 'extend_by_ms' })),
      { label: 'reservation_id of 129 characters', path: `/v1/reservations/${long(129)}/extend`, body: e.template, field: 'reservation_id' },
      { label: 'reservation_id of 4096 characters', path: `/v1/reservations/${long(4096)}/extend`, body: e.template, field: 'reservation_id' },
    ];
  },
};

const adminExtra: Record<string, () => Case[]> = {
  'POST /v1/admin/tenants': () => {
    const e = admin[0]!;
    return [
      ...['UPPER-case', 'ab', 'has space', 'a/b', 'a:b', long(65)].map((v) => ({ label: `tenant_id = ${JSON.stringify(v.slice(0, 20))}`, body: setAt(e.template, ['tenant_id'], v), field: 'tenant_id' })),
      { label: 'name empty', body: setAt(e.template, ['name'], ''), field: 'name' },
      { label: 'name of 257 characters', body: setAt(e.template, ['name'], long(257)), field: 'name' },
      { label: 'default_commit_overage_policy bad enum', body: setAt(e.template, ['default_commit_overage_policy'], 'reject'), field: 'default_commit_overage_policy' },
      { label: 'default_reservation_ttl_ms = 999', body: setAt(e.template, ['default_reservation_ttl_ms'], 999), field: 'default_reservation_ttl_ms' },
      { label: 'max_reservation_extensions = -1', body: setAt(e.template, ['max_reservation_extensions'], -1), field: 'max_reservation_extensions' },
      { label: 'metadata value not a string', body: setAt(e.template, ['metadata'], { team: 5 }), field: 'metadata' },
    ];
  },
  'POST /v1/admin/api-keys': () => {
    const e = admin[1]!;
    return [
      { label: 'unknown permission', body: setAt(e.template, ['permissions'], ['reservations:create', 'root:everything']), field: 'permission' },
      { label: 'permission not a string', body: setAt(e.template, ['permissions'], [5]), field: 'permissions' },
      { label: 'expires_at not a date-time', body: setAt(e.template, ['expires_at'], 'tomorrow'), field: 'expires_at' },
      { label: 'expires_at in the past', body: setAt(e.template, ['expires_at'], '2001-01-01T00:00:00Z'), field: 'expires_at' },
      { label: 'tenant_id with bad characters', body: setAt(e.template, ['tenant_id'], 'Bad Tenant'), field: 'tenant_id' },
      { label: 'scope_filter item empty', body: setAt(e.template, ['scope_filter'], ['']), field: 'scope_filter' },
    ];
  },
  'POST /v1/admin/budgets': () => {
    const e = admin[2]!;
    return [
      { label: 'scope without the tenant segment', body: setAt(e.template, ['scope'], 'workspace:ctl'), field: 'scope' },
      { label: 'scope of another tenant', body: setAt(e.template, ['scope'], 'tenant:someone-else/workspace:ctl'), field: 'scope' },
      { label: 'scope with an unknown level', body: setAt(e.template, ['scope'], `tenant:${TENANT}/bogus:x`), field: 'scope' },
      { label: 'scope with levels out of order', body: setAt(e.template, ['scope'], `tenant:${TENANT}/agent:a/workspace:w`), field: 'scope' },
      { label: 'scope with a space', body: setAt(e.template, ['scope'], `tenant:${TENANT}/workspace:a b`), field: 'scope' },
      { label: 'scope empty', body: setAt(e.template, ['scope'], ''), field: 'scope' },
      { label: 'unit bad enum', body: setAt(e.template, ['unit'], 'EUR'), field: 'unit' },
      { label: 'allocated.unit differs from unit', body: setAt(e.template, ['allocated', 'unit'], 'CREDITS'), field: 'allocated.unit', codes: ['INVALID_REQUEST', 'UNIT_MISMATCH'] },
      { label: 'overdraft_limit.unit differs from unit', body: setAt(e.template, ['overdraft_limit', 'unit'], 'CREDITS'), field: 'overdraft_limit.unit', codes: ['INVALID_REQUEST', 'UNIT_MISMATCH'] },
      { label: 'commit_overage_policy bad enum', body: setAt(e.template, ['commit_overage_policy'], 'NEVER'), field: 'commit_overage_policy' },
      { label: 'rollover_policy bad enum', body: setAt(e.template, ['rollover_policy'], 'SOMETIMES'), field: 'rollover_policy' },
      { label: 'period_start not a date-time', body: setAt(e.template, ['period_start'], 'yesterday'), field: 'period_start' },
    ];
  },
  'POST /v1/admin/budgets/fund': () => {
    const e = admin[3]!;
    return [
      { label: 'operation bad enum', body: setAt(e.template, ['operation'], 'STEAL'), field: 'operation' },
      { label: 'amount.unit differs from the budget unit', body: setAt(e.template, ['amount', 'unit'], 'CREDITS'), field: 'amount.unit', codes: ['INVALID_REQUEST', 'UNIT_MISMATCH'] },
      { label: 'spent with operation CREDIT', body: setAt(e.template, ['spent'], tokens(1)), field: 'spent' },
      { label: 'reason of 513 characters', body: setAt(e.template, ['reason'], long(513)), field: 'reason' },
      { label: 'X-Idempotency-Key header differs from the body key', body: e.template, headers: { 'x-idempotency-key': 'other' }, field: 'idempotency_key' },
    ];
  },
};

// ------------------------------------------------------------------ checking one response

const ERROR_KEYS = new Set(['error', 'message', 'request_id', 'trace_id', 'details']);
/** A stack frame ("at fn (file:1:2)", "at file.js:1:2") or an internal module path. */
const STACK = /\bat (?:async )?[^\s()]+ \([^)]*:\d+:\d+\)|\bat [^\s()]+:\d+:\d+|node:internal|node_modules|\.ts:\d+:\d+|\.js:\d+:\d+/;

function problem(res: Res, c: Case): string | undefined {
  const codes = c.codes ?? ['INVALID_REQUEST'];
  const b = res.body as Json;
  const out: string[] = [];
  if (res.status !== 400) out.push(`status ${res.status}, expected 400`);
  if (STACK.test(res.text)) out.push('body contains a stack frame / internal path');
  if (!b || typeof b !== 'object' || Array.isArray(b)) return [...out, 'body is not a JSON object'].join('; ') + ` — ${show(res)}`;
  if (!codes.includes(b.error)) out.push(`error ${JSON.stringify(b.error)}, expected ${codes.join(' or ')}`);
  const extra = Object.keys(b).filter((k) => !ERROR_KEYS.has(k));
  if (extra.length) out.push(`ErrorResponse has extra properties ${extra.join(', ')} (additionalProperties: false)`);
  if (typeof b.message !== 'string' || b.message.length === 0) out.push('message missing');
  else if (typeof c.field === 'string' ? !b.message.includes(c.field) : !c.field.test(b.message)) out.push(`message does not name ${String(c.field)}`);
  if (typeof b.request_id !== 'string' || b.request_id.length === 0) out.push('request_id missing');
  else if (res.headers.get('x-request-id') !== b.request_id) out.push('request_id differs from X-Request-Id');
  if (typeof b.trace_id !== 'string' || !/^[0-9a-f]{32}$/.test(b.trace_id)) out.push('trace_id missing or not 32 lowercase hex');
  else if (res.headers.get('x-cycles-trace-id') !== b.trace_id) out.push('trace_id differs from X-Cycles-Trace-Id');
  if (!(res.headers.get('content-type') ?? '').includes('application/json')) out.push(`content-type ${res.headers.get('content-type')}`);
  return out.length ? `${out.join('; ')} — ${show(res)}` : undefined;
}

async function send(e: Endpoint, c: Case): Promise<Res> {
  const path = (c.path ?? e.path).replace(RID, reservationId);
  const opts = {
    apiKey: e.auth === 'tenant' ? apiKey : undefined,
    admin: e.auth === 'admin',
    headers: c.headers,
    contentType: c.contentType,
  };
  if (c.raw !== undefined) return srv.client.request('POST', path, { ...opts, raw: c.raw });
  return srv.client.request('POST', path, { ...opts, body: c.body });
}

async function runCases(e: Endpoint, cases: Case[]): Promise<void> {
  assert.ok(cases.length > 0);
  const failures: string[] = [];
  for (const c of cases) {
    let res: Res;
    try {
      res = await send(e, c);
    } catch (err) {
      failures.push(`${c.label}: request failed: ${(err as Error).message}`);
      continue;
    }
    const p = problem(res, c);
    if (p) failures.push(`${c.label}: ${p}`);
  }
  assert.equal(failures.length, 0, `${e.name}: ${failures.length} of ${cases.length} bad requests were not a clean 400:\n  - ${failures.join('\n  - ')}`);
}

// ------------------------------------------------------------------ state that must not change

interface State {
  balances: string;
  reservations: string;
  reservation: string;
  tenants: string;
  keys: string;
  budgets: string;
}

async function text(path: string, auth: Auth): Promise<string> {
  const r = await srv.client.get(path, auth === 'admin' ? { admin: true } : { apiKey });
  assert.equal(r.status, 200, `GET ${path}: ${show(r)}`);
  return r.text;
}

async function state(): Promise<State> {
  return {
    balances: await text(`/v1/balances?tenant=${TENANT}&include_children=true&limit=200`, 'tenant'),
    reservations: await text('/v1/reservations?limit=200', 'tenant'),
    reservation: await text(`/v1/reservations/${reservationId}`, 'tenant'),
    tenants: await text('/v1/admin/tenants?limit=100', 'admin'),
    keys: await text(`/v1/admin/api-keys?tenant_id=${TENANT}&limit=100`, 'admin'),
    budgets: await text(`/v1/admin/budgets?tenant_id=${TENANT}&limit=100`, 'admin'),
  };
}

let initial: State;

before(async () => {
  srv = await startInProcess();
  apiKey = await provision(srv.client, TENANT, [
    { at: '', allocated: 100_000 },
    { at: 'workspace:w', allocated: 50_000 },
  ]);
  const r = await srv.client.post(
    '/v1/reservations',
    { idempotency_key: idem('held'), subject: { tenant: TENANT, workspace: 'w', agent: 'a' }, action: action(), estimate: tokens(50), ttl_ms: 3_600_000 },
    { apiKey },
  );
  assert.equal(r.status, 200, show(r));
  reservationId = r.body.reservation_id;
  initial = await state();
});
after(async () => {
  await srv?.close();
});

describe('bad input: runtime endpoints answer a clean 400 naming the field', () => {
  for (const e of runtime) {
    describe(e.name, () => {
      test('broken bodies (malformed JSON, empty, non-object)', () => runCases(e, bodyShapeCases()));
      test('wrong Content-Type and oversized bodies', () => runCases(e, contentTypeCases(e)));
      test('wrong types for every field', () => runCases(e, typeCases(e)));
      test('missing required fields', () => runCases(e, missingCases(e)));
      test('extra properties at every nesting level', () => runCases(e, extraCases(e)));
      test('idempotency key length and header mismatch', () => runCases(e, idempotencyCases(e)));
      if (e.amounts.length > 0) test('huge, negative and fractional amounts, unknown units', () => runCases(e, amountCases(e)));
      if ('subject' in e.template) test('subject and action values (charset, lengths, only dimensions)', () => runCases(e, subjectCases(e)));
      test('endpoint-specific ranges, enums and unit mismatches', () => runCases(e, runtimeExtra[e.name]!()));
    });
  }
});

describe('bad input: admin POST endpoints answer a clean 400 naming the field', () => {
  for (const e of admin) {
    describe(e.name, () => {
      test('broken bodies (malformed JSON, empty, non-object)', () => runCases(e, bodyShapeCases()));
      test('wrong Content-Type and oversized bodies', () => runCases(e, contentTypeCases(e)));
      test('wrong types for every field', () => runCases(e, typeCases(e)));
      test('missing required fields', () => runCases(e, missingCases(e)));
      test('extra properties at every nesting level', () => runCases(e, extraCases(e)));
      if (e.amounts.length > 0) test('huge, negative and fractional amounts, unknown units', () => runCases(e, amountCases(e)));
      test('endpoint-specific formats, enums and ranges', () => runCases(e, adminExtra[e.name]!()));
    });
  }
});

describe('bad input: streamed bodies', () => {
  test('a chunked body over 64 KiB without Content-Length is a clean 400 on POST /v1/reservations', async () => {
    const big = JSON.stringify({ ...runtime[0]!.template, metadata: { blob: 'y'.repeat(100_000) } });
    const bytes = new TextEncoder().encode(big);
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.slice(i, i + 8192));
        c.close();
      },
    });
    const r = await fetch(`${srv.url}/v1/reservations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-cycles-api-key': apiKey },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    const textBody = await r.text();
    const res: Res = { status: r.status, text: textBody, body: JSON.parse(textBody), headers: r.headers };
    assert.equal(problem(res, { label: 'chunked', field: /body/i }), undefined);
  });
});

describe('reservation_id path parameter boundaries (spec: string, 1-128 characters)', () => {
  // Ids of 101-128 characters are valid by the spec: an unknown one is 404 NOT_FOUND, with the
  // ErrorResponse shape and the mandatory X-Cycles-Trace-Id / X-Request-Id headers.
  for (const n of [100, 101, 128]) {
    for (const [method, suffix, body] of [
      ['GET', '', undefined],
      ['POST', '/commit', { idempotency_key: 'k', actual: tokens(1) }],
      ['POST', '/release', { idempotency_key: 'k' }],
      ['POST', '/extend', { idempotency_key: 'k', extend_by_ms: 1000 }],
    ] as const) {
      test(`${method} /v1/reservations/{${n} characters}${suffix} is 404 NOT_FOUND`, async () => {
        const res = await srv.client.request(method, `/v1/reservations/${'r'.repeat(n)}${suffix}`, { apiKey, body });
        assert.equal(res.status, 404, show(res));
        assert.equal(res.body?.error, 'NOT_FOUND', show(res));
        assert.match(res.headers.get('x-cycles-trace-id') ?? '', /^[0-9a-f]{32}$/, 'X-Cycles-Trace-Id is mandatory on every response');
        assert.equal(res.body?.trace_id, res.headers.get('x-cycles-trace-id'));
        assert.ok(res.headers.get('x-request-id'), 'X-Request-Id is declared on every response');
      });
    }
  }
});

describe('pathological but schema-valid input never causes a 500', () => {
  // Free-form metadata may nest; a body well under the 64 KiB limit must not crash the server.
  const nested = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  const arrays = (depth: number) => '{"a":' + '['.repeat(depth) + '1' + ']'.repeat(depth) + '}';
  for (const [label, make] of [
    ['objects nested 3000 deep (15 KiB)', () => nested(3000)],
    ['arrays nested 6000 deep (12 KiB)', () => arrays(6000)],
  ] as const) {
    test(`decide with metadata of ${label}`, async () => {
      const body = JSON.stringify({ ...runtime[1]!.template, idempotency_key: idem('deep') }).replace('{"note":"x"}', make());
      assert.ok(body.length < 64 * 1024);
      const res = await srv.client.request('POST', '/v1/decide', { apiKey, raw: body });
      assert.ok(res.status < 500, `a valid-but-deep body must not be a server error (accept 200, or 400 naming metadata): ${show(res)}`);
      assert.ok(!STACK.test(res.text), `stack frame in body: ${show(res)}`);
      if (res.status === 400) assert.match(res.body?.message ?? '', /metadata|depth|nest/i);
    });
    test(`dry-run reserve with metadata of ${label}`, async () => {
      const body = JSON.stringify({ ...runtime[0]!.template, idempotency_key: idem('deep'), dry_run: true }).replace('{"note":"x"}', make());
      const res = await srv.client.request('POST', '/v1/reservations', { apiKey, raw: body });
      assert.ok(res.status < 500, `a valid-but-deep body must not be a server error (accept 200, or 400 naming metadata): ${show(res)}`);
      assert.ok(!STACK.test(res.text), `stack frame in body: ${show(res)}`);
    });
  }
});

describe('bad input changed nothing', () => {
  test('balances, reservations and admin listings are byte-identical after every bad request above', async () => {
    const now = await state();
    for (const k of Object.keys(initial) as Array<keyof State>) {
      assert.equal(now[k], initial[k], `${k} changed:\n  before: ${initial[k]}\n  after:  ${now[k]}`);
    }
  });

  test('control: every valid template succeeds with the idempotency keys the bad requests used', async () => {
    const failures: string[] = [];
    const expectOk = async (e: Endpoint, path = e.path) => {
      const res = await send(e, { label: 'control', body: e.template, path, field: '' });
      if (res.status !== e.ok) failures.push(`${e.name}: expected ${e.ok}, got ${show(res)}`);
      return res;
    };
    for (const e of runtime.slice(0, 3)) await expectOk(e);
    // extend, then commit, the held reservation; release a fresh one (release keys are per tenant and endpoint).
    await expectOk(runtime[5]!);
    await expectOk(runtime[3]!);
    const fresh = await srv.client.post('/v1/reservations', { idempotency_key: idem('ctl'), subject: subject(), action: action(), estimate: tokens(1) }, { apiKey });
    assert.equal(fresh.status, 200, show(fresh));
    await expectOk(runtime[4]!, `/v1/reservations/${fresh.body.reservation_id}/release`);
    for (const e of admin) await expectOk(e);
    assert.deepEqual(failures, []);
  });
});
