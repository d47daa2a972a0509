/** Every Lua script of the Redis backend, named and hashed once. */
import { LuaScript } from './conn.js';
import { TX_SCRIPTS } from './tx.js';
import {
  CREATE_API_KEY,
  CREATE_BUDGET,
  CREATE_IF_ABSENT,
  LEASE_RELEASE,
  PATCH_IF_PRESENT,
  PURGE_RESERVATIONS,
  REGISTRY_SETTLE,
  REGISTRY_TOUCH,
  UPDATE_BUDGET,
} from './lua/admin.js';
import { DIRECT_DEBIT } from './lua/charge.js';
import { EVALUATE } from './lua/evaluate.js';
import { EXPIRE, SETTLE } from './lua/settle.js';

export const SCRIPTS = {
  evaluate: new LuaScript('evaluate', EVALUATE),
  settle: new LuaScript('settle', SETTLE),
  expire: new LuaScript('expire', EXPIRE),
  directDebit: new LuaScript('direct_debit', DIRECT_DEBIT),
  createIfAbsent: new LuaScript('create_if_absent', CREATE_IF_ABSENT),
  patchIfPresent: new LuaScript('patch_if_present', PATCH_IF_PRESENT),
  createBudget: new LuaScript('create_budget', CREATE_BUDGET),
  updateBudget: new LuaScript('update_budget', UPDATE_BUDGET),
  createApiKey: new LuaScript('create_api_key', CREATE_API_KEY),
  registryTouch: new LuaScript('registry_touch', REGISTRY_TOUCH),
  registrySettle: new LuaScript('registry_settle', REGISTRY_SETTLE),
  leaseRelease: new LuaScript('lease_release', LEASE_RELEASE),
  purgeReservations: new LuaScript('purge_reservations', PURGE_RESERVATIONS),
} as const;

/** Every script, for preloading on connect. */
export const ALL_SCRIPTS: readonly LuaScript[] = [...Object.values(SCRIPTS), ...TX_SCRIPTS];
