/**
 * The ceiling: a bare Fastify server that answers every GET and POST with one constant JSON body
 * the size of a reserve reply at scope depth 3. POST bodies are still parsed as JSON, as Fastify does
 * for any route, so the ceiling does the HTTP and JSON work every request needs and nothing else.
 * Run as its own process by the harness: PORT=<port> node --import tsx ceiling-server.ts
 */
import Fastify from 'fastify';

const balance = (scope: string) => ({
  scope,
  scope_path: scope,
  remaining: { unit: 'TOKENS', amount: 999999999999900 },
  reserved: { unit: 'TOKENS', amount: 100 },
  spent: { unit: 'TOKENS', amount: 0 },
  allocated: { unit: 'TOKENS', amount: 1000000000000000 },
  debt: { unit: 'TOKENS', amount: 0 },
  overdraft_limit: { unit: 'TOKENS', amount: 0 },
  is_over_limit: false,
});

const scopes = ['tenant:bench-t0', 'tenant:bench-t0/workspace:w1', 'tenant:bench-t0/workspace:w1/app:a2'];

/** Serialised once: the ceiling does no per-request work on the reply. */
const CEILING_BODY = JSON.stringify({
  decision: 'ALLOW',
  reservation_id: 'rsv_0123456789abcdef0123456789abcdef',
  reserved: { unit: 'TOKENS', amount: 100 },
  expires_at_ms: 1795254171456,
  remaining_ttl_ms: 3600000,
  scope_path: scopes[2],
  affected_scopes: scopes,
  balances: scopes.map(balance),
});

async function main(): Promise<void> {
  const app = Fastify({ logger: false });
  const constant = async (_req: unknown, reply: import('fastify').FastifyReply) =>
    reply.type('application/json; charset=utf-8').send(CEILING_BODY);
  app.get('/readyz', async () => ({ status: 'UP' }));
  app.route({ method: ['GET', 'POST'], url: '/*', handler: constant });
  await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
  const stop = () => void app.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

void main();
