/**
 * Lua helpers prepended to every ledger script. They mirror ledger/math.ts and ledger/ops/shared.ts.
 *
 * Numbers: amounts are bounded to [0, 2^53-1] on the wire and every ledger result is checked
 * against +-(2^53-1) exactly where ledger/math.ts checks it, so Lua's doubles hold every value
 * exactly and compute bit-for-bit what JavaScript computes (same IEEE-754 operations, same order).
 * Values are stored as decimal strings written with '%d' (never tostring, which keeps 14 digits).
 *
 * JSON: reply bodies are assembled here from fixed shapes (never cjson, which escapes '/' and
 * cannot tell [] from {}); request-derived JSON arrives pre-serialised from TypeScript.
 *
 * Errors: fail(...) aborts with a code and parameters before anything was written; the
 * TypeScript side turns them into the same CyclesError the TypeScript ledger throws.
 * Every script checks everything first and writes last, so an abort never leaves a partial write.
 */
export const LIB = String.raw`
local MAX = 9007199254740991
local DAY = 86400000
local RETENTION = 7 * DAY

local function int(x) return string.format('%d', x) end
local function pad16(x) return string.format('%016d', x) end
local SEP = '\0'

local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local NEEDS_ESCAPE = '[%z\1-\31"\\]'
local function jstr(s)
  -- Most strings (units, scopes, ids) need no escaping: find is cheaper than a gsub that copies.
  if not string.find(s, NEEDS_ESCAPE) then return '"' .. s .. '"' end
  local out = string.gsub(s, NEEDS_ESCAPE, function(c) return ESC[c] or string.format('\\u%04x', string.byte(c)) end)
  return '"' .. out .. '"'
end
-- Quotes a string built only from checked characters: units (the protocol's enum), scopes
-- (ledger/scopes.ts allows letters, digits, '_', '.', '-', ':' and '/') and server-made ids.
-- Nothing in them needs escaping, and jstr's scan for what does is a pattern match at every
-- character, the dearest step of a reply body in Lua.
local function q(s) return '"' .. s .. '"' end
-- A JSON array of scopes.
local function scopes_array(list)
  local parts = {}
  for i, s in ipairs(list) do parts[i] = q(s) end
  return '[' .. table.concat(parts, ',') .. ']'
end
local function amt(unit, x) return '{"unit":' .. q(unit) .. ',"amount":' .. int(x) .. '}' end

local function fail(...) error({ cycles = true, reply = { 'ERR', ... } }) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function checked(v, scope)
  if v > MAX or v < -MAX then fail('CHECKED', scope) end
  return v
end

-- Byte-wise string order (Lua's < uses strcoll, and Redis sets LC_COLLATE from the environment).
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function blank(s) return s == nil or s == false or s == '' end
local function opt_num(s) if blank(s) then return nil end return tonumber(s) end

-- ---- tenants ----
local function read_tenant(key)
  local v = redis.call('HMGET', key, 'tenant_id', 'status', 'max_reservation_ttl_ms', 'default_reservation_ttl_ms',
    'default_commit_overage_policy', 'max_reservation_extensions')
  if not v[1] then return nil end
  return { status = v[2], max_ttl = opt_num(v[3]), default_ttl = opt_num(v[4]), policy = (not blank(v[5])) and v[5] or nil, max_ext = opt_num(v[6]) }
end

-- OPEN when there is no record (budgets can exist before tenants); unknown states fail closed.
local function guard(t)
  if not t then return 'OPEN' end
  if t.status == 'ACTIVE' then return 'OPEN' end
  if t.status == 'SUSPENDED' then return 'SUSPENDED' end
  if t.status == 'CLOSED' then return 'CLOSED' end
  fail('TENANT_STATUS')
end

-- ---- budgets ----
local function read_budget(key, scope, unit)
  local v = redis.call('HMGET', key, 'allocated', 'reserved', 'spent', 'debt', 'overdraft_limit', 'is_over_limit', 'status', 'commit_overage_policy')
  if not v[1] then return nil end
  return { key = key, scope = scope, unit = unit, allocated = tonumber(v[1]), reserved = tonumber(v[2]), spent = tonumber(v[3]),
    debt = tonumber(v[4]), limit = tonumber(v[5]), over = (v[6] == '1'), status = v[7], policy = (not blank(v[8])) and v[8] or nil }
end

-- A budget to change; orig is the budget as read, so that write_budget writes only what changed.
local function copy(b)
  return { key = b.key, scope = b.scope, unit = b.unit, allocated = b.allocated, reserved = b.reserved, spent = b.spent,
    debt = b.debt, limit = b.limit, over = b.over, status = b.status, policy = b.policy, orig = b.orig or b }
end

-- Splits on a one-character separator, keeping empty fields (like JavaScript's split).
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then out[#out + 1] = string.sub(s, start) return out end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- ---- policies (ledger/ops/shared.ts scopePatternMatches, governingPolicy) ----
local function segment_matches(want, got)
  if got == nil then return false end
  if #want >= 2 and string.sub(want, -2) == ':*' then
    local pre = string.sub(want, 1, -2)
    return string.sub(got, 1, #pre) == pre and #got > #pre
  end
  return want == got
end

local function pattern_matches(pattern, path)
  local p, s = split(pattern, '/'), split(path, '/')
  if p[#p] == '*' then
    local fixed = #p - 1
    if #s <= fixed then return false end
    for i = 1, fixed do if not segment_matches(p[i], s[i]) then return false end end
    return true
  end
  if #s ~= #p then return false end
  for i = 1, #p do if not segment_matches(p[i], s[i]) then return false end end
  return true
end

-- Rule fields (store/redis/governance.ts policyRule): status, pattern, priority, created_at,
-- effective_from, effective_until, overage policy, default ttl, max ttl, max extensions, caps JSON, id.
local function governing_policy(rules_key, path, now)
  local flat = redis.call('HGETALL', rules_key)
  local best = nil
  for i = 2, #flat, 2 do
    local f = split(flat[i], '\31')
    local p = { status = f[1], pattern = f[2], priority = tonumber(f[3]), created = tonumber(f[4]), from = opt_num(f[5]),
      untl = opt_num(f[6]), overage = (not blank(f[7])) and f[7] or nil, default_ttl = opt_num(f[8]), max_ttl = opt_num(f[9]),
      max_ext = opt_num(f[10]), caps = (not blank(f[11])) and f[11] or nil, id = f[12] }
    if p.status == 'ACTIVE' and (not p.from or now >= p.from) and (not p.untl or now < p.untl) and pattern_matches(p.pattern, path) then
      if not best or p.priority > best.priority or (p.priority == best.priority and (p.created < best.created or (p.created == best.created and bytes_lt(p.id, best.id)))) then
        best = p
      end
    end
  end
  return best
end

local function remaining(b) return b.allocated - b.spent - b.reserved - b.debt end

-- Writes the amounts that differ from the budget as read, and updated_at: a reserve changes only
-- reserved, and each field left out of the HSET saves formatting it and replacing it in the hash.
local function write_budget(b, now)
  local o = b.orig or {}
  local set = { 'updated_at', int(now) }
  if b.reserved ~= o.reserved then set[#set + 1] = 'reserved'; set[#set + 1] = int(b.reserved) end
  if b.spent ~= o.spent then set[#set + 1] = 'spent'; set[#set + 1] = int(b.spent) end
  if b.debt ~= o.debt then set[#set + 1] = 'debt'; set[#set + 1] = int(b.debt) end
  if b.over ~= o.over then set[#set + 1] = 'is_over_limit'; set[#set + 1] = b.over and '1' or '0' end
  if b.allocated ~= o.allocated then set[#set + 1] = 'allocated'; set[#set + 1] = int(b.allocated) end
  if b.limit ~= o.limit then set[#set + 1] = 'overdraft_limit'; set[#set + 1] = int(b.limit) end
  redis.call('HSET', b.key, unpack(set))
end

local function balance_json(b)
  -- One string per operand of a single concatenation: each amount shares the unit's prefix.
  local u, s = '{"unit":' .. q(b.unit) .. ',"amount":', q(b.scope)
  return '{"scope":' .. s .. ',"scope_path":' .. s .. ',"remaining":' .. u .. int(remaining(b)) ..
    '},"reserved":' .. u .. int(b.reserved) .. '},"spent":' .. u .. int(b.spent) .. '},"allocated":' .. u .. int(b.allocated) ..
    '},"debt":' .. u .. int(b.debt) .. '},"overdraft_limit":' .. u .. int(b.limit) .. '},"is_over_limit":' .. (b.over and 'true' or 'false') .. '}'
end

local function balances_json(list)
  local parts = {}
  for i, b in ipairs(list) do parts[i] = balance_json(b) end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- Budgets at the derived scopes: keys come scope-major, one per unit (UNITS order).
-- Returns the budgets in the requested unit in canonical order, or 'NOT_FOUND';
-- fails UNIT_MISMATCH when only other units are budgeted (mirrors resolveBudgets).
local function resolve_budgets(first_key, scopes, units, unit)
  local nunits = #units
  local unit_index = nil
  for j, u in ipairs(units) do if u == unit then unit_index = j end end
  local found = {}
  for i, s in ipairs(scopes) do
    local b = read_budget(KEYS[first_key + (i - 1) * nunits + unit_index - 1], s, unit)
    if b then found[#found + 1] = b end
  end
  if #found > 0 then return found end
  local deepest, expected = nil, nil
  for i = #scopes, 1, -1 do
    local have = {}
    for j, u in ipairs(units) do
      if redis.call('EXISTS', KEYS[first_key + (i - 1) * nunits + j - 1]) == 1 then have[#have + 1] = u end
    end
    if #have > 0 then deepest, expected = scopes[i], have break end
  end
  if not deepest then return 'NOT_FOUND' end
  table.sort(expected, bytes_lt)
  fail('UNIT_MISMATCH', deepest, table.concat(expected, ','))
end

-- holdDenial / firstHoldDenial
local function hold_denial(b, estimate)
  if b.status == 'FROZEN' then return 'BUDGET_FROZEN' end
  if b.status == 'CLOSED' then return 'BUDGET_CLOSED' end
  if b.over then return 'OVERDRAFT_LIMIT_EXCEEDED' end
  if b.debt > 0 and b.limit == 0 then return 'DEBT_OUTSTANDING' end
  if remaining(b) < estimate then return 'BUDGET_EXCEEDED' end
  return nil
end

local function first_hold_denial(budgets, estimate)
  for _, b in ipairs(budgets) do
    local r = hold_denial(b, estimate)
    if r then return r, b end
  end
  return nil, nil
end

local function settle_guard(budgets)
  for _, b in ipairs(budgets) do
    if b.status == 'FROZEN' then fail('BUDGET_FROZEN', b.scope) end
    if b.status == 'CLOSED' then fail('BUDGET_CLOSED', b.scope) end
  end
end

-- chargeUnheld: returns new budgets, charged, debt_incurred (mirrors ledger/math.ts exactly).
local function charge_unheld(budgets, amount, policy)
  local out = {}
  for i, b in ipairs(budgets) do out[i] = copy(b) end
  if amount == 0 or #budgets == 0 then return out, amount, 0 end
  if policy == 'REJECT' then
    for _, b in ipairs(budgets) do
      if remaining(b) < amount then fail('REJECT_INSUFFICIENT', b.scope) end
    end
    for i, b in ipairs(budgets) do out[i].spent = checked(b.spent + amount, b.scope) end
    return out, amount, 0
  end
  local capped = amount
  for _, b in ipairs(budgets) do
    if policy == 'ALLOW_IF_AVAILABLE' or b.limit == 0 then capped = math.min(capped, math.max(remaining(b), 0)) end
  end
  if policy == 'ALLOW_WITH_OVERDRAFT' then
    for _, b in ipairs(budgets) do
      if b.limit ~= 0 then
        local deficit = capped - math.max(remaining(b), 0)
        if deficit > 0 and b.debt + deficit > b.limit then fail('OVERDRAFT', b.scope, int(b.debt), int(deficit), int(b.limit)) end
      end
    end
  end
  local debt_incurred = 0
  for i, b in ipairs(budgets) do
    local rem = remaining(b)
    local funded = math.min(capped, math.max(rem, 0))
    local deficit = capped - funded
    local n = out[i]
    n.spent = checked(b.spent + funded, b.scope)
    if deficit > 0 then
      n.debt = checked(b.debt + deficit, b.scope)
      debt_incurred = math.max(debt_incurred, deficit)
      if n.debt > n.limit then n.over = true end
    end
    if capped < amount and rem < amount and (policy == 'ALLOW_IF_AVAILABLE' or b.limit == 0) then n.over = true end
  end
  return out, capped, debt_incurred
end

-- ---- idempotency (HASH h=request hash, s=status, b=body, r=reservation id, c=created, e=expires) ----
local function find_replay(key, hash, now, idem_key)
  local v = redis.call('HMGET', key, 'h', 's', 'b', 'r', 'e')
  if not v[1] then return nil end
  if tonumber(v[5]) <= now then return nil end
  if v[1] ~= hash then fail('IDEM_MISMATCH', idem_key) end
  return { status = v[2], body = v[3], rid = v[4] or '' }
end

local function record(key, hash, status, body, rid, now, expires)
  redis.call('DEL', key)
  redis.call('HSET', key, 'h', hash, 's', tostring(status), 'b', body, 'r', rid or '', 'c', int(now), 'e', int(expires))
  redis.call('PEXPIREAT', key, int(expires))
end

local function horizon(now, untl)
  return math.max(now + RETENTION, (untl or 0) + DAY)
end

-- ---- events: the outbox records facts; TypeScript derives the events from them ----
local UTILIZATION_THRESHOLDS = { 0.8, 0.95 }
local function utilization(b)
  if b.allocated > 0 then return (b.spent + b.reserved) / b.allocated end
  if b.spent + b.reserved > 0 then return 1 end
  return 0
end

-- Whether budgetTransitions (ledger/transitions.ts) yields anything for these pairs.
local function transitions_fire(before, after)
  for i, p in ipairs(before) do
    local b = after[i]
    local u0, u1 = utilization(p), utilization(b)
    for _, t in ipairs(UTILIZATION_THRESHOLDS) do
      if u0 < t and u1 >= t then return true end
    end
    if remaining(p) > 0 and remaining(b) <= 0 then return true end
    if p.over ~= b.over then return true end
    if b.debt > p.debt then return true end
  end
  return false
end

local function budget_pairs_json(before, after)
  local parts = {}
  for i, p in ipairs(before) do
    local b = after[i]
    parts[i] = '[' .. jstr(p.scope) .. ',' .. jstr(p.unit) .. ',' .. int(p.allocated) .. ',' .. int(p.spent) .. ',' .. int(p.reserved) ..
      ',' .. int(p.debt) .. ',' .. int(p.limit) .. ',' .. (p.over and 'true' or 'false') .. ',' .. int(b.allocated) .. ',' .. int(b.spent) ..
      ',' .. int(b.reserved) .. ',' .. int(b.debt) .. ',' .. int(b.limit) .. ',' .. (b.over and 'true' or 'false') .. ']'
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function emit(outbox, op, now, ctx, fields)
  return redis.call('XADD', outbox, '*', 'f', '{"op":' .. jstr(op) .. ',"now":' .. int(now) .. ',"ctx":' .. ctx .. fields .. '}')
end

-- ---- reservation indexes (score-0 ZSETs ordered by member) ----
local STATUS_ORDER = { ACTIVE = 'ACTIVE', COMMITTED = 'COMMITTED', EXPIRED = 'EXPIRED', RELEASED = 'RELEASED' }
local function status_member(status, rid) return STATUS_ORDER[status] .. SEP .. rid end

local function run(main)
  local ok, res = pcall(main)
  if ok then return res end
  if type(res) == 'table' and res.cycles then return res.reply end
  error(res)
end
`;
