/**
 * A private PostgreSQL instance (initdb into a temp dir, random port, trust auth) crashed with
 * `pg_ctl stop -m immediate` (no checkpoint: the restart runs crash recovery) under concurrent
 * reserve/commit/release load and started again on the same port and data directory, with the
 * Cycles server left running: 503s while it is down, recovery by itself, nothing acknowledged
 * lost, the ledger exact (restart-load.ts says exactly what is checked). Needs the PostgreSQL
 * server binaries under /usr/lib/postgresql/<version>/bin; it never touches the shared instance
 * of the other suites.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, removeDir, tempDir } from '../support/server.js';
import { storeRestartUnderLoad } from './restart-load.js';

const NAME = 'PostgreSQL restarted under concurrent load: 503 while down, recovery without a server restart, nothing acknowledged lost, exact ledger';

/** The newest installed PostgreSQL server's bin directory. */
function findBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  return versions.map((v) => path.join(root, v, 'bin')).find((d) => fs.existsSync(path.join(d, 'initdb')) && fs.existsSync(path.join(d, 'pg_ctl')));
}

const asRoot = process.getuid?.() === 0;
/** PostgreSQL refuses to run as root: there, initdb and pg_ctl run as the postgres user. */
const pgUser = asRoot ? spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }) : undefined;
const bin = findBin();
const missing = !bin
  ? 'no PostgreSQL server binaries under /usr/lib/postgresql/*/bin'
  : asRoot && (pgUser!.status !== 0 || spawnSync('runuser', ['--help']).status !== 0)
    ? 'running as root, and there is no postgres user or no runuser to run PostgreSQL as'
    : undefined;

/** Runs a PostgreSQL tool (as the postgres user when root); never blocks the event loop, the server under test shares it. */
function pg(dir: string, tool: string, args: string[]): Promise<void> {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', path.join(bin!, tool), ...args]] : [path.join(bin!, tool), args];
  return new Promise((resolve, reject) => {
    // cwd: the postgres user may not be allowed into the test's working directory.
    const child = spawn(cmd, argv, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${tool} ${args.join(' ')} exited with ${code}:\n${out}`))));
  });
}

if (missing) {
  const line = `*** SKIPPED: the PostgreSQL restart test did not run: ${missing} ***`;
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test(NAME, { skip: missing }, () => undefined);
} else {
  test(NAME, { timeout: 90_000 }, async (t) => {
    const port = await freePort();
    const dir = await tempDir('cycles-pg-restart-');
    const data = path.join(dir, 'data');
    if (asRoot) {
      const uid = Number(pgUser!.stdout.trim());
      const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
      await fsp.chown(dir, uid, gid);
    }
    const start = () =>
      pg(dir, 'pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=40`, '-w', '-t', '60', 'start']);
    const stop = () => pg(dir, 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '60', 'stop']);
    let started = false;
    try {
      // --no-sync: only the processes crash here, never the machine, so the page cache survives.
      await pg(dir, 'initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync']);
      await start();
      started = true;
      await storeRestartUnderLoad(t, {
        kind: 'postgres',
        config: { store: 'postgres', databaseUrl: `postgres://postgres@127.0.0.1:${port}/postgres`, pgSchema: undefined, pgPoolSize: 8 },
        async crash() {
          // Immediate: every server process quits at once, no checkpoint (a crash, not a shutdown).
          await stop();
          started = false;
        },
        async restart() {
          await start();
          started = true;
        },
      });
    } finally {
      if (started) await stop().catch(() => undefined);
      await removeDir(dir);
    }
  });
}
