/**
 * The Redis reply deadline (CYCLES_REDIS_REPLY_TIMEOUT_MS): a private redis-server paused with
 * SIGSTOP keeps its connections open but answers nothing. With a deadline, the calls waiting on
 * it fail as SERVICE_UNAVAILABLE, the connection is opened again by itself, and calls succeed
 * once Redis runs again; without one, a call waits as long as Redis is paused and is answered
 * when it resumes. Needs redis-server on PATH; it never touches the shared Redis of the other
 * suites. With CYCLES_TEST_REDIS_CLUSTER_URLS, one primary of the test Cluster is paused for about
 * a second (well under its node timeout) while the others keep answering.
 */
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { createClient } from '@redis/client';
import { after, before, describe, test } from 'node:test';
import { CyclesError } from '../../src/ledger/errors.js';
import { RedisConn } from '../../src/store/redis/conn.js';
import { freePort, removeDir, tempDir } from '../support/server.js';
import { startPrivateRedis } from './redis-backend.js';

const NAME = 'Redis reply deadline';

/** Settles with the outcome of `p`, or 'still waiting' if it has not settled within `ms`. */
async function outcomeWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const waiting = new Promise((r) => (timer = setTimeout(() => r('still waiting'), ms)));
  try {
    return await Promise.race([p.then((v) => ({ value: v }), (e: unknown) => ({ error: e })), waiting]);
  } finally {
    clearTimeout(timer);
  }
}

async function eventually(fn: () => Promise<unknown>, ms: number): Promise<unknown> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

if (spawnSync('redis-server', ['--version']).status !== 0) {
  const line = '*** SKIPPED: the Redis reply-deadline tests did not run: redis-server is not on PATH ***';
  console.log(`\n${'*'.repeat(line.length)}\n${line}\n${'*'.repeat(line.length)}\n`);
  test(NAME, { skip: 'redis-server is not installed' }, () => undefined);
} else {
  describe(NAME, { timeout: 60_000 }, () => {
    let proc: ChildProcess;
    let dir: string;
    let url: string;
    before(async () => {
      const port = await freePort();
      dir = await tempDir('cycles-redis-stall-');
      proc = await startPrivateRedis(port, dir);
      url = `redis://127.0.0.1:${port}`;
    });
    after(async () => {
      proc.kill('SIGCONT');
      proc.kill('SIGKILL');
      await removeDir(dir);
    });

    test('a paused Redis: waiting calls fail as SERVICE_UNAVAILABLE, the connection reopens, calls succeed once it runs again', async () => {
      const warnings: string[] = [];
      const conn = await RedisConn.open({ url, replyTimeoutMs: 400, onWarning: (m) => warnings.push(m) });
      try {
        assert.equal(await conn.call(undefined, ['PING']), 'PONG');
        proc.kill('SIGSTOP');
        try {
          const calls = [conn.call(undefined, ['PING']), conn.call(undefined, ['SET', 'stall:k', 'v']), conn.ping()];
          // Far beyond the deadline: without it these would still be waiting.
          const outcomes = await Promise.all(calls.map((c) => outcomeWithin(c, 8_000)));
          for (const o of outcomes) {
            const err = (o as { error?: unknown }).error;
            assert.ok(err instanceof CyclesError, `a waiting call failed with a CyclesError: ${JSON.stringify(o)}`);
            assert.equal(err.code, 'SERVICE_UNAVAILABLE');
          }
          assert.equal(warnings.length, 1, warnings.join('\n'));
          assert.match(warnings[0]!, /A call to Redis .* has waited 400 ms for its reply, with 3 calls waiting/);
        } finally {
          proc.kill('SIGCONT');
        }
        // Reconnected by itself: no new RedisConn.
        assert.equal(await eventually(() => conn.call(undefined, ['GET', 'stall:k']), 10_000), 'v');
        assert.equal(await conn.call(undefined, ['PING']), 'PONG');
      } finally {
        await conn.close();
      }
    });

    test('with the deadline off (0), a call waits while Redis is paused and is answered when it resumes', async () => {
      const conn = await RedisConn.open({ url, replyTimeoutMs: 0 });
      try {
        proc.kill('SIGSTOP');
        let pending: Promise<unknown>;
        try {
          pending = conn.call(undefined, ['PING']);
          assert.equal(await outcomeWithin(pending, 1_500), 'still waiting');
        } finally {
          proc.kill('SIGCONT');
        }
        assert.deepEqual(await outcomeWithin(pending, 5_000), { value: 'PONG' });
      } finally {
        await conn.close();
      }
    });
  });
}

const clusterUrls = process.env.CYCLES_TEST_REDIS_CLUSTER_URLS?.split(',').filter(Boolean) ?? [];

test('Redis Cluster: one primary paused while the others answer; its calls fail at the deadline, then succeed', { skip: clusterUrls.length === 0 ? 'CYCLES_TEST_REDIS_CLUSTER_URLS is not set' : false, timeout: 60_000 }, async () => {
  const warnings: string[] = [];
  const conn = await RedisConn.open({ clusterUrls, replyTimeoutMs: 400, onWarning: (m) => warnings.push(m) });
  try {
    // A key on each of two primaries, found from the slot map.
    const slots = (await conn.call<Array<[number, number, [string, number]]>>(undefined, ['CLUSTER', 'SLOTS'])) as unknown as Array<[number, number, [string, number]]>;
    const ownerOf = async (key: string) => {
      const slot = Number(await conn.call(undefined, ['CLUSTER', 'KEYSLOT', key]));
      const range = slots.find(([from, to]) => slot >= from && slot <= to)!;
      return range[2][1];
    };
    const keysByPort = new Map<number, string>();
    for (let i = 0; keysByPort.size < 2 && i < 1000; i++) {
      const key = `stall:{k${i}}`;
      const port = await ownerOf(key);
      if (!keysByPort.has(port)) keysByPort.set(port, key);
    }
    const [[pausedPort, pausedKey], [, liveKey]] = [...keysByPort.entries()] as [[number, string], [number, string]];
    const direct = createClient({ url: `redis://127.0.0.1:${pausedPort}` });
    direct.on('error', () => undefined);
    await direct.connect();
    const pid = Number(/process_id:(\d+)/.exec(String(await direct.sendCommand(['INFO', 'server'])))![1]);
    direct.destroy();
    await conn.call(pausedKey, ['SET', pausedKey, 'before']);

    process.kill(pid, 'SIGSTOP');
    let liveAnswers = 0;
    let outcome: unknown;
    try {
      const stalled = conn.call(pausedKey, ['GET', pausedKey]);
      let done = false;
      // Well under the Cluster's node timeout (5 s in .ci/redis-cluster), even when this fails.
      const settled = outcomeWithin(stalled, 3_000).then((o) => {
        done = true;
        return o;
      });
      // The other primary keeps answering the whole time.
      while (!done) {
        try {
          await conn.call(liveKey, ['SET', liveKey, String(liveAnswers)]);
          liveAnswers++;
        } catch {
          // the reopen fails the calls in flight on every node; the loop goes on
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      outcome = await settled;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const err = (outcome as { error?: unknown }).error;
    assert.ok(err instanceof CyclesError, `the call to the paused primary failed with a CyclesError: ${JSON.stringify(outcome)}`);
    assert.equal(err.code, 'SERVICE_UNAVAILABLE');
    assert.ok(liveAnswers >= 5, `the other primary answered meanwhile (${liveAnswers} replies)`);
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.equal(await eventually(() => conn.call(pausedKey, ['GET', pausedKey]), 10_000), 'before');
  } finally {
    await conn.close();
  }
});
