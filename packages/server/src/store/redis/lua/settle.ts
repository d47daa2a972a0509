/**
 * commit, release and extend of one reservation: ledger/ops/settle.ts.
 *
 * KEYS: 1 tenant, 2 reservation, 3 idempotency record, 4 due queue, 5 status index,
 *       6 retention queue, 7 expires index, 8 outbox, 9.. the reservation's budgets (budgeted
 *       scopes in its unit, in order).
 * ARGV: 1 op (commit|release|extend), 2 reservation id, 3 caller tenant ('' = admin),
 *       4 idempotency key, 5 request hash, 6 budgeted_scopes JSON the keys were built from,
 *       7 request context JSON; commit: 8 actual unit, 9 actual amount, 10 metrics JSON,
 *       11 metadata JSON; extend: 8 extend_by_ms.
 * Reply: {'OK', status, body, due time (extend), outbox entry id or ''} | {'REPLAY', status, body, reservation status, now}
 *      | {'KEYS', unit, budgeted_scopes JSON} (the keys passed were not this reservation's: retry)
 *      | {'ERR', code, ...}
 */
import { LIB } from './lib.js';

const RESERVATION_FIELDS = String.raw`
local RF = { 'tenant_id', 'status', 'unit', 'reserved', 'scope_path', 'budgeted_scopes', 'overage_policy', 'expires_at_ms',
  'grace_period_ms', 'max_extensions', 'extension_count', 'created_at_ms', 'ttl_ms' }
local function read_reservation(key)
  local v = redis.call('HMGET', key, unpack(RF))
  if not v[1] then return nil end
  return { tenant_id = v[1], status = v[2], unit = v[3], reserved = tonumber(v[4]), scope_path = v[5], budgeted = v[6],
    policy = v[7], expires = tonumber(v[8]), grace = tonumber(v[9]), max_ext = tonumber(v[10]), ext = tonumber(v[11]),
    created = tonumber(v[12]), ttl = tonumber(v[13]) }
end

-- heldBudgets: the budgeted scopes that still have a budget in the reservation's unit, in order.
local function held_budgets(r, scopes_json, first_key)
  local out = {}
  local i = 0
  for s in string.gmatch(scopes_json, '"([^"]*)"') do
    local b = read_budget(KEYS[first_key + i], s, r.unit)
    if b then out[#out + 1] = b end
    i = i + 1
  end
  return out
end

local function release_hold(budgets, held)
  local out = {}
  for i, b in ipairs(budgets) do
    out[i] = copy(b)
    out[i].reserved = math.max(0, b.reserved - held)
  end
  return out
end
`;

export const SETTLE = LIB + RESERVATION_FIELDS + String.raw`
local DEFAULT_MAX_TTL = 3600000

return run(function()
  local op, rid, caller, idem_key, hash, scopes_json, ctx = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local now = now_ms()
  local r = read_reservation(KEYS[2])
  if not r then fail('RSV_NOT_FOUND') end
  if r.budgeted ~= scopes_json then return { 'KEYS', r.unit, r.budgeted } end
  if caller ~= '' and r.tenant_id ~= caller then fail('RSV_FORBIDDEN') end
  local prior = find_replay(KEYS[3], hash, now, idem_key)
  if prior then return { 'REPLAY', prior.status, prior.body, r.status, now } end
  local tenant = read_tenant(KEYS[1])
  if guard(tenant) == 'CLOSED' then fail('TENANT_CLOSED') end
  if r.status == 'EXPIRED' then fail('RSV_EXPIRED') end
  if r.status ~= 'ACTIVE' then fail('RSV_FINALIZED', r.status) end
  -- Grace covers commit and release, never extend.
  local deadline = r.expires
  if op ~= 'extend' then deadline = r.expires + r.grace end
  if now > deadline then fail('RSV_EXPIRED') end

  local budgets = held_budgets(r, scopes_json, 9)

  local function finalize(status)
    redis.call('HSET', KEYS[2], 'status', status, 'finalized_at_ms', int(now))
    redis.call('ZREM', KEYS[4], rid)
    redis.call('ZREM', KEYS[5], 'ACTIVE' .. SEP .. rid)
    redis.call('ZADD', KEYS[5], 0, status .. SEP .. rid)
    redis.call('ZADD', KEYS[6], now, rid)
  end

  if op == 'commit' then
    local actual_unit, actual = ARGV[8], tonumber(ARGV[9])
    if actual_unit ~= r.unit then fail('COMMIT_UNIT', actual_unit, r.unit, r.scope_path) end
    settle_guard(budgets)
    local delta = actual - r.reserved
    if delta > 0 and r.policy == 'REJECT' then fail('COMMIT_REJECT', int(r.reserved), int(actual)) end
    local used = math.min(actual, r.reserved)
    local base = release_hold(budgets, r.reserved)
    for _, b in ipairs(base) do b.spent = b.spent + used end
    local settled, charged, debt_incurred = base, used, 0
    if delta > 0 then
      local extra
      settled, extra, debt_incurred = charge_unheld(base, delta, r.policy)
      charged = charged + extra
    end
    for _, b in ipairs(settled) do write_budget(b, now) end
    local emitted = ''
    if delta > 0 or transitions_fire(budgets, settled) then
      emitted = emit(KEYS[8], 'commit', now, ctx, ',"rid":' .. jstr(rid) .. ',"policy":' .. jstr(r.policy) .. ',"scope_path":' .. jstr(r.scope_path) ..
        ',"unit":' .. jstr(r.unit) .. ',"est":' .. int(r.reserved) .. ',"actual":' .. int(actual) .. ',"delta":' .. int(delta) ..
        ',"debt_incurred":' .. int(debt_incurred) .. ',"b":' .. budget_pairs_json(budgets, settled))
    end
    finalize('COMMITTED')
    local extra_fields = { 'committed', int(charged), 'debt_incurred', int(debt_incurred) }
    if not blank(ARGV[10]) then extra_fields[#extra_fields + 1] = 'metrics'; extra_fields[#extra_fields + 1] = ARGV[10] end
    if not blank(ARGV[11]) then extra_fields[#extra_fields + 1] = 'committed_metadata'; extra_fields[#extra_fields + 1] = ARGV[11] end
    redis.call('HSET', KEYS[2], unpack(extra_fields))
    local body = '{"status":"COMMITTED","charged":' .. amt(r.unit, charged)
    if actual < r.reserved then body = body .. ',"released":' .. amt(r.unit, r.reserved - actual) end
    body = body .. ',"balances":' .. balances_json(settled) .. '}'
    record(KEYS[3], hash, 200, body, rid, now, horizon(now))
    return { 'OK', 200, body, '', emitted }
  end

  if op == 'release' then
    local released = release_hold(budgets, r.reserved)
    for _, b in ipairs(released) do write_budget(b, now) end
    finalize('RELEASED')
    local body = '{"status":"RELEASED","released":' .. amt(r.unit, r.reserved) .. ',"balances":' .. balances_json(released) .. '}'
    record(KEYS[3], hash, 200, body, rid, now, horizon(now))
    return { 'OK', 200, body }
  end

  -- extend
  if r.ext >= r.max_ext then fail('MAX_EXTENSIONS', int(r.max_ext)) end
  local max_ttl = (tenant and tenant.max_ttl) or DEFAULT_MAX_TTL
  local expires = math.max(r.expires, math.min(r.expires + tonumber(ARGV[8]), now + max_ttl))
  redis.call('HSET', KEYS[2], 'expires_at_ms', int(expires), 'extension_count', int(r.ext + 1))
  redis.call('ZADD', KEYS[4], int(expires + r.grace), rid)
  redis.call('ZREM', KEYS[7], pad16(r.expires) .. SEP .. rid)
  redis.call('ZADD', KEYS[7], 0, pad16(expires) .. SEP .. rid)
  local body = '{"status":"ACTIVE","expires_at_ms":' .. int(expires) .. ',"remaining_ttl_ms":' .. int(math.max(0, expires - now)) ..
    ',"balances":' .. balances_json(budgets) .. '}'
  record(KEYS[3], hash, 200, body, rid, now, horizon(now, expires))
  return { 'OK', 200, body, int(expires + r.grace) }
end)
`;

/**
 * Expires due reservations of one tenant: ledger/ops/settle.ts expire().
 *
 * KEYS: 1 due queue, 2 status index, 3 retention queue, 4 outbox, then per reservation:
 *       its key followed by its budget keys.
 * ARGV: 1 request context JSON, 2 count, then per reservation: id, budgeted_scopes JSON, key count.
 * Reply: {expired, next due time or '', outbox entry ids...}.
 */
export const EXPIRE = LIB + RESERVATION_FIELDS + String.raw`
return run(function()
  local ctx, count = ARGV[1], tonumber(ARGV[2])
  local now = now_ms()
  local expired = 0
  local entries = {}
  local k, a = 5, 3
  for _ = 1, count do
    local rid, scopes_json, nkeys = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    local rkey = KEYS[k]
    local r = read_reservation(rkey)
    if not r or r.status ~= 'ACTIVE' then
      redis.call('ZREM', KEYS[1], rid)
    elseif r.budgeted == scopes_json and now > r.expires + r.grace then
      local budgets = held_budgets(r, scopes_json, k + 1)
      for _, b in ipairs(release_hold(budgets, r.reserved)) do write_budget(b, now) end
      redis.call('HSET', rkey, 'status', 'EXPIRED', 'expired_at_ms', int(now))
      redis.call('ZREM', KEYS[1], rid)
      redis.call('ZREM', KEYS[2], 'ACTIVE' .. SEP .. rid)
      redis.call('ZADD', KEYS[2], 0, 'EXPIRED' .. SEP .. rid)
      redis.call('ZADD', KEYS[3], now, rid)
      entries[#entries + 1] = emit(KEYS[4], 'expire', now, ctx, ',"rid":' .. jstr(rid) .. ',"scope_path":' .. jstr(r.scope_path) .. ',"unit":' .. jstr(r.unit) ..
        ',"est":' .. int(r.reserved) .. ',"created":' .. int(r.created) .. ',"ttl":' .. int(r.ttl) .. ',"ext":' .. int(r.ext))
      expired = expired + 1
    end
    k = k + 1 + nkeys
    a = a + 3
  end
  local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local reply = { expired, head[2] or '' }
  for _, e in ipairs(entries) do reply[#reply + 1] = e end
  return reply
end)
`;
