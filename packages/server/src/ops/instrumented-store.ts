/**
 * Wraps any Store so that every call is timed (cycles_store_operation_duration_seconds), traced
 * (a child span of the request when tracing is on), and classified: a failure of the store
 * itself (disk full, I/O error, lost connection) becomes SERVICE_UNAVAILABLE, answered 503 with
 * a clear message, and marks the store down for readiness until a call of the same kind
 * succeeds again. Backend-agnostic: the backend's StoreOps says what "unavailable" means.
 */
import type { Span, Tracer } from '@opentelemetry/api';
import { CyclesError } from '../ledger/errors.js';
import type { StoreOps } from '../store/ops.js';
import { KEY_WRITES } from '../security/key-cache.js';
import type { Store } from '../store/types.js';
import { storeOperationDuration, storeUp } from './metrics.js';

/** Calls that change state; their success proves the store accepts writes again. */
const WRITES = new Set<string>([
  'reserve', 'decide', 'commit', 'release', 'extend', 'createEvent', 'fundBudget',
  'createTenant', 'updateTenant', 'closeTenant', 'createApiKey', 'updateApiKey', 'createBudget', 'updateBudget',
  // The governance plane's own writes.
  'openTenant', 'changeTenant', 'bulkTenants', 'issueApiKey', 'changeApiKey', 'revokeApiKey', 'touchApiKey',
  'openBudget', 'changeBudget', 'bulkBudgets', 'createPolicy', 'changePolicy', 'appendAudit', 'appendEvents',
  'createWebhook', 'updateWebhook', 'deleteWebhook', 'enqueueReplay', 'completeDelivery', 'putMeta',
]);

/** Background calls that often write nothing: their failure counts, their success proves nothing. */
const MAINTENANCE = new Set<string>(['expireDue', 'purge', 'purgeEvents', 'putMetaIfAbsent', 'fanOutEvents', 'claimDeliveries']);

/** Not instrumented: lifecycle and the readiness probe itself. */
const PASS_THROUGH = new Set<string | symbol>(['close', 'ping', 'constructor', 'then']);

/** Whether the store currently answers, as seen by real traffic. */
export class StoreHealth {
  private down: { kind: 'read' | 'write'; reason: string; since: number } | undefined;

  markDown(kind: 'read' | 'write', reason: string): void {
    if (!this.down || kind === 'write') this.down = { kind, reason, since: this.down?.since ?? Date.now() };
    storeUp.set(0);
  }

  markUp(kind: 'read' | 'write'): void {
    if (!this.down || (this.down.kind === 'write' && kind === 'read')) return;
    this.down = undefined;
    storeUp.set(1);
  }

  /** Undefined while healthy; otherwise why and since when the last call failed. */
  problem(): { reason: string; since: number } | undefined {
    return this.down;
  }
}

export interface InstrumentOptions {
  ops: StoreOps;
  health: StoreHealth;
  tracer?: Tracer | undefined;
  /** Cleared before and after every call that can change an API key (security/key-cache.ts). */
  keyCache?: { invalidate(): void } | undefined;
}

function unavailable(name: string, err: unknown): CyclesError {
  const detail = err instanceof Error ? err.message : String(err);
  return new CyclesError('SERVICE_UNAVAILABLE', `The store is unavailable (${name}: ${detail}); nothing was written, retry with the same idempotency key`);
}

export function instrumentStore(store: Store, opts: InstrumentOptions): Store {
  const { ops, health, tracer, keyCache } = opts;
  // Keyed by the function itself, so a method replaced on the backend is wrapped afresh.
  const wrapped = new WeakMap<object, unknown>();
  const sync = new Set<string>();

  const wrap = (name: string, fn: (...args: unknown[]) => unknown) => {
    const kind = WRITES.has(name) || MAINTENANCE.has(name) ? 'write' : 'read';
    const proves = !MAINTENANCE.has(name);
    const keyWrite = KEY_WRITES.has(name);
    const timer = {
      ok: storeOperationDuration.labels(name, 'ok'),
      error: storeOperationDuration.labels(name, 'error'),
      unavailable: storeOperationDuration.labels(name, 'unavailable'),
    };
    const succeeded = (start: number, span: Span | undefined) => {
      timer.ok.observe((performance.now() - start) / 1000);
      if (proves) health.markUp(kind);
      span?.end();
    };
    const failed = (start: number, span: Span | undefined, err: unknown): unknown => {
      const down = ops.isUnavailable(err) || (err instanceof CyclesError && err.code === 'SERVICE_UNAVAILABLE');
      (down ? timer.unavailable : timer.error).observe((performance.now() - start) / 1000);
      if (down) health.markDown(kind, err instanceof Error ? err.message : String(err));
      if (span) {
        span.setStatus({ code: down ? 2 : 0, message: err instanceof Error ? err.message : undefined });
        span.setAttribute('cycles.outcome', down ? 'unavailable' : err instanceof CyclesError ? err.code : 'error');
        span.end();
      }
      return down && !(err instanceof CyclesError) ? unavailable(name, err) : err;
    };
    const call = (...args: unknown[]): unknown => {
      const start = performance.now();
      const span: Span | undefined = tracer?.startSpan(`store.${name}`, { attributes: { 'db.system': store.kind, 'db.operation': name } });
      let result: unknown;
      try {
        result = fn.apply(store, args);
      } catch (e) {
        throw failed(start, span, e);
      }
      if (!(result instanceof Promise)) {
        // A synchronous backend helper, not a store call: leave it out of the metrics from now on.
        span?.end();
        sync.add(name);
        return result;
      }
      return result.then(
        (value) => {
          succeeded(start, span);
          return value;
        },
        (err: unknown) => {
          throw failed(start, span, err);
        },
      );
    };
    if (!keyWrite || keyCache === undefined) return call;
    // Cleared before (lookups already in flight will not be remembered) and once the write has
    // settled (nothing read before it committed survives it), success or not.
    const forget = () => keyCache.invalidate();
    return (...args: unknown[]): unknown => {
      forget();
      let result: unknown;
      try {
        result = call(...args);
      } finally {
        if (!(result instanceof Promise)) forget();
      }
      if (result instanceof Promise) return result.finally(forget);
      return result;
    };
  };

  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || PASS_THROUGH.has(prop) || typeof prop !== 'string' || sync.has(prop)) return value;
      let w = wrapped.get(value);
      if (!w) {
        w = wrap(prop, value as (...args: unknown[]) => unknown);
        wrapped.set(value, w);
      }
      return w;
    },
  });
}
