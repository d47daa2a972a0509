/** createEvent: direct debit without a reservation (ledger/ops/event.ts). */
import { LIB } from './lib.js';

/**
 * KEYS: 1 tenant, 2 idempotency record, 3 outbox, 4.. budget grid (scope-major, units in ARGV[10] order).
 * ARGV: 1 idempotency key, 2 request hash, 3 unit, 4 amount, 5 overage policy ('' = default),
 *       6 event id, 7 request context JSON, 8 scope count, 9 (unused), 10 units CSV, 11.. scopes.
 * Reply: {'OK', 201, body, outbox entry id or ''} | {'REPLAY', status, body} | {'ERR', code, ...}
 */
export const DIRECT_DEBIT = LIB + String.raw`
return run(function()
  local idem_key, hash, unit, amount, req_policy, event_id, ctx = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
  local nscopes = tonumber(ARGV[8])
  local units = {}
  for u in string.gmatch(ARGV[10], '[^,]+') do units[#units + 1] = u end
  local scopes = {}
  for i = 1, nscopes do scopes[i] = ARGV[10 + i] end
  local now = now_ms()
  local prior = find_replay(KEYS[2], hash, now, idem_key)
  if prior then return { 'REPLAY', prior.status, prior.body } end
  local tenant = read_tenant(KEYS[1])
  if guard(tenant) == 'CLOSED' then fail('TENANT_CLOSED') end
  local budgets = resolve_budgets(4, scopes, units, unit)
  if budgets == 'NOT_FOUND' then fail('BUDGET_NOT_FOUND') end
  settle_guard(budgets)
  local policy = (not blank(req_policy) and req_policy) or (tenant and tenant.policy) or 'ALLOW_IF_AVAILABLE'
  local after, charged = charge_unheld(budgets, amount, policy)
  for _, b in ipairs(after) do write_budget(b, now) end
  local emitted = ''
  if transitions_fire(budgets, after) then
    emitted = emit(KEYS[3], 'event', now, ctx, ',"policy":' .. jstr(policy) .. ',"b":' .. budget_pairs_json(budgets, after))
  end
  local body = '{"status":"APPLIED","event_id":' .. jstr(event_id)
  if charged < amount then body = body .. ',"charged":' .. amt(unit, charged) end
  body = body .. ',"balances":' .. balances_json(after) .. '}'
  record(KEYS[2], hash, 201, body, '', now, horizon(now))
  return { 'OK', 201, body, emitted }
end)
`;
