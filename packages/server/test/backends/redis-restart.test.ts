/**
 * A private redis-server (random port, own directory, AOF with fsync=always) SIGKILLed under
 * concurrent reserve/commit/release load and started again on the same port and directory, with
 * the Cycles server left running: 503s while it is down, recovery by itself, nothing acknowledged
 * lost, the ledger exact (restart-load.ts says exactly what is checked). Needs redis-server on
 * PATH; it never touches the shared Redis of the other suites.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { freePort, removeDir, tempDir } from '../support/server.js';
import { startPrivateRedis } from './redis-backend.js';
import { storeRestartUnderLoad } from './restart-load.js';

const NAME = 'Redis restarted under concurrent load: 503 while down, recovery without a server restart, nothing acknowledged lost, exact ledger';

if (spawnSync('redis-server', ['--version']).status !== 0) {
  const line = '*** SKIPPED: the Redis restart test did not run: redis-server is not on PATH ***';
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test(NAME, { skip: 'redis-server is not installed' }, () => undefined);
} else {
  test(NAME, { timeout: 90_000 }, async (t) => {
    const port = await freePort();
    const dir = await tempDir('cycles-redis-restart-');
    let proc: ChildProcess | undefined;
    const exited = (p: ChildProcess) => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', r)));
    const start = async () => {
      proc = await startPrivateRedis(port, dir);
    };
    try {
      await start();
      await storeRestartUnderLoad(t, {
        kind: 'redis',
        config: { store: 'redis', redisUrl: `redis://127.0.0.1:${port}`, redisClusterUrls: [], redisPrefix: 'cyt:restart:' },
        async crash() {
          const p = proc!;
          p.kill('SIGKILL');
          await exited(p);
        },
        restart: start,
      });
    } finally {
      if (proc) {
        proc.kill('SIGKILL');
        await exited(proc);
      }
      await removeDir(dir);
    }
  });
}
