import type { FastifyRequest } from 'fastify';

/**
 * The matched route's options (its config and URL), read once per request. Fastify's
 * `request.routeOptions` getter builds a new object on every access, and the server's hooks
 * asked for it about ten times per request. Requests that never reached the first hook (router
 * errors) read it directly.
 */
export const routeOf = (req: FastifyRequest): FastifyRequest['routeOptions'] => req.cycles?.route ?? req.routeOptions;
