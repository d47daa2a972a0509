/**
 * createReservation (live and dry-run) and decide: ledger/ops/reserve.ts and ledger/ops/decide.ts.
 *
 * KEYS: 1 tenant, 2 idempotency record, 3 new reservation, 4 due queue, 5..10 reservation
 *       indexes (id, created, expires, status, reserved, scope), 11 outbox, 12 policy rules,
 *       13.. budget grid (scope-major, one key per unit in ARGV[18] order).
 * ARGV: 1 mode (live|dry|decide), 2 tenant, 3 idempotency key, 4 request hash, 5 unit, 6 estimate,
 *       7 scope count, 8 reservation id, 9 ttl_ms, 10 grace_period_ms, 11 overage policy,
 *       12 subject JSON, 13 action JSON, 14 metadata JSON, 15 scope_path JSON, 16 affected_scopes JSON,
 *       17 request context JSON, 18 units CSV, 19..18+n scopes (root first), 19+n '1' when the
 *       grid holds only the requested unit (ARGV[18] is then that unit alone). Empty string = absent.
 * Reply: {'OK', status, body, due time (live), outbox entry id or '', budgeted scopes JSON (live)}
 *      | {'REPLAY', status, body, reservation id, now}
 *      | {'ERR', code, ...} | {'WIDEN'}: no budget in the requested unit and the grid was narrow;
 *        nothing was written, and the caller runs again with every unit's keys (which tells
 *        BUDGET_NOT_FOUND from UNIT_MISMATCH).
 */
import { LIB } from './lib.js';

export const EVALUATE = LIB + String.raw`
local DEFAULT_TTL, DEFAULT_MAX_TTL, DEFAULT_GRACE, DEFAULT_MAX_EXT = 60000, 3600000, 5000, 10

return run(function()
  local mode, tenant_id, idem_key, hash, unit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  local estimate = tonumber(ARGV[6])
  local nscopes = tonumber(ARGV[7])
  local rid = ARGV[8]
  local subject_json, action_json, metadata_json = ARGV[12], ARGV[13], ARGV[14]
  local scope_path_json, affected_json, ctx = ARGV[15], ARGV[16], ARGV[17]
  local units = {}
  for u in string.gmatch(ARGV[18], '[^,]+') do units[#units + 1] = u end
  local scopes = {}
  for i = 1, nscopes do scopes[i] = ARGV[18 + i] end
  local scope_path = scopes[nscopes]
  local dry = mode == 'dry'
  local now = now_ms()

  local prior = find_replay(KEYS[2], hash, now, idem_key)
  if prior then return { 'REPLAY', prior.status, prior.body, prior.rid, now } end

  local function deny(reason, rem)
    local facts = ',"scope_path":' .. jstr(scope_path) .. ',"unit":' .. jstr(unit) .. ',"reason":' .. jstr(reason) .. ',"requested":' .. int(estimate)
    if rem then facts = facts .. ',"remaining":' .. int(rem) end
    local entry = emit(KEYS[11], 'deny', now, ctx, facts .. ',"action":' .. action_json .. ',"subject":' .. subject_json)
    local body
    if mode == 'decide' then
      body = '{"decision":"DENY","reason_code":' .. jstr(reason) .. ',"affected_scopes":' .. affected_json .. '}'
    else
      body = '{"decision":"DENY","reason_code":' .. jstr(reason) .. ',"scope_path":' .. scope_path_json .. ',"affected_scopes":' .. affected_json .. '}'
    end
    record(KEYS[2], hash, 200, body, '', now, horizon(now))
    return { 'OK', 200, body, '', entry }
  end

  local tenant = read_tenant(KEYS[1])
  local g = guard(tenant)
  if g == 'CLOSED' then
    if mode ~= 'live' then return deny('TENANT_CLOSED') end
    fail('TENANT_CLOSED')
  end
  if g == 'SUSPENDED' then
    if mode ~= 'live' then return deny('TENANT_SUSPENDED') end
    fail('TENANT_SUSPENDED')
  end

  local budgets = resolve_budgets(13, scopes, units, unit)
  if budgets == 'NOT_FOUND' and ARGV[19 + nscopes] == '1' then return { 'WIDEN' } end
  if budgets == 'NOT_FOUND' then
    if mode ~= 'live' then return deny('BUDGET_NOT_FOUND') end
    fail('BUDGET_NOT_FOUND')
  end
  local reason, denied = first_hold_denial(budgets, estimate)
  if reason then
    if mode ~= 'live' then return deny(reason, remaining(denied)) end
    fail('HOLD_DENIED', reason, denied.scope)
  end

  -- The governing policy (if any): caps, default overage policy, TTL limits.
  local gp = governing_policy(KEYS[12], scope_path, now)
  local caps = gp and gp.caps
  local decision = caps and 'ALLOW_WITH_CAPS' or 'ALLOW'
  local caps_field = caps and (',"caps":' .. caps) or ''

  if mode == 'decide' then
    local body = '{"decision":"' .. decision .. '"' .. caps_field .. ',"affected_scopes":' .. affected_json .. '}'
    record(KEYS[2], hash, 200, body, '', now, horizon(now))
    return { 'OK', 200, body, '', '' }
  end
  if dry then
    local body = '{"decision":"' .. decision .. '","reserved":' .. amt(unit, estimate) .. ',"scope_path":' .. scope_path_json ..
      ',"affected_scopes":' .. affected_json .. caps_field .. ',"balances":' .. balances_json(budgets) .. '}'
    record(KEYS[2], hash, 200, body, '', now, horizon(now))
    return { 'OK', 200, body, '', '' }
  end

  -- Live: compute everything (checked) before the first write.
  local max_ttl = (gp and gp.max_ttl) or (tenant and tenant.max_ttl) or DEFAULT_MAX_TTL
  local ttl = math.min(opt_num(ARGV[9]) or (gp and gp.default_ttl) or (tenant and tenant.default_ttl) or DEFAULT_TTL, max_ttl)
  local grace = opt_num(ARGV[10]) or DEFAULT_GRACE
  local policy = (not blank(ARGV[11]) and ARGV[11]) or (gp and gp.overage)
  if not policy then
    for i = #budgets, 1, -1 do
      if budgets[i].policy then policy = budgets[i].policy break end
    end
  end
  policy = policy or (tenant and tenant.policy) or 'ALLOW_IF_AVAILABLE'
  local max_ext = (gp and gp.max_ext) or (tenant and tenant.max_ext) or DEFAULT_MAX_EXT
  local held = {}
  for i, b in ipairs(budgets) do
    held[i] = copy(b)
    held[i].reserved = checked(b.reserved + estimate, b.scope)
  end
  local expires = now + ttl
  local budgeted = {}
  for i, b in ipairs(budgets) do budgeted[i] = b.scope end
  local budgeted_json = scopes_array(budgeted)

  local fields = { 'reservation_id', rid, 'tenant_id', tenant_id, 'status', 'ACTIVE', 'subject', subject_json, 'action', action_json,
    'unit', unit, 'reserved', int(estimate), 'scope_path', scope_path, 'affected_scopes', affected_json, 'budgeted_scopes', budgeted_json,
    'overage_policy', policy, 'idempotency_key', idem_key, 'created_at_ms', int(now), 'expires_at_ms', int(expires), 'ttl_ms', int(ttl),
    'grace_period_ms', int(grace), 'max_extensions', int(max_ext), 'extension_count', '0' }
  if not blank(metadata_json) then fields[#fields + 1] = 'metadata'; fields[#fields + 1] = metadata_json end
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[4], int(expires + grace), rid)
  redis.call('ZADD', KEYS[5], 0, rid)
  redis.call('ZADD', KEYS[6], 0, pad16(now) .. SEP .. rid)
  redis.call('ZADD', KEYS[7], 0, pad16(expires) .. SEP .. rid)
  redis.call('ZADD', KEYS[8], 0, 'ACTIVE' .. SEP .. rid)
  redis.call('ZADD', KEYS[9], 0, pad16(estimate) .. SEP .. rid)
  redis.call('ZADD', KEYS[10], 0, scope_path .. SEP .. rid)
  for _, b in ipairs(held) do write_budget(b, now) end
  local emitted = ''
  if transitions_fire(budgets, held) then
    emitted = emit(KEYS[11], 'reserve', now, ctx, ',"rid":' .. jstr(rid) .. ',"b":' .. budget_pairs_json(budgets, held))
  end
  local body = '{"decision":"' .. decision .. '","reservation_id":' .. q(rid) .. ',"reserved":' .. amt(unit, estimate) ..
    ',"expires_at_ms":' .. int(expires) .. ',"remaining_ttl_ms":' .. int(ttl) .. ',"scope_path":' .. scope_path_json ..
    ',"affected_scopes":' .. affected_json .. caps_field .. ',"balances":' .. balances_json(held) .. '}'
  record(KEYS[2], hash, 200, body, rid, now, horizon(now, expires + grace))
  return { 'OK', 200, body, int(expires + grace), emitted, budgeted_json }
end)
`;
