/**
 * OpenTelemetry tracing, loaded with a dynamic import only when OTEL_EXPORTER_OTLP_ENDPOINT is
 * set: without it none of this code or the SDK is ever loaded, and no hook is installed.
 *
 * Every request gets a server span, and every store call a child span. The span's trace id is
 * the protocol's trace id (X-Cycles-Trace-Id): with a valid inbound traceparent the span joins
 * that trace; otherwise it is a root span whose id is forced to the one the server resolved
 * (from X-Cycles-Trace-Id or freshly generated), so logs, events, webhooks, error bodies and
 * traces all share one id. Spans are exported over OTLP/HTTP (JSON) in batches.
 */
import { randomHex } from '../ids.js';
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { NodeSDK } from '@opentelemetry/sdk-node';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';

export interface Tracing {
  tracer: Tracer;
  /** Installs the request-span hooks; call right after the hook that resolves the trace id. */
  install(app: FastifyInstance): void;
  /** Flushes buffered spans and stops the exporter. */
  shutdown(): Promise<void>;
}

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Set for the duration of one synchronous startSpan call: the id a root span must carry. */
let forcedTraceId: string | undefined;

const idGenerator = {
  generateTraceId: (): string => forcedTraceId ?? randomHex(16),
  generateSpanId: (): string => randomHex(8),
};

const spans = new WeakMap<FastifyRequest, Span>();

export async function startTracing(config: Config): Promise<Tracing> {
  const endpoint = config.otlpEndpoint!;
  const sdk = new NodeSDK({
    serviceName: config.otelServiceName,
    traceExporter: new OTLPTraceExporter({ url: process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || `${endpoint}/v1/traces` }),
    idGenerator,
    // Traces only: metrics are served to Prometheus, logs go to stdout.
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
    autoDetectResources: false,
  });
  sdk.start();
  const tracer = trace.getTracer('cycles');

  function startRequestSpan(req: FastifyRequest): Span {
    const inbound = req.headers['traceparent'];
    const header = typeof inbound === 'string' ? inbound.trim() : undefined;
    // The protocol already chose the trace id; a valid traceparent with that id is the parent.
    const parent =
      header && TRACEPARENT.test(header) && header.slice(3, 35) === req.cycles.traceId ? propagation.extract(ROOT_CONTEXT, { traceparent: header }) : ROOT_CONTEXT;
    forcedTraceId = req.cycles.traceId;
    try {
      return tracer.startSpan(
        `${req.method} ${req.routeOptions.url ?? 'unmatched'}`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            'http.request.method': req.method,
            'http.route': req.routeOptions.url ?? 'unmatched',
            'url.path': req.url.split('?', 1)[0],
            'cycles.request_id': req.cycles.requestId,
          },
        },
        parent,
      );
    } finally {
      forcedTraceId = undefined;
    }
  }

  return {
    tracer,
    install(app) {
      app.addHook('onRequest', (req: FastifyRequest, _reply: FastifyReply, done: () => void) => {
        const span = startRequestSpan(req);
        spans.set(req, span);
        // Everything after this hook (auth, handler, store calls) runs with the span active.
        context.with(trace.setSpan(context.active(), span), done);
      });
      app.addHook('onResponse', (req: FastifyRequest, reply: FastifyReply, done: () => void) => {
        const span = spans.get(req);
        if (span) {
          span.setAttribute('http.response.status_code', reply.statusCode);
          const p = req.cycles?.principal;
          if (p?.kind === 'tenant') span.setAttribute('cycles.tenant', p.tenantId);
          if (req.outcome?.errorCode) span.setAttribute('cycles.error', req.outcome.errorCode);
          if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
          span.end();
          spans.delete(req);
        }
        done();
      });
    },
    shutdown: () => sdk.shutdown(),
  };
}
