#!/usr/bin/env node
import { Command } from 'commander';
import { CONFIG_FILE_VAR, ConfigError } from '../config.js';
import { printConfig } from './config.js';
import { registerAdminCommand } from './admin.js';
import { AdminCliError } from './admin-client.js';
import { runQuickstart } from './quickstart.js';
import { serve } from './serve.js';
import { registerStoreCommands } from './store.js';

const program = new Command();
program.name('cycles').description('Cycles budget authority for AI agents');

program
  .command('serve')
  .description('run the server (embedded SQLite store by default)')
  .option('-p, --port <port>', 'port to listen on (env PORT, default 7878)')
  .option('--host <host>', 'interface to bind (env HOST, default 0.0.0.0)')
  .option('--data-dir <dir>', 'directory of the embedded store (env CYCLES_DATA_DIR, default ./data)')
  .option('--config <file>', `JSON file of settings (env ${CONFIG_FILE_VAR}); the environment overrides it`)
  .option('--role <role>', 'all (API and webhook dispatcher), api, or dispatcher (env CYCLES_ROLE, default all)')
  .action(async (opts: { port?: string; host?: string; dataDir?: string; config?: string; role?: string }) => {
    const env = { ...process.env };
    if (opts.config !== undefined) env[CONFIG_FILE_VAR] = opts.config;
    if (opts.port !== undefined) env.PORT = opts.port;
    if (opts.host !== undefined) env.HOST = opts.host;
    if (opts.dataDir !== undefined) env.CYCLES_DATA_DIR = opts.dataDir;
    if (opts.role !== undefined) env.CYCLES_ROLE = opts.role;
    await serve(env);
  });

program
  .command('config')
  .description('print the effective configuration (defaults, config file, environment) with secrets masked; exits 2 when invalid')
  .option('--config <file>', `JSON file of settings (env ${CONFIG_FILE_VAR})`)
  .action((opts: { config?: string }) => {
    const env = { ...process.env };
    if (opts.config !== undefined) env[CONFIG_FILE_VAR] = opts.config;
    printConfig(env);
  });

program
  .command('quickstart')
  .description('against a running server: create a demo tenant, API key and budget, and run one reserve -> commit')
  .option('--url <url>', 'server URL', process.env.CYCLES_URL ?? 'http://127.0.0.1:7878')
  .option('--admin-key <key>', 'admin API key (env ADMIN_API_KEY)', process.env.ADMIN_API_KEY)
  .option('--tenant <id>', 'demo tenant id', 'demo')
  .action(async (opts: { url: string; adminKey?: string; tenant: string }) => {
    if (!opts.adminKey) {
      console.error('quickstart needs the admin key: pass --admin-key or set ADMIN_API_KEY');
      process.exitCode = 2;
      return;
    }
    await runQuickstart({ url: opts.url.replace(/\/$/, ''), adminKey: opts.adminKey, tenant: opts.tenant });
  });

registerAdminCommand(program);
registerStoreCommands(program);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof AdminCliError) {
    console.error(`error: ${err.message}`);
    process.exit(err.exitCode);
  }
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
