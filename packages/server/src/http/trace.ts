import { randomHex } from '../ids.js';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const TRACE_ID = /^[0-9a-f]{32}$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface TraceContext {
  traceId: string;
  /** Flags of a valid inbound traceparent, propagated to downstream work. */
  traceFlags: string | undefined;
}

function newTraceId(): string {
  let id: string;
  do id = randomHex(16);
  while (id === ZERO_TRACE);
  return id;
}

/**
 * The protocol's trace-id rule: a valid W3C traceparent wins, then a valid X-Cycles-Trace-Id,
 * else a fresh id. Malformed headers are treated as absent, never rejected.
 */
export function resolveTrace(traceparent: unknown, cyclesTraceId: unknown): TraceContext {
  if (typeof traceparent === 'string') {
    const m = TRACEPARENT.exec(traceparent.trim());
    if (m && m[1] !== ZERO_TRACE && m[2] !== ZERO_SPAN) return { traceId: m[1]!, traceFlags: m[3] };
  }
  if (typeof cyclesTraceId === 'string' && TRACE_ID.test(cyclesTraceId) && cyclesTraceId !== ZERO_TRACE) {
    return { traceId: cyclesTraceId, traceFlags: undefined };
  }
  return { traceId: newTraceId(), traceFlags: undefined };
}

/** Echo a well-formed inbound X-Request-Id; otherwise issue one. */
export function resolveRequestId(inbound: unknown): string {
  if (typeof inbound === 'string' && REQUEST_ID.test(inbound)) return inbound;
  return `req_${randomHex(12)}`;
}
