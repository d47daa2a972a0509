/**
 * Configuration: defaults < optional JSON file < environment; every problem listed at once;
 * `cycles config` prints the effective configuration with secrets masked, and `cycles serve`
 * refuses to start on an invalid configuration (exit 2) naming every problem.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, configFromEnv, DEFAULTS, describeConfig, MASK, resolveConfig } from '../../src/config.js';
import { PACKAGE_DIR, tempDir } from './support.js';

const cli = (args: string[], env: Record<string, string>) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(PACKAGE_DIR, 'src/cli/main.ts'), ...args], {
    cwd: PACKAGE_DIR,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });

describe('resolution', () => {
  test('defaults, then file, then environment; sources are remembered', () => {
    const d = tempDir();
    try {
      const file = path.join(d.dir, 'cycles.json');
      writeFileSync(file, JSON.stringify({ PORT: 9000, LOG_LEVEL: 'debug', DASHBOARD_CORS_ORIGIN: ['https://a.example', 'https://b.example'], CYCLES_RATE_LIMIT_PER_KEY: 5 }));
      const r = resolveConfig({ CYCLES_CONFIG_FILE: file, LOG_LEVEL: 'warn' });
      assert.equal(r.config.port, 9000);
      assert.equal(r.sources.port, 'file');
      assert.equal(r.config.logLevel, 'warn');
      assert.equal(r.sources.logLevel, 'env');
      assert.deepEqual(r.config.corsOrigins, ['https://a.example', 'https://b.example']);
      assert.equal(r.config.rateLimitPerKey, 5);
      assert.equal(r.config.host, DEFAULTS.host);
      assert.equal(resolveConfig({ CYCLES_SQLITE_CACHE_MB: '256' }).config.sqliteCacheMb, 256);
      assert.equal(DEFAULTS.sqliteCacheMb, 8);
      // Unset: the store picks SQLite's 1,000 pages, or 10,000 behind the checkpointer thread.
      assert.equal(DEFAULTS.sqliteCheckpointPages, undefined);
      assert.equal(DEFAULTS.sqliteCheckpointMs, 50);
      assert.equal(resolveConfig({ CYCLES_SQLITE_CHECKPOINT_MS: '0' }).config.sqliteCheckpointMs, 0);
      assert.equal(resolveConfig({ CYCLES_SQLITE_CHECKPOINT_MS: '250' }).config.sqliteCheckpointMs, 250);
      assert.throws(() => resolveConfig({ CYCLES_SQLITE_CHECKPOINT_MS: '-5' }), /CYCLES_SQLITE_CHECKPOINT_MS/);
      assert.throws(() => resolveConfig({ CYCLES_SQLITE_CHECKPOINT_MS: '60001' }), /CYCLES_SQLITE_CHECKPOINT_MS/);
      assert.equal(resolveConfig({ CYCLES_SQLITE_CHECKPOINT_PAGES: '40000' }).config.sqliteCheckpointPages, 40_000);
      assert.throws(() => resolveConfig({ CYCLES_SQLITE_CHECKPOINT_PAGES: '10' }), /CYCLES_SQLITE_CHECKPOINT_PAGES/);
      assert.equal(DEFAULTS.sqliteThread, true);
      assert.equal(resolveConfig({ CYCLES_SQLITE_THREAD: 'false' }).config.sqliteThread, false);
      assert.equal(DEFAULTS.redisReplyTimeoutMs, 10_000);
      assert.equal(resolveConfig({ CYCLES_REDIS_REPLY_TIMEOUT_MS: '0' }).config.redisReplyTimeoutMs, 0);
      assert.equal(resolveConfig({ CYCLES_REDIS_REPLY_TIMEOUT_MS: '2500' }).config.redisReplyTimeoutMs, 2500);
      assert.throws(() => resolveConfig({ CYCLES_REDIS_REPLY_TIMEOUT_MS: '-1' }), /CYCLES_REDIS_REPLY_TIMEOUT_MS/);
      assert.throws(() => resolveConfig({ CYCLES_REDIS_REPLY_TIMEOUT_MS: '600001' }), /CYCLES_REDIS_REPLY_TIMEOUT_MS/);
      assert.equal(r.sources.host, 'default');
    } finally {
      d.remove();
    }
  });

  test('every problem is listed at once, from the environment and the file', () => {
    const d = tempDir();
    try {
      const file = path.join(d.dir, 'cycles.json');
      writeFileSync(file, JSON.stringify({ CYCLES_RATE_LIMIT_PER_IP: -1, NOT_A_SETTING: 1 }));
      assert.throws(
        () => configFromEnv({ CYCLES_CONFIG_FILE: file, CYCLES_SQLITE_CACHE_MB: '0', PORT: 'eighty', LOG_LEVEL: 'loud', ADMIN_API_KEY: 'short', METRICS_AUTH: 'maybe', DASHBOARD_CORS_ORIGIN: 'not a url', CYCLES_TRUST_PROXY: 'x y' }),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError);
          const text = e.problems.join('\n');
          for (const name of ['CYCLES_SQLITE_CACHE_MB', 'PORT', 'LOG_LEVEL', 'ADMIN_API_KEY', 'METRICS_AUTH', 'DASHBOARD_CORS_ORIGIN', 'CYCLES_TRUST_PROXY', 'CYCLES_RATE_LIMIT_PER_IP', 'NOT_A_SETTING']) {
            assert.ok(text.includes(name), `problem list names ${name}:\n${text}`);
          }
          assert.ok(e.problems.length >= 9);
          return true;
        },
      );
      assert.throws(() => configFromEnv({ CYCLES_CONFIG_FILE: path.join(d.dir, 'missing.json') }), /cannot read/);
    } finally {
      d.remove();
    }
  });

  test('secrets are masked in the description', () => {
    const lines = describeConfig(resolveConfig({ ADMIN_API_KEY: 'super-secret-admin-key-123', CYCLES_KEY_PEPPER: 'pepper-value-xyz' }));
    const text = lines.join('\n');
    assert.ok(!text.includes('super-secret-admin-key-123'));
    assert.ok(!text.includes('pepper-value-xyz'));
    assert.ok(text.includes(`ADMIN_API_KEY=${MASK}  # env`));
    assert.ok(text.includes('CYCLES_RATE_LIMIT_PER_IP=120000  # default'));
  });
});

describe('command line', () => {
  test('`cycles config` prints the effective configuration with secrets masked', () => {
    const d = tempDir();
    try {
      const file = path.join(d.dir, 'cycles.json');
      writeFileSync(file, JSON.stringify({ CYCLES_KEY_PEPPER: 'file-pepper-secret', PORT: 7000 }));
      const r = cli(['config', '--config', file], { ADMIN_API_KEY: 'cli-admin-secret-0123456789', LOG_LEVEL: 'debug' });
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.includes('PORT=7000  # file'), r.stdout);
      assert.ok(r.stdout.includes('LOG_LEVEL=debug  # env'));
      assert.ok(r.stdout.includes(`ADMIN_API_KEY=${MASK}`));
      assert.ok(r.stdout.includes(`CYCLES_KEY_PEPPER=${MASK}  # file`));
      assert.ok(!r.stdout.includes('cli-admin-secret') && !r.stdout.includes('file-pepper-secret'));
    } finally {
      d.remove();
    }
  });

  test('`cycles serve` and `cycles config` exit 2 listing every problem', () => {
    for (const cmd of [['serve'], ['config']]) {
      const r = cli(cmd, { PORT: '99999', LOG_LEVEL: 'chatty', CYCLES_REQUEST_TIMEOUT_MS: '5' });
      assert.equal(r.status, 2, `${cmd[0]}: ${r.stdout}${r.stderr}`);
      for (const name of ['PORT', 'LOG_LEVEL', 'CYCLES_REQUEST_TIMEOUT_MS']) assert.ok(r.stderr.includes(name), r.stderr);
    }
  });
});
