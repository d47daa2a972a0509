/**
 * The bookkeeping of in-flight work that must not keep finished requests reachable: the request
 * timeout's list (src/http/timeout.ts) and the store thread's pending calls
 * (src/store/sqlite/pending-calls.ts). Order, removal from anywhere, and that what leaves drops
 * every link it held.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { InFlightList, type InFlightEntry } from '../../src/http/timeout.js';
import { PendingCalls } from '../../src/store/sqlite/pending-calls.js';

const fakeReq = (n: number) => ({ n }) as unknown as FastifyRequest;
const fakeReply = (n: number) => ({ n }) as unknown as FastifyReply;
const nOf = (r: FastifyRequest | undefined) => (r as unknown as { n: number } | undefined)?.n;

function drainExpired(list: InFlightList, now: number): number[] {
  const out: number[] = [];
  for (let due = list.shiftExpired(now); due; due = list.shiftExpired(now)) out.push(nOf(due.req)!);
  return out;
}

test('in-flight list: expired requests leave oldest first, and a check stops at the first still in time', () => {
  const list = new InFlightList();
  for (let i = 0; i < 5; i++) list.add(fakeReq(i), fakeReply(i), 100 + i * 10);
  assert.equal(list.size, 5);
  assert.deepEqual(drainExpired(list, 99), []);
  assert.deepEqual(drainExpired(list, 120), [0, 1, 2]);
  assert.equal(list.size, 2);
  assert.deepEqual(drainExpired(list, 1_000), [3, 4]);
  assert.equal(list.size, 0);
  assert.equal(list.shiftExpired(Infinity), undefined);
});

test('in-flight list: removal from the head, middle and tail keeps the rest in order', () => {
  const list = new InFlightList();
  const entries: InFlightEntry[] = [];
  for (let i = 0; i < 6; i++) entries.push(list.add(fakeReq(i), fakeReply(i), i));
  list.remove(entries[0]!);
  list.remove(entries[3]!);
  list.remove(entries[5]!);
  assert.equal(list.size, 3);
  assert.deepEqual(drainExpired(list, 100), [1, 2, 4]);
  // Emptied, then used again: head and tail were reset.
  list.add(fakeReq(9), fakeReply(9), 0);
  assert.deepEqual(drainExpired(list, 100), [9]);
});

test('in-flight list: a removed entry holds no links, and removing it twice changes nothing', () => {
  const list = new InFlightList();
  const a = list.add(fakeReq(1), fakeReply(1), 1);
  const b = list.add(fakeReq(2), fakeReply(2), 2);
  const c = list.add(fakeReq(3), fakeReply(3), 3);
  list.remove(b);
  // What leaves must point at nothing, or a dead entry keeps its neighbours' requests reachable.
  assert.deepEqual({ req: b.req, reply: b.reply, prev: b.prev, next: b.next }, { req: null, reply: null, prev: null, next: null });
  assert.equal(a.next, c);
  assert.equal(c.prev, a);
  list.remove(b);
  assert.equal(list.size, 2);
  assert.equal(a.next, c);
  assert.deepEqual(drainExpired(list, 10), [1, 3]);
  assert.deepEqual({ req: a.req, next: a.next, prev: c.prev }, { req: null, next: null, prev: null });
});

test('pending calls: each reply finds its call once, in any order', () => {
  const pending = new PendingCalls<{ id: number }>(8);
  for (let id = 1; id <= 6; id++) pending.add(id, { id });
  assert.equal(pending.size, 6);
  for (const id of [4, 1, 6, 2]) assert.deepEqual(pending.take(id), { id });
  assert.equal(pending.take(4), undefined, 'a second reply for the same call finds nothing');
  assert.equal(pending.take(99), undefined);
  assert.equal(pending.size, 2);
  assert.deepEqual(pending.drain().map((c) => c.id).sort(), [3, 5]);
  assert.equal(pending.size, 0);
  assert.deepEqual(pending.drain(), []);
});

test('pending calls: a call that outlasts a full turn of the ring is still found', () => {
  const pending = new PendingCalls<{ id: number }>(4);
  pending.add(1, { id: 1 }); // the slow one
  for (let id = 2; id <= 40; id++) {
    pending.add(id, { id });
    assert.deepEqual(pending.take(id), { id });
  }
  pending.add(41, { id: 41 });
  pending.add(45, { id: 45 }); // same slot as 41: 41 moves aside
  assert.equal(pending.size, 3);
  assert.deepEqual(pending.take(1), { id: 1 });
  assert.deepEqual(pending.take(41), { id: 41 });
  assert.deepEqual(pending.take(45), { id: 45 });
  assert.equal(pending.size, 0);
  pending.add(46, { id: 46 });
  pending.add(50, { id: 50 });
  assert.deepEqual(pending.drain().map((c) => c.id).sort((x, y) => x - y), [46, 50]);
});

test('pending calls: the ring size must be a power of two', () => {
  assert.throws(() => new PendingCalls(1000), /power of two/);
});
