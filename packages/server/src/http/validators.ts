/**
 * Route-schema validators compiled at build time. Compiling every route's schemas with Ajv took
 * about a fifth of a start; `npm run build` now generates their code once
 * (tools/precompile-validators.ts) into `validators.precompiled.cjs` next to this module, and a
 * start loads that file instead.
 *
 * A precompiled validator is used only for the exact schema it was generated from: each is
 * keyed by method, URL, part (body, querystring, params, headers) and a hash of the schema as
 * Fastify hands it to the compiler. Any other schema (a route changed since the build, the
 * sources run without building, as the tests do) is compiled at start as before, by the same
 * compiler Fastify uses by default, with the same options.
 *
 * Ajv and the compilers are loaded only when something has to be compiled: a start served
 * entirely from the file never loads them (loading them was about a tenth of a start).
 * Fastify lower-cases the keys of header schemas only for its own compiler; the server has no
 * header schemas, and one added later is refused at start rather than silently mismatched.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type * as AjvCompilerModule from '@fastify/ajv-compiler';
import type * as SerializerCompilerModule from '@fastify/fast-json-stringify-compiler';
import type * as AjvModule from 'ajv';
import type { ValidateFunction } from 'ajv';

const require = createRequire(import.meta.url);
const ajvCompiler = () => require('@fastify/ajv-compiler') as typeof AjvCompilerModule;

/** The generated file, next to this module in dist/http. */
export const PRECOMPILED_FILE = './validators.precompiled.cjs';

export interface RouteSchema {
  schema?: unknown;
  method: string;
  url: string;
  httpPart?: string;
}

type Compile = (route: RouteSchema) => unknown;
/** Fastify's `schemaController.compilersFactory.buildValidator`. */
export type ValidatorFactory = (externalSchemas: never, options: never) => Compile;
export type Precompiled = Readonly<Record<string, ValidateFunction>>;

/** Counts, for diagnostics and tests: how many route schemas each path served. */
export interface ValidatorStats {
  precompiled: number;
  compiled: number;
}

/** What identifies a generated validator: the route, the part and the schema's exact content. */
export function validatorKey(route: RouteSchema): string {
  const digest = createHash('sha256').update(JSON.stringify(route.schema ?? null)).digest('hex').slice(0, 32);
  return `${route.method} ${route.url} ${route.httpPart ?? ''} ${digest}`;
}

/** The generated file's validators, or undefined where there is none (sources run directly). */
export function loadPrecompiled(file: string | URL = new URL(PRECOMPILED_FILE, import.meta.url)): Precompiled | undefined {
  try {
    return require(file instanceof URL ? fileURLToPath(file) : file) as Precompiled;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw e;
  }
}

/**
 * Serves each route schema from `precompiled` when a validator for exactly that schema is there,
 * and compiles it otherwise (creating the Ajv instance only if one is needed).
 */
export function validatorFactory(precompiled: Precompiled | undefined, stats?: ValidatorStats): ValidatorFactory {
  let pool: AjvCompilerModule.BuildCompilerFromPool | undefined;
  return (externalSchemas, options) => {
    let compile: Compile | undefined;
    return (route) => {
      if (route.httpPart === 'headers') throw new Error(`header schemas are not supported (${route.method} ${route.url}); check headers in the handler`);
      // No generated file (sources run directly): nothing to look up, so no schema to hash.
      const found = precompiled ? precompiled[validatorKey(route)] : undefined;
      if (found) {
        if (stats) stats.precompiled++;
        return found;
      }
      if (stats) stats.compiled++;
      pool ??= ajvCompiler().AjvCompiler();
      compile ??= pool(externalSchemas, options) as unknown as Compile;
      return compile(route);
    };
  };
}

/**
 * Compiles every route schema as usual and also hands its standalone code to `collect` (the
 * build step). Ajv emits standalone code only with `code.source`; formats (date-time) are then
 * referenced from ajv-formats, which Fastify's compiler adds.
 */
export function collectingValidatorFactory(collect: (key: string, code: string) => void): ValidatorFactory {
  const { _ } = require('ajv') as typeof AjvModule;
  const standalone = ajvCompiler().StandaloneValidator({ readMode: false, storeFunction: (route, code) => collect(validatorKey(route as RouteSchema), code) });
  return (externalSchemas, options) => {
    const opts = options as unknown as { customOptions?: { code?: object } };
    const customOptions = { ...opts.customOptions, code: { ...opts.customOptions?.code, source: true, formats: _`require("ajv-formats/dist/formats").fullFormats` } };
    return standalone(externalSchemas, { ...opts, customOptions } as never) as unknown as Compile;
  };
}

/** Fastify's `buildSerializer`. No route has a response schema, so fast-json-stringify's compiler
 * loads only if one ever does (Fastify otherwise loads it at start). */
export function serializerFactory(): (externalSchemas: never, options: never) => Compile {
  return (externalSchemas, options) => {
    let compile: Compile | undefined;
    return (route) => {
      compile ??= (require('@fastify/fast-json-stringify-compiler') as typeof SerializerCompilerModule).SerializerSelector()(externalSchemas, options) as unknown as Compile;
      return compile(route);
    };
  };
}

/**
 * The generated file: one CommonJS module whose export maps each key to its validator. Each
 * validator's code is Ajv's standalone module, evaluated in a scope of its own.
 */
export function renderPrecompiled(validators: ReadonlyMap<string, string>): string {
  const lines = [
    "'use strict';",
    '// Generated by `npm run build` (tools/precompile-validators.js): route-schema validators. Do not edit.',
    'const validators = Object.create(null);',
  ];
  for (const key of [...validators.keys()].sort()) {
    lines.push(`validators[${JSON.stringify(key)}] = (() => {`, 'const module = { exports: {} };', validators.get(key)!, 'return module.exports;', '})();');
  }
  lines.push('module.exports = validators;', '');
  return lines.join('\n');
}
