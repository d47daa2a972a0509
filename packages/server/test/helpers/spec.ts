/**
 * Response validation against the Cycles OpenAPI 3.1 documents.
 *
 * The spec files are never copied into the repository: they are read from
 * <repo>/../shared/spec at test time. Runtime operations come from
 * cycles-protocol-v0.yaml (normative); everything the runtime document does not
 * declare (/v1/admin/*, /v1/auth/*, GET /v1/events, /v1/webhooks*) comes from the
 * governance document.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import Ajv2020Module from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv and ajv-formats are CommonJS packages; under NodeNext their default export may be wrapped.
type AjvCtor = typeof Ajv2020Module.default;
const Ajv2020: AjvCtor =
  (Ajv2020Module as unknown as { default?: AjvCtor }).default ?? (Ajv2020Module as unknown as AjvCtor);
type AddFormats = typeof addFormatsModule.default;
const addFormats: AddFormats =
  (addFormatsModule as unknown as { default?: AddFormats }).default ?? (addFormatsModule as unknown as AddFormats);

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** packages/server/test/helpers -> repo root is four levels up. */
export const REPO_ROOT = path.resolve(HERE, '../../../..');
export const SPEC_DIR = path.resolve(REPO_ROOT, '../shared/spec');
export const RUNTIME_SPEC_FILE = path.join(SPEC_DIR, 'cycles-protocol-v0.yaml');
export const GOVERNANCE_SPEC_FILE = path.join(SPEC_DIR, 'cycles-governance-admin-v0.1.25.yaml');

type JsonObject = Record<string, unknown>;

interface SpecDocument {
  name: 'runtime' | 'governance';
  id: string;
  raw: JsonObject;
  operations: OperationEntry[];
}

interface OperationEntry {
  doc: SpecDocument;
  method: string;
  template: string;
  operationId: string;
  regex: RegExp;
  /** Number of templated segments, used to prefer literal paths. */
  params: number;
  operation: JsonObject;
}

export interface ResolvedOperation {
  document: 'runtime' | 'governance';
  operationId: string;
  template: string;
  method: string;
}

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys whose value maps names to subschemas (so the map's own keys are not keywords). */
const NAME_MAP_KEYWORDS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);
/** OpenAPI-only keywords that are not JSON Schema 2020-12 (or are only annotations). */
const OPENAPI_ONLY_KEYWORDS = new Set(['example', 'discriminator', 'xml', 'externalDocs']);

/**
 * Deep-copies a schema, dropping OpenAPI-only keywords and x-* extensions and rewriting
 * local component refs (#/components/schemas/X) to the absolute $id of that registered component.
 */
function normalizeSchema(node: unknown, docId: string, isNameMap = false): unknown {
  if (Array.isArray(node)) return node.map((n) => normalizeSchema(n, docId));
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (isNameMap) {
      out[key] = normalizeSchema(value, docId);
      continue;
    }
    if (key.startsWith('x-') || OPENAPI_ONLY_KEYWORDS.has(key)) continue;
    if (key === '$ref' && typeof value === 'string') {
      const m = /^#\/components\/schemas\/([^/]+)$/.exec(value);
      if (!m) throw new Error(`unsupported $ref in schema: ${value}`);
      out[key] = schemaId(docId, m[1]!);
      continue;
    }
    // `enum`/`const`/`default`/`required` are data, not schemas.
    if (key === 'enum' || key === 'const' || key === 'default' || key === 'required' || key === 'examples') {
      out[key] = value;
      continue;
    }
    out[key] = normalizeSchema(value, docId, NAME_MAP_KEYWORDS.has(key));
  }
  return out;
}

/** Each component schema is its own resource, so Ajv compiles only the graph a response uses. */
const schemaId = (docId: string, name: string): string => `${docId}/schemas/${encodeURIComponent(name)}`;

function templateToRegex(template: string): { regex: RegExp; params: number } {
  let params = 0;
  const body = template
    .split('/')
    .map((seg) => {
      if (/^\{[^}]+\}$/.test(seg)) {
        params += 1;
        return '([^/]+)';
      }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { regex: new RegExp(`^${body}$`), params };
}

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/**
 * Parses a YAML spec. The `yaml` package needs ~1 s for the governance document and every test
 * file runs in its own process, so the parsed JSON is cached in the OS temp dir, keyed by the
 * SHA-256 of the YAML text (a changed spec is simply a cache miss).
 */
function parseSpecFile(file: string): JsonObject {
  const text = fs.readFileSync(file, 'utf8');
  const digest = crypto.createHash('sha256').update(text).digest('hex');
  const cacheFile = path.join(os.tmpdir(), 'cycles-spec-cache', `${path.basename(file)}.${digest}.json`);
  try {
    return JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as JsonObject;
  } catch {
    // cache miss or unreadable cache: parse below
  }
  const parsed = parseYaml(text) as JsonObject;
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(parsed));
    fs.renameSync(tmp, cacheFile);
  } catch {
    // caching is best-effort
  }
  return parsed;
}

function loadDocument(file: string, name: 'runtime' | 'governance'): SpecDocument {
  const raw = parseSpecFile(file);
  const id = `https://spec.cycles.test/${name}.json`;
  const doc: SpecDocument = { name, id, raw, operations: [] };
  const paths = (raw.paths ?? {}) as Record<string, JsonObject>;
  for (const [template, item] of Object.entries(paths)) {
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (!isObject(operation)) continue;
      const { regex, params } = templateToRegex(template);
      doc.operations.push({
        doc,
        method: method.toUpperCase(),
        template,
        operationId: String(operation.operationId ?? `${method} ${template}`),
        regex,
        params,
        operation,
      });
    }
  }
  // Literal paths win over templated ones (e.g. /v1/admin/tenants/bulk-action).
  doc.operations.sort((a, b) => a.params - b.params);
  return doc;
}

class SpecValidator {
  readonly runtime: SpecDocument;
  readonly governance: SpecDocument;
  private readonly ajv: InstanceType<AjvCtor>;
  private readonly cache = new Map<string, ValidateFunction>();

  constructor() {
    this.runtime = loadDocument(RUNTIME_SPEC_FILE, 'runtime');
    this.governance = loadDocument(GOVERNANCE_SPEC_FILE, 'governance');
    this.ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
    addFormats(this.ajv);
    this.ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
    this.ajv.addFormat('int32', {
      type: 'number',
      validate: (n: number) => Number.isInteger(n) && n >= -2147483648 && n <= 2147483647,
    });
    this.ajv.addFormat('double', { type: 'number', validate: (n: number) => Number.isFinite(n) });
    this.ajv.addFormat('float', { type: 'number', validate: (n: number) => Number.isFinite(n) });
    for (const doc of [this.runtime, this.governance]) {
      const components = (doc.raw.components ?? {}) as JsonObject;
      const schemas = (components.schemas ?? {}) as JsonObject;
      for (const [name, schema] of Object.entries(schemas)) {
        this.ajv.addSchema({ ...(normalizeSchema(schema, doc.id) as JsonObject), $id: schemaId(doc.id, name) });
      }
    }
  }

  /** Finds the operation for a concrete request path (query string ignored). */
  findOperation(method: string, concretePath: string): OperationEntry | undefined {
    const p = concretePath.split('?')[0]!.split('#')[0]!;
    const m = method.toUpperCase();
    for (const doc of [this.runtime, this.governance]) {
      const hit = doc.operations.find((op) => op.method === m && op.regex.test(p));
      if (hit) return hit;
    }
    return undefined;
  }

  /** Resolves #/components/responses/X (and similar) refs inside one document. */
  private deref(doc: SpecDocument, node: unknown): unknown {
    let cur = node;
    for (let i = 0; i < 10 && isObject(cur) && typeof cur.$ref === 'string'; i++) {
      const ref = cur.$ref;
      if (!ref.startsWith('#/')) throw new Error(`external $ref not supported: ${ref}`);
      let target: unknown = doc.raw;
      for (const part of ref.slice(2).split('/')) {
        target = isObject(target) ? target[part.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined;
      }
      if (target === undefined) throw new Error(`unresolvable $ref ${ref} in ${doc.name} spec`);
      cur = target;
    }
    return cur;
  }

  responseObject(op: OperationEntry, status: number): { key: string; response: JsonObject } | undefined {
    const responses = (op.operation.responses ?? {}) as JsonObject;
    const candidates = [String(status), `${String(status)[0]}XX`, `${String(status)[0]}xx`, 'default'];
    for (const key of candidates) {
      if (key in responses) {
        const response = this.deref(op.doc, responses[key]);
        if (isObject(response)) return { key, response };
      }
    }
    return undefined;
  }

  /**
   * Statuses the runtime document permits on every operation even where an operation does not list
   * them: ERROR SEMANTICS reserves 429 LIMIT_EXCEEDED for server-side throttling on any request.
   */
  private globalResponse(op: OperationEntry, status: number): { key: string; response: JsonObject } | undefined {
    if (status !== 429) return undefined;
    return {
      key: '429 (ERROR SEMANTICS)',
      response: { content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorResponse' } } } },
    };
  }

  private validatorFor(op: OperationEntry, key: string, schema: unknown): ValidateFunction {
    const cacheKey = `${op.doc.name} ${op.method} ${op.template} ${key}`;
    let fn = this.cache.get(cacheKey);
    if (!fn) {
      const normalized = normalizeSchema(this.deref(op.doc, schema) ?? schema, op.doc.id);
      fn = this.ajv.compile(normalized as JsonObject);
      this.cache.set(cacheKey, fn);
    }
    return fn;
  }

  validate(method: string, concretePath: string, status: number, body: unknown): string[] {
    const op = this.findOperation(method, concretePath);
    if (!op) return [`no operation declared in the spec for ${method.toUpperCase()} ${concretePath}`];
    const hit = this.responseObject(op, status) ?? this.globalResponse(op, status);
    if (!hit) {
      const declared = Object.keys((op.operation.responses ?? {}) as JsonObject).join(', ');
      return [`status ${status} is not declared for ${op.operationId} (${op.doc.name} spec); declared: ${declared}`];
    }
    const content = hit.response.content as JsonObject | undefined;
    if (!content || Object.keys(content).length === 0) {
      if (body !== undefined) return [`${op.operationId} ${hit.key} declares no body, but one was returned`];
      return [];
    }
    const media = (content['application/json'] ?? Object.values(content)[0]) as JsonObject | undefined;
    if (!media || media.schema === undefined) return [];
    if (body === undefined) return [`${op.operationId} ${hit.key} declares a JSON body, but none was returned`];
    const fn = this.validatorFor(op, hit.key, media.schema);
    if (fn(body)) return [];
    return (fn.errors ?? []).map((e) => formatAjvError(op.operationId, hit.key, e));
  }

  /** Validates a value against one named component schema of a document. */
  validateComponent(document: 'runtime' | 'governance', name: string, value: unknown): string[] {
    const doc = document === 'runtime' ? this.runtime : this.governance;
    const fn = this.ajv.getSchema(schemaId(doc.id, name));
    if (!fn) return [`no component schema ${name} in the ${document} spec`];
    if (fn(value)) return [];
    return (fn.errors ?? []).map((e) => formatAjvError(name, 'schema', e));
  }

  /** Declared response headers (name -> schema) for an operation/status, lower-cased names. */
  declaredHeaders(method: string, concretePath: string, status: number): Map<string, JsonObject> {
    const out = new Map<string, JsonObject>();
    const op = this.findOperation(method, concretePath);
    if (!op) return out;
    const hit = this.responseObject(op, status);
    const headers = hit?.response.headers;
    if (!isObject(headers)) return out;
    for (const [name, h] of Object.entries(headers)) {
      const header = this.deref(op.doc, h);
      if (isObject(header) && isObject(header.schema)) out.set(name.toLowerCase(), header.schema);
    }
    return out;
  }
}

function formatAjvError(operationId: string, key: string, e: ErrorObject): string {
  const where = e.instancePath || '(root)';
  let extra = '';
  if (e.keyword === 'additionalProperties') extra = ` (${String((e.params as { additionalProperty?: string }).additionalProperty)})`;
  else if (e.keyword === 'enum') extra = ` (allowed: ${JSON.stringify((e.params as { allowedValues?: unknown }).allowedValues)})`;
  return `${operationId} ${key}: ${where} ${e.message ?? e.keyword}${extra}`;
}

let singleton: SpecValidator | undefined;
export function spec(): SpecValidator {
  singleton ??= new SpecValidator();
  return singleton;
}

/** Which operation a (method, path) maps to, or undefined when the spec declares none. */
export function resolveOperation(method: string, concretePath: string): ResolvedOperation | undefined {
  const op = spec().findOperation(method, concretePath);
  return op && { document: op.doc.name, operationId: op.operationId, template: op.template, method: op.method };
}

/**
 * Validates a response body against the spec. Returns a list of problems (empty when valid).
 * Undeclared operations and undeclared statuses (with no `default`) are problems too.
 */
export function validateResponse(method: string, concretePath: string, status: number, body: unknown): string[] {
  return spec().validate(method, concretePath, status, body);
}

/** Validates a value against a named component schema (e.g. governance `Event`). */
export function validateComponent(document: 'runtime' | 'governance', name: string, value: unknown): string[] {
  return spec().validateComponent(document, name, value);
}

export type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function headerValue(headers: HeaderBag, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const bag = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(bag).find((k) => k.toLowerCase() === name.toLowerCase());
  const v = key === undefined ? undefined : bag[key];
  return Array.isArray(v) ? v.join(', ') : v;
}

export const TRACE_ID_RE = /^[0-9a-f]{32}$/;

/**
 * Headers every response must carry (every plane, every status): X-Cycles-Trace-Id (32 lowercase hex,
 * not all zeros) and X-Request-Id. Declared headers with integer schemas (Retry-After,
 * X-RateLimit-*) are checked for integer syntax when present.
 */
export function validateResponseHeaders(
  method: string,
  concretePath: string,
  status: number,
  headers: HeaderBag,
): string[] {
  const problems: string[] = [];
  const trace = headerValue(headers, 'x-cycles-trace-id');
  if (trace === undefined) problems.push('missing X-Cycles-Trace-Id response header');
  else if (!TRACE_ID_RE.test(trace) || /^0+$/.test(trace)) problems.push(`X-Cycles-Trace-Id "${trace}" does not match ^[0-9a-f]{32}$ (non-zero)`);
  const requestId = headerValue(headers, 'x-request-id');
  if (requestId === undefined || requestId === '') problems.push('missing X-Request-Id response header');
  if (status === 429) {
    for (const name of ['retry-after', 'x-ratelimit-reset']) {
      const v = headerValue(headers, name);
      if (v === undefined) problems.push(`429 responses must carry ${name}`);
      else if (!/^\d+$/.test(v)) problems.push(`${name} "${v}" must be a non-negative integer (delta-seconds / Unix seconds)`);
    }
  }
  for (const [name, schema] of spec().declaredHeaders(method, concretePath, status)) {
    const v = headerValue(headers, name);
    if (v === undefined || name === 'x-cycles-trace-id') continue;
    if (schema.type === 'integer') {
      const min = typeof schema.minimum === 'number' ? schema.minimum : undefined;
      if (!/^-?\d+$/.test(v) || (min !== undefined && Number(v) < min)) {
        problems.push(`header ${name}: "${v}" is not a valid integer${min !== undefined ? ` >= ${min}` : ''}`);
      }
    } else if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern).test(v)) {
      problems.push(`header ${name}: "${v}" does not match ${schema.pattern}`);
    }
  }
  return problems;
}

/** Throws an AssertionError listing every problem when the body (and optionally headers) are invalid. */
export function assertValid(
  method: string,
  concretePath: string,
  status: number,
  body: unknown,
  headers?: HeaderBag,
): void {
  const problems = validateResponse(method, concretePath, status, body);
  if (headers) problems.push(...validateResponseHeaders(method, concretePath, status, headers));
  if (problems.length > 0) {
    assert.fail(
      `Spec violation in response to ${method.toUpperCase()} ${concretePath} -> ${status}:\n  - ${problems.join('\n  - ')}\n` +
        `  body: ${truncate(JSON.stringify(body))}`,
    );
  }
}

export function truncate(s: string | undefined, n = 1500): string {
  if (s === undefined) return '(none)';
  return s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s;
}
