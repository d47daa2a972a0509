/**
 * Error codes of the Cycles protocol and the HTTP status each one travels with.
 * The runtime plane's ErrorCode enum is a strict subset of the governance plane's;
 * runtime handlers must only raise runtime codes (strict clients validate the enum).
 */
export const ERROR_STATUS = {
  INVALID_REQUEST: 400,
  UNIT_MISMATCH: 400,
  WEBHOOK_URL_INVALID: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  INSUFFICIENT_PERMISSIONS: 403,
  NOT_FOUND: 404,
  TENANT_NOT_FOUND: 404,
  BUDGET_NOT_FOUND: 404,
  WEBHOOK_NOT_FOUND: 404,
  EVENT_NOT_FOUND: 404,
  BUDGET_EXCEEDED: 409,
  BUDGET_FROZEN: 409,
  BUDGET_CLOSED: 409,
  RESERVATION_FINALIZED: 409,
  IDEMPOTENCY_MISMATCH: 409,
  OVERDRAFT_LIMIT_EXCEEDED: 409,
  DEBT_OUTSTANDING: 409,
  MAX_EXTENSIONS_EXCEEDED: 409,
  TENANT_CLOSED: 409,
  DUPLICATE_RESOURCE: 409,
  KEY_REVOKED: 409,
  COUNT_MISMATCH: 409,
  REPLAY_IN_PROGRESS: 409,
  RESERVATION_EXPIRED: 410,
  LIMIT_EXCEEDED: 429,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class CyclesError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, status?: number) {
    super(message);
    this.name = 'CyclesError';
    this.code = code;
    this.status = status ?? ERROR_STATUS[code];
    this.details = details;
  }
}

export const invalid = (message: string, details?: Record<string, unknown>): CyclesError =>
  new CyclesError('INVALID_REQUEST', message, details);
