/**
 * Reruns whole suites against another backend inside one test file: each suite file is
 * imported inside its own describe() (so its before/after hooks and its server stay scoped to
 * it) after CYCLES_TEST_STORE is set, which makes every server the harnesses start use that
 * backend. When the backend's URL variable is unset, this says so loudly and registers a
 * skipped test instead.
 */
import { describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BACKEND_URL_VAR, type BackendKind } from './backend.js';

const TEST_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The suite files of these test/ subdirectories, sorted. */
export function suiteFiles(dirs: readonly string[]): string[] {
  return dirs.flatMap((d) =>
    fs
      .readdirSync(path.join(TEST_DIR, d))
      .filter((f) => f.endsWith('.test.ts'))
      .sort()
      .map((f) => path.join(TEST_DIR, d, f)),
  );
}

export function rerunSuites(kind: Exclude<BackendKind, 'sqlite'>, dirs: readonly string[], exclude: readonly string[] = []): void {
  const urlVar = BACKEND_URL_VAR[kind];
  if (!process.env[urlVar]) {
    const line = `*** SKIPPED: the ${kind} backend suites (${dirs.join(', ')}) did not run: ${urlVar} is not set (.ci/run sets it) ***`;
    console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
    test(`${kind} backend: ${dirs.join(', ')} suites`, { skip: `${urlVar} is not set` }, () => undefined);
    return;
  }
  process.env.CYCLES_TEST_STORE = kind;
  for (const file of suiteFiles(dirs)) {
    const rel = path.relative(TEST_DIR, file);
    if (exclude.includes(rel)) continue;
    describe(`[${kind}] ${rel}`, async () => {
      await import(pathToFileURL(file).href);
    });
  }
}
