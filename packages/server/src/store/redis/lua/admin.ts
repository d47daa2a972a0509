/**
 * Governance writes that must be atomic within one tenant's slot, and the small scripts
 * that coordinate several server processes (expiry registry, leases, retention).
 */
import { LIB } from './lib.js';

/** Creates a hash from field/value pairs unless it exists. KEYS: 1 hash. ARGV: pairs. Reply: 1 created, 0 existed. */
export const CREATE_IF_ABSENT = String.raw`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`;

/**
 * Patches an existing hash. KEYS: 1 hash. ARGV: 1 number of pairs to set, then the pairs, then
 * the fields to delete. Reply: 1 patched, 0 missing.
 */
export const PATCH_IF_PRESENT = String.raw`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return 1
`;

/**
 * Creates a budget with its tenant index entries. KEYS: 1 budget, 2 tenant ledger-id index,
 * 3 tenant ledger map. ARGV: 1 ledger id, 2 `unit|scope`, then field/value pairs. Reply: 1 | 0 (exists).
 */
export const CREATE_BUDGET = String.raw`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
`;

/**
 * Patches a budget's policy fields; a new overdraft limit recomputes is_over_limit from debt.
 * KEYS: 1 budget. ARGV: 1 overdraft_limit, 2 commit_overage_policy, 3 metadata JSON, 4 status
 * ('' = unchanged). Reply: 1 | 0 (missing).
 */
export const UPDATE_BUDGET = LIB + String.raw`
return run(function()
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  local now = now_ms()
  local set = { 'updated_at', int(now) }
  local function put(f, v) set[#set + 1] = f; set[#set + 1] = v end
  if ARGV[1] ~= '' then
    local limit = tonumber(ARGV[1])
    local debt = tonumber(redis.call('HGET', KEYS[1], 'debt'))
    put('overdraft_limit', int(limit))
    put('is_over_limit', debt > limit and '1' or '0')
  end
  if ARGV[2] ~= '' then put('commit_overage_policy', ARGV[2]) end
  if ARGV[3] ~= '' then put('metadata', ARGV[3]) end
  if ARGV[4] ~= '' then put('status', ARGV[4]) end
  redis.call('HSET', KEYS[1], unpack(set))
  return 1
end)
`;

/** Creates an API key record and its tenant index entry. KEYS: 1 record, 2 tenant key index. ARGV: 1 key id, pairs. */
export const CREATE_API_KEY = String.raw`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
`;

/**
 * Expiry registry, written after reservations are taken: lower each tenant's hint to its due
 * time and mark it touched, both in one step (a sweep settling the tenant in between would
 * otherwise overwrite the lowered hint). KEYS: 1 registry, 2 touched set. ARGV: pairs of tenant,
 * due time (one call carries every tenant touched in one event-loop turn).
 */
export const REGISTRY_TOUCH = String.raw`
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'LT', ARGV[i + 1], ARGV[i])
  redis.call('SADD', KEYS[2], ARGV[i])
end
return 1
`;

/**
 * After a sweep of one tenant: move its hint to the next due time (or drop it when nothing is
 * pending), unless a reservation touched it since the sweep began (then it stays due and is
 * looked at again). KEYS: 1 registry, 2 touched set. ARGV: 1 tenant, 2 next due ('' = none).
 */
export const REGISTRY_SETTLE = String.raw`
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
if ARGV[2] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
return 1
`;

/** Compare-and-delete of a lease. KEYS: 1 lease. ARGV: 1 owner token. */
export const LEASE_RELEASE = String.raw`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Deletes terminal reservations that ended before a cutoff, with their index entries.
 * KEYS: 1 retention queue, 2..7 indexes (id, created, expires, status, reserved, scope), 8.. reservations.
 * ARGV: 1 cutoff, then the reservation ids. Reply: number deleted.
 */
export const PURGE_RESERVATIONS = LIB + String.raw`
return run(function()
  local cutoff = tonumber(ARGV[1])
  local n = 0
  for i = 2, #ARGV do
    local rid, key = ARGV[i], KEYS[6 + i]
    local v = redis.call('HMGET', key, 'status', 'finalized_at_ms', 'expired_at_ms', 'created_at_ms', 'expires_at_ms', 'reserved', 'scope_path')
    local ended = tonumber(v[2] or v[3] or '')
    if not v[1] then
      redis.call('ZREM', KEYS[1], rid)
    elseif v[1] ~= 'ACTIVE' and ended and ended < cutoff then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], rid)
      redis.call('ZREM', KEYS[2], rid)
      redis.call('ZREM', KEYS[3], pad16(tonumber(v[4])) .. SEP .. rid)
      redis.call('ZREM', KEYS[4], pad16(tonumber(v[5])) .. SEP .. rid)
      redis.call('ZREM', KEYS[5], v[1] .. SEP .. rid)
      redis.call('ZREM', KEYS[6], pad16(tonumber(v[6])) .. SEP .. rid)
      redis.call('ZREM', KEYS[7], v[7] .. SEP .. rid)
      n = n + 1
    end
  end
  return n
end)
`;
