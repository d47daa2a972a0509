/** The governance plane (cycles-governance-admin v0.1.25 shapes), assembled from one module per resource. */
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../http/app.js';
import { registerAuditRoutes } from './audit.js';
import { registerBudgetRoutes } from './budgets.js';
import { registerKeyRoutes } from './keys.js';
import { registerOverviewRoutes } from './overview.js';
import { registerPolicyRoutes } from './policies.js';
import { registerTenantRoutes } from './tenants.js';

export function registerAdminRoutes(app: FastifyInstance, deps: AppDeps): void {
  registerTenantRoutes(app, deps);
  registerBudgetRoutes(app, deps);
  registerPolicyRoutes(app, deps);
  registerKeyRoutes(app, deps);
  registerAuditRoutes(app, deps);
  registerOverviewRoutes(app, deps);
}
