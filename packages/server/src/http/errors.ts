import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CyclesError, type ErrorCode } from '../ledger/errors.js';
import { LimitExceeded, limitHeaders } from '../ops/limits.js';
import { noteErrorCode } from '../ops/observe.js';

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** Turns "/estimate/amount" into "estimate.amount" so messages name the field as clients wrote it. */
function fieldName(context: string, instancePath: string): string {
  const path = instancePath.replace(/^\//, '').replace(/\//g, '.');
  return path || context;
}

/** A readable message naming the offending field for a request-validation failure. */
export function describeValidation(context: string, errors: AjvError[]): { message: string; field: string } {
  const e = errors[0];
  if (!e) return { message: `Invalid ${context}`, field: context };
  const field = fieldName(context, e.instancePath);
  const p = e.params;
  switch (e.keyword) {
    case 'additionalProperties':
      return { message: `${field === context ? context : field} has unknown property "${String(p.additionalProperty)}"`, field: `${field === context ? '' : field + '.'}${String(p.additionalProperty)}` };
    case 'required': {
      const missing = `${field === context ? '' : field + '.'}${String(p.missingProperty)}`;
      return { message: `${missing} is required`, field: missing };
    }
    case 'enum':
      return { message: `${field} must be one of ${(p.allowedValues as unknown[]).join(', ')}`, field };
    case 'type':
      return { message: `${field} must be of type ${String(p.type)}`, field };
    default:
      return { message: `${field} ${e.message ?? 'is invalid'}`, field };
  }
}

export interface ErrorBody {
  error: ErrorCode;
  message: string;
  request_id: string;
  trace_id: string;
  details?: Record<string, unknown>;
}

export function errorBody(req: FastifyRequest, code: ErrorCode, message: string, details?: Record<string, unknown>): ErrorBody {
  noteErrorCode(req, code);
  const body: ErrorBody = { error: code, message, request_id: req.cycles.requestId, trace_id: req.cycles.traceId };
  if (details && Object.keys(details).length > 0) body.details = details;
  return body;
}

export function sendError(req: FastifyRequest, reply: FastifyReply, err: CyclesError): FastifyReply {
  if (err.code === 'SERVICE_UNAVAILABLE') {
    // Not a protocol code: the store is unreachable. Clients retry on 503.
    const body = errorBody(req, 'INTERNAL_ERROR', err.message);
    noteErrorCode(req, 'SERVICE_UNAVAILABLE');
    return reply.code(503).header('retry-after', '1').send(body);
  }
  if (err instanceof LimitExceeded) limitHeaders(reply, err);
  return reply.code(err.status).send(errorBody(req, err.code, err.message, err.details));
}

/**
 * Maps every failure to the protocol's ErrorResponse. Client mistakes are 400s that name
 * the problem; anything unexpected is a 500 without internals (the log keeps the stack).
 */
export function errorHandler(error: FastifyError | CyclesError | Error, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (error instanceof CyclesError) return sendError(req, reply, error);
  const fe = error as FastifyError & { validation?: AjvError[]; validationContext?: string };
  if (fe.validation) {
    const { message, field } = describeValidation(fe.validationContext ?? 'body', fe.validation);
    return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', message, { field }));
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', `Request body exceeds the limit of ${req.routeOptions.bodyLimit ?? 0} bytes`));
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', 'Content-Type must be application/json'));
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', 'Request body is empty; a JSON object is required'));
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', 'Content-Length does not match the body'));
  }
  if (fe.statusCode === 400 || error instanceof SyntaxError) {
    return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', `Malformed JSON body: ${error.message}`));
  }
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return reply.code(400).send(errorBody(req, 'INVALID_REQUEST', error.message));
  }
  req.log.error({ err: error }, 'unhandled error');
  return reply.code(500).send(errorBody(req, 'INTERNAL_ERROR', 'Internal server error'));
}
