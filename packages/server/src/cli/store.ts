/**
 * `cycles migrate` and `cycles store check`: operating the configured store without starting
 * the server. Both read the same configuration as `cycles serve` (environment, --config file).
 *
 *   cycles migrate        applies pending schema migrations (PostgreSQL; SQLite creates its
 *                         schema when it opens; Redis has none) and says what it did
 *   cycles store check    connects, pings and reports the schema state; exits 1 on a problem
 */
import type { Command } from 'commander';
import { CONFIG_FILE_VAR, configFromEnv, type Config } from '../config.js';
import { openStore } from '../server.js';

/** The backends' modules, loaded only by the commands that need them (as the server does). */
const postgres = () => import('../store/postgres/store.js').then((m) => m.PostgresStore);

/** postgres://user:secret@host/db -> postgres://user:****@host/db */
export function maskUrl(url: string | undefined): string {
  if (!url) return '(unset)';
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

function configFor(opts: { config?: string }): Config {
  const env = { ...process.env };
  if (opts.config !== undefined) env[CONFIG_FILE_VAR] = opts.config;
  return configFromEnv(env);
}

function describeStore(c: Config): string {
  switch (c.store) {
    case 'postgres':
      return `postgres ${maskUrl(c.databaseUrl)}${c.pgSchema ? ` (schema ${c.pgSchema})` : ''}`;
    case 'sqlite':
      return `sqlite ${c.dataDir}/cycles.db`;
    case 'redis':
      return c.redisClusterUrls.length > 0 ? `redis cluster ${c.redisClusterUrls.map(maskUrl).join(',')}` : `redis ${maskUrl(c.redisUrl)}`;
    default:
      return c.store;
  }
}

export async function migrateCommand(opts: { config?: string }): Promise<void> {
  const c = configFor(opts);
  console.log(`store: ${describeStore(c)}`);
  if (c.store === 'postgres') {
    const r = await (await postgres()).migrate({ url: c.databaseUrl!, schema: c.pgSchema });
    for (const m of r.ran) console.log(`applied migration ${m.version}: ${m.name}`);
    console.log(r.ran.length === 0 ? `schema already at version ${r.required}; nothing to do` : `schema now at version ${r.required}`);
    if (r.unknown.length > 0) console.log(`note: the database also has versions ${r.unknown.join(', ')}, written by a newer server`);
    return;
  }
  // The other stores bring their schema up when they open; opening once is the migration.
  const { store } = await openStore(c);
  try {
    await store.ping();
  } finally {
    await store.close();
  }
  console.log(c.store === 'sqlite' ? 'SQLite schema is created and upgraded when the store opens: done' : `${c.store} needs no migration`);
}

export async function storeCheckCommand(opts: { config?: string }): Promise<void> {
  const c = configFor(opts);
  console.log(`store: ${describeStore(c)}`);
  let ok = true;
  if (c.store === 'postgres') {
    // Read-only: a check never migrates.
    const started = Date.now();
    try {
      const s = await (await postgres()).status({ url: c.databaseUrl!, schema: c.pgSchema });
      console.log(`reachable: yes (${Date.now() - started} ms)`);
      const at = s.applied.at(-1) ?? 0;
      if (s.pending.length > 0) {
        ok = false;
        console.log(`schema: version ${at}, this server needs ${s.required}: run \`cycles migrate\` (pending: ${s.pending.map((m) => m.version).join(', ')})`);
      } else {
        console.log(`schema: version ${at} (up to date)`);
      }
      if (s.unknown.length > 0) console.log(`schema: also has versions ${s.unknown.join(', ')} from a newer server`);
    } catch (e) {
      ok = false;
      console.log(`reachable: no (${(e as Error).message})`);
    }
  } else if (c.store === 'redis') {
    const { store } = await openStore(c);
    try {
      const [{ RedisStore }, { checkRedis }] = await Promise.all([import('../store/redis/store.js'), import('../store/redis/check.js')]);
      if (!(store instanceof RedisStore)) throw new Error('CYCLES_STORE=redis opened another kind of store');
      const report = await checkRedis(store);
      for (const line of report.lines) console.log(line);
      ok = report.ok;
    } catch (e) {
      ok = false;
      console.log(`reachable: no (${(e as Error).message})`);
    } finally {
      await store.close().catch(() => undefined);
    }
  } else {
    const started = Date.now();
    const { store } = await openStore(c);
    try {
      await store.ping();
      console.log(`reachable: yes (${Date.now() - started} ms)`);
    } catch (e) {
      ok = false;
      console.log(`reachable: no (${(e as Error).message})`);
    } finally {
      await store.close().catch(() => undefined);
    }
  }
  console.log(ok ? 'ok' : 'problems found');
  if (!ok) process.exitCode = 1;
}

export function registerStoreCommands(program: Command): void {
  program
    .command('migrate')
    .description('apply pending schema migrations to the configured store (CYCLES_STORE, DATABASE_URL, CYCLES_PG_SCHEMA)')
    .option('--config <file>', `JSON file of settings (env ${CONFIG_FILE_VAR})`)
    .action(migrateCommand);
  const store = program.command('store').description('inspect the configured store');
  store
    .command('check')
    .description('connect to the configured store and report reachability and schema state; exits 1 on a problem')
    .option('--config <file>', `JSON file of settings (env ${CONFIG_FILE_VAR})`)
    .action(storeCheckCommand);
}
