/**
 * Build step (`npm run build`, after tsc): starts the server once with every route (embedded
 * store in a temporary directory, loopback, any free port), collects the standalone code of each
 * route-schema validator as Fastify compiles it, and writes dist/http/validators.precompiled.cjs,
 * which every later start loads instead of compiling (http/validators.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collectingValidatorFactory, PRECOMPILED_FILE, renderPrecompiled } from '../http/validators.js';
import { startServer } from '../server.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cycles-precompile-'));
const collected = new Map<string, string>();
try {
  const server = await startServer({
    env: { CYCLES_DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', CYCLES_SQLITE_THREAD: 'false', CYCLES_SQLITE_CHECKPOINT_MS: '0', ADMIN_API_KEY: 'precompile-admin-key-0123456789' },
    logger: false,
    buildValidator: collectingValidatorFactory((key, code) => collected.set(key, code)),
  });
  await server.close();
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
const file = new URL(join('..', 'http', PRECOMPILED_FILE), import.meta.url);
writeFileSync(file, renderPrecompiled(collected));
console.log(`precompiled ${collected.size} route-schema validators into ${file.pathname}`);
