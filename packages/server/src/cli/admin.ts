/**
 * `cycles admin ...`: the everyday governance operations against a running server over HTTP
 * (tenants, API keys, budgets, funding, policies, audit tail, overview). Readable tables by
 * default; --json prints the server's JSON as is.
 */
import { randomUUID } from 'node:crypto';
import { Command, Option } from 'commander';
import { AdminCliError, AdminClient, amountOf, details, table, type Json } from './admin-client.js';

interface GlobalOpts {
  url: string;
  adminKey?: string;
  json?: boolean;
}

const UNITS = ['USD_MICROCENTS', 'TOKENS', 'CREDITS', 'RISK_POINTS'];
const OVERAGE = ['REJECT', 'ALLOW_IF_AVAILABLE', 'ALLOW_WITH_OVERDRAFT'];
const FUNDING = ['CREDIT', 'DEBIT', 'RESET', 'RESET_SPENT', 'REPAY_DEBT'];

const int = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new AdminCliError(`${name} must be a non-negative integer (got "${v}")`, 2);
  return n;
};
const collect = (v: string, prev: string[] = []): string[] => [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
const upper = (allowed: string[], name: string) => (v: string): string => {
  const u = v.toUpperCase();
  if (!allowed.includes(u)) throw new AdminCliError(`${name} must be one of ${allowed.join(', ')} (got "${v}")`, 2);
  return u;
};

const TENANT_COLUMNS: Array<[string, (r: Json) => unknown]> = [
  ['TENANT', (r) => r.tenant_id],
  ['NAME', (r) => r.name],
  ['STATUS', (r) => r.status],
  ['PARENT', (r) => r.parent_tenant_id],
  ['CREATED', (r) => r.created_at],
];
const KEY_COLUMNS: Array<[string, (r: Json) => unknown]> = [
  ['KEY', (r) => r.key_id],
  ['TENANT', (r) => r.tenant_id],
  ['NAME', (r) => r.name],
  ['STATUS', (r) => r.status],
  ['PREFIX', (r) => r.key_prefix],
  ['EXPIRES', (r) => r.expires_at],
  ['LAST USED', (r) => r.last_used_at],
];
const BUDGET_COLUMNS: Array<[string, (r: Json) => unknown]> = [
  ['SCOPE', (r) => r.scope],
  ['UNIT', (r) => r.unit],
  ['STATUS', (r) => r.status],
  ['ALLOCATED', (r) => r.allocated],
  ['REMAINING', (r) => r.remaining],
  ['RESERVED', (r) => r.reserved],
  ['SPENT', (r) => r.spent],
  ['DEBT', (r) => r.debt],
  ['UTIL', (r) => utilization(r)],
];
const POLICY_COLUMNS: Array<[string, (r: Json) => unknown]> = [
  ['POLICY', (r) => r.policy_id],
  ['NAME', (r) => r.name],
  ['PATTERN', (r) => r.scope_pattern],
  ['PRIORITY', (r) => r.priority],
  ['STATUS', (r) => r.status],
  ['CAPS', (r) => r.caps],
  ['OVERAGE', (r) => r.commit_overage_policy],
];
const AUDIT_COLUMNS: Array<[string, (r: Json) => unknown]> = [
  ['TIME', (r) => r.timestamp],
  ['TENANT', (r) => r.tenant_id],
  ['OPERATION', (r) => r.operation],
  ['STATUS', (r) => r.status],
  ['ERROR', (r) => r.error_code],
  ['RESOURCE', (r) => r.resource_id],
  ['ACTOR', (r) => (r.metadata as Json | undefined)?.actor_type],
  ['REQUEST', (r) => r.request_id],
];

function utilization(r: Json): string {
  const a = Number(amountOf(r.allocated));
  const s = Number(amountOf(r.spent));
  return a > 0 ? `${Math.round((s / a) * 1000) / 10}%` : '0%';
}

/** Adds the `admin` command tree to the program. */
export function registerAdminCommand(program: Command, out: (s: string) => void = (s) => process.stdout.write(s + '\n')): Command {
  const admin = program
    .command('admin')
    .description('manage tenants, API keys, budgets, policies and the audit log of a running server')
    .option('--url <url>', 'server URL (env CYCLES_URL)', process.env.CYCLES_URL ?? 'http://127.0.0.1:7878')
    .option('--admin-key <key>', 'admin API key (env ADMIN_API_KEY)', process.env.ADMIN_API_KEY)
    .option('--json', 'print the JSON responses instead of tables');

  const ctx = (cmd: Command): { client: AdminClient; json: boolean } => {
    const o = cmd.optsWithGlobals<GlobalOpts>();
    if (!o.adminKey) throw new AdminCliError('the admin key is required: pass --admin-key or set ADMIN_API_KEY', 2);
    return { client: new AdminClient({ url: o.url.replace(/\/$/, ''), adminKey: o.adminKey }), json: o.json === true };
  };
  /** Prints one object: JSON, or key/value lines. */
  const show = (json: boolean, obj: Json, human?: string) => out(json ? JSON.stringify(obj, null, 2) : (human ?? details(obj)));
  const showList = (json: boolean, wrapper: string, res: { rows: Json[]; next?: string }, columns: Array<[string, (r: Json) => unknown]>) => {
    if (json) return out(JSON.stringify({ [wrapper]: res.rows, ...(res.next ? { next_cursor: res.next, has_more: true } : { has_more: false }) }, null, 2));
    out(res.rows.length === 0 ? `(no ${wrapper})` : table(res.rows, columns));
    if (res.next) out(`more: --cursor ${res.next}  (or --all)`);
  };
  const paging = (c: Command) => c.option('--limit <n>', 'rows per page (1-100)', int('limit')).option('--cursor <cursor>', 'continue a previous listing').option('--all', 'fetch every page');
  const sorting = (c: Command, keys: string[]) => c.addOption(new Option('--sort-by <field>', 'sort key').choices(keys)).addOption(new Option('--sort-dir <dir>', 'sort direction').choices(['asc', 'desc']));

  admin
    .command('overview')
    .description('dashboard summary: tenants, budgets over limit or in debt, recent denials')
    .action(async (_o, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const o = await client.call('GET', '/v1/admin/overview');
      if (json) return show(true, o);
      const t = o.tenant_counts as Json;
      const b = o.budget_counts as Json;
      out(`tenants   ${t.total} total, ${t.active} active, ${t.suspended} suspended, ${t.closed} closed`);
      out(`budgets   ${b.total} total, ${b.active} active, ${b.frozen} frozen, ${b.closed} closed, ${b.over_limit} over limit, ${b.with_debt} in debt`);
      const w = o.webhook_counts as Json;
      out(`webhooks  ${w.total} total, ${w.active} active, ${w.disabled} disabled, ${w.with_failures} failing`);
      out(`events    ${(o.event_counts as Json).total_recent} in the last ${o.event_window_seconds}s`);
      const debt = o.debt_scopes as Json[];
      if (debt.length > 0) out('\n' + table(debt, [['SCOPE IN DEBT', (r) => r.scope], ['UNIT', (r) => r.unit], ['DEBT', (r) => r.debt], ['OVERDRAFT LIMIT', (r) => r.overdraft_limit]]));
    });

  // ---- tenants ----
  const tenants = admin.command('tenants').description('tenants: list, get, create, update, suspend, reactivate, close');
  sorting(paging(tenants.command('list').description('list tenants')), ['tenant_id', 'name', 'status', 'created_at'])
    .option('--status <status>', 'ACTIVE, SUSPENDED or CLOSED')
    .option('--parent <tenant>', 'children of this tenant')
    .option('--search <text>', 'substring of id or name')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const res = await client.list('/v1/admin/tenants', 'tenants', { status: o.status as string, parent_tenant_id: o.parent as string, search: o.search as string, sort_by: o.sortBy as string, sort_dir: o.sortDir as string, limit: o.limit as number, cursor: o.cursor as string }, o.all === true);
      showList(json, 'tenants', res, TENANT_COLUMNS);
    });
  tenants.command('get <tenant>').description('show one tenant').action(async (id: string, _o, cmd: Command) => {
    const { client, json } = ctx(cmd);
    show(json, await client.call('GET', `/v1/admin/tenants/${encodeURIComponent(id)}`));
  });
  const tenantSettings = (c: Command) =>
    c
      .option('--default-overage <policy>', 'default commit overage policy', upper(OVERAGE, 'default-overage'))
      .option('--default-ttl <ms>', 'default reservation TTL', int('default-ttl'))
      .option('--max-ttl <ms>', 'maximum reservation TTL', int('max-ttl'))
      .option('--max-extensions <n>', 'maximum extensions per reservation', int('max-extensions'));
  const settingsBody = (o: Json): Json => ({
    default_commit_overage_policy: o.defaultOverage,
    default_reservation_ttl_ms: o.defaultTtl,
    max_reservation_ttl_ms: o.maxTtl,
    max_reservation_extensions: o.maxExtensions,
  });
  tenantSettings(tenants.command('create <tenant>').description('create a tenant (idempotent for the same name)'))
    .requiredOption('--name <name>', 'display name')
    .option('--parent <tenant>', 'parent tenant')
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('POST', '/v1/admin/tenants', {}, { tenant_id: id, name: o.name, parent_tenant_id: o.parent, ...settingsBody(o) }));
    });
  tenantSettings(tenants.command('update <tenant>').description('change a tenant\'s name or reservation defaults'))
    .option('--name <name>', 'display name')
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('PATCH', `/v1/admin/tenants/${encodeURIComponent(id)}`, {}, { name: o.name, ...settingsBody(o) }));
    });
  for (const [verb, status, what] of [
    ['suspend', 'SUSPENDED', 'block new reservations (work in flight may finish)'],
    ['reactivate', 'ACTIVE', 'lift a suspension'],
    ['close', 'CLOSED', 'close for good: budgets closed, keys revoked, open reservations released'],
  ] as const) {
    const c = tenants.command(`${verb} <tenant>`).description(what);
    if (verb === 'close') c.option('--yes', 'confirm (closing cannot be undone)');
    c.action(async (id: string, o: Json, cmd: Command) => {
      if (verb === 'close' && o.yes !== true) throw new AdminCliError('closing a tenant cannot be undone; add --yes to confirm', 2);
      const { client, json } = ctx(cmd);
      const t = await client.call('PATCH', `/v1/admin/tenants/${encodeURIComponent(id)}`, {}, { status });
      show(json, t, `tenant ${String(t.tenant_id)} is ${String(t.status)}`);
    });
  }

  // ---- API keys ----
  const keys = admin.command('keys').description('API keys: list, create, update, revoke, rotate, validate');
  sorting(paging(keys.command('list').description('list API keys (secrets are never shown)')), ['key_id', 'name', 'tenant_id', 'status', 'created_at', 'expires_at'])
    .option('--tenant <tenant>', 'keys of one tenant')
    .option('--status <status>', 'ACTIVE, REVOKED or EXPIRED')
    .option('--search <text>', 'substring of key id or name')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const res = await client.list('/v1/admin/api-keys', 'keys', { tenant_id: o.tenant as string, status: o.status as string, search: o.search as string, sort_by: o.sortBy as string, sort_dir: o.sortDir as string, limit: o.limit as number, cursor: o.cursor as string }, o.all === true);
      showList(json, 'keys', res, KEY_COLUMNS);
    });
  const keyFields = (c: Command) =>
    c
      .option('--permission <p...>', 'permission (repeat or comma-separate); default: the ten tenant permissions', collect)
      .option('--scope-filter <s...>', 'scope segments the key may touch, e.g. workspace:eng or agent:*', collect)
      .option('--description <text>', 'description');
  const printSecret = (json: boolean, k: Json, note: string) =>
    show(json, k, `${note}\nkey_id      ${String(k.key_id)}\ntenant      ${String(k.tenant_id)}\nexpires_at  ${String(k.expires_at)}\nsecret      ${String(k.key_secret)}   (shown once; store it now)`);
  keyFields(keys.command('create').description('create an API key (the secret is shown once)'))
    .requiredOption('--tenant <tenant>', 'owning tenant')
    .requiredOption('--name <name>', 'key name')
    .option('--expires-at <iso>', 'expiry (default 90 days)')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const k = await client.call('POST', '/v1/admin/api-keys', {}, { tenant_id: o.tenant, name: o.name, description: o.description, permissions: o.permission, scope_filter: o.scopeFilter, expires_at: o.expiresAt });
      printSecret(json, k, 'created');
    });
  keyFields(keys.command('update <key_id>').description('replace a key\'s permissions, scope filter, name or description'))
    .option('--name <name>', 'key name')
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('PATCH', `/v1/admin/api-keys/${encodeURIComponent(id)}`, {}, { name: o.name, description: o.description, permissions: o.permission, scope_filter: o.scopeFilter }));
    });
  keys
    .command('revoke <key_id>')
    .description('revoke a key (effective on its next request; permanent)')
    .option('--reason <text>', 'why')
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const k = await client.call('DELETE', `/v1/admin/api-keys/${encodeURIComponent(id)}`, { reason: o.reason as string });
      show(json, k, `key ${String(k.key_id)} is ${String(k.status)}`);
    });
  keys
    .command('rotate <key_id>')
    .description('create a replacement with the same tenant, name, permissions and scope filter, then revoke the old key')
    .option('--expires-at <iso>', 'expiry of the new key (default 90 days)')
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const found = await client.list('/v1/admin/api-keys', 'keys', { search: id, limit: 100 }, true);
      const old = found.rows.find((k) => k.key_id === id);
      if (!old) throw new AdminCliError(`API key ${id} not found`);
      if (old.status !== 'ACTIVE') throw new AdminCliError(`API key ${id} is ${String(old.status)}; only an ACTIVE key can be rotated`);
      const fresh = await client.call('POST', '/v1/admin/api-keys', {}, {
        tenant_id: old.tenant_id,
        name: old.name,
        description: old.description,
        permissions: old.permissions,
        scope_filter: old.scope_filter,
        metadata: old.metadata,
        expires_at: o.expiresAt,
      });
      await client.call('DELETE', `/v1/admin/api-keys/${encodeURIComponent(id)}`, { reason: `rotated to ${String(fresh.key_id)}` });
      printSecret(json, { ...fresh, rotated_from: id }, `rotated: ${id} is revoked`);
    });
  keys
    .command('validate <secret>')
    .description('check a key secret (valid, tenant, permissions, or why not)')
    .action(async (secret: string, _o, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('POST', '/v1/auth/validate', {}, { key_secret: secret }));
    });

  // ---- budgets and funding ----
  const budgets = admin.command('budgets').description('budgets: list, get, create, update, freeze, unfreeze');
  sorting(paging(budgets.command('list').description('list budgets (all tenants unless --tenant)')), ['tenant_id', 'scope', 'unit', 'status', 'commit_overage_policy', 'utilization', 'debt'])
    .option('--tenant <tenant>', 'budgets of one tenant')
    .option('--scope-prefix <scope>', 'a scope and everything below it')
    .option('--unit <unit>', 'unit', upper(UNITS, 'unit'))
    .option('--status <status>', 'ACTIVE, FROZEN or CLOSED')
    .option('--over-limit', 'only budgets over their overdraft limit')
    .option('--has-debt', 'only budgets with debt')
    .option('--utilization-min <fraction>', 'spent / allocated at least (0-1)')
    .option('--utilization-max <fraction>', 'spent / allocated at most (0-1)')
    .option('--search <text>', 'substring of tenant or scope')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const res = await client.list(
        '/v1/admin/budgets',
        'ledgers',
        {
          tenant_id: o.tenant as string,
          scope_prefix: o.scopePrefix as string,
          unit: o.unit as string,
          status: o.status as string,
          over_limit: o.overLimit === true ? true : undefined,
          has_debt: o.hasDebt === true ? true : undefined,
          utilization_min: o.utilizationMin as string,
          utilization_max: o.utilizationMax as string,
          search: o.search as string,
          sort_by: o.sortBy as string,
          sort_dir: o.sortDir as string,
          limit: o.limit as number,
          cursor: o.cursor as string,
        },
        o.all === true,
      );
      showList(json, 'ledgers', res, BUDGET_COLUMNS);
    });
  budgets.command('get <scope> <unit>').description('show one budget').action(async (scope: string, unit: string, _o, cmd: Command) => {
    const { client, json } = ctx(cmd);
    show(json, await client.call('GET', '/v1/admin/budgets/lookup', { scope, unit: upper(UNITS, 'unit')(unit) }));
  });
  budgets
    .command('create <scope> <unit> <allocated>')
    .description('create a budget; the tenant is the one the scope starts with')
    .option('--overdraft-limit <n>', 'debt allowed (ALLOW_WITH_OVERDRAFT)', int('overdraft-limit'))
    .option('--overage-policy <policy>', 'commit overage policy of this scope', upper(OVERAGE, 'overage-policy'))
    .action(async (scope: string, unitRaw: string, allocated: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const unit = upper(UNITS, 'unit')(unitRaw);
      const body: Json = { tenant_id: tenantOfScope(scope), scope, unit, allocated: { unit, amount: int('allocated')(allocated) }, commit_overage_policy: o.overagePolicy };
      if (o.overdraftLimit !== undefined) body.overdraft_limit = { unit, amount: o.overdraftLimit };
      show(json, await client.call('POST', '/v1/admin/budgets', {}, body));
    });
  budgets
    .command('update <scope> <unit>')
    .description('change a budget\'s overdraft limit or overage policy')
    .option('--overdraft-limit <n>', 'debt allowed', int('overdraft-limit'))
    .option('--overage-policy <policy>', 'commit overage policy', upper(OVERAGE, 'overage-policy'))
    .action(async (scope: string, unitRaw: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const unit = upper(UNITS, 'unit')(unitRaw);
      const body: Json = { commit_overage_policy: o.overagePolicy };
      if (o.overdraftLimit !== undefined) body.overdraft_limit = { unit, amount: o.overdraftLimit };
      show(json, await client.call('PATCH', '/v1/admin/budgets', { scope, unit }, body));
    });
  for (const verb of ['freeze', 'unfreeze'] as const) {
    budgets
      .command(`${verb} <scope> <unit>`)
      .description(verb === 'freeze' ? 'stop reservations, commits and funding on a budget' : 'resume a frozen budget')
      .option('--reason <text>', 'why (recorded on the event and audit entry)')
      .action(async (scope: string, unitRaw: string, o: Json, cmd: Command) => {
        const { client, json } = ctx(cmd);
        const b = await client.call('POST', `/v1/admin/budgets/${verb}`, { scope, unit: upper(UNITS, 'unit')(unitRaw) }, { reason: o.reason });
        show(json, b, `${String(b.scope)} (${String(b.unit)}) is ${String(b.status)}`);
      });
  }
  admin
    .command('fund <scope> <unit> <operation> <amount>')
    .description(`fund a budget: ${FUNDING.join(', ')}`)
    .option('--spent <n>', 'RESET_SPENT only: the new period starts with this much spent', int('spent'))
    .option('--reason <text>', 'why (recorded on the event)')
    .option('--idempotency-key <key>', 'retry-safe key (default: a fresh one)')
    .action(async (scope: string, unitRaw: string, opRaw: string, amount: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const unit = upper(UNITS, 'unit')(unitRaw);
      const body: Json = { operation: upper(FUNDING, 'operation')(opRaw), amount: { unit, amount: int('amount')(amount) }, reason: o.reason, idempotency_key: (o.idempotencyKey as string | undefined) ?? `cli-${randomUUID()}` };
      if (o.spent !== undefined) body.spent = { unit, amount: o.spent };
      const r = await client.call('POST', '/v1/admin/budgets/fund', { tenant_id: tenantOfScope(scope), scope, unit }, body);
      show(
        json,
        r,
        table([r], [
          ['OPERATION', (x) => x.operation],
          ['ALLOCATED', (x) => `${String(amountOf(x.previous_allocated))} -> ${String(amountOf(x.new_allocated))}`],
          ['REMAINING', (x) => `${String(amountOf(x.previous_remaining))} -> ${String(amountOf(x.new_remaining))}`],
          ['SPENT', (x) => `${String(amountOf(x.previous_spent))} -> ${String(amountOf(x.new_spent))}`],
          ['DEBT', (x) => `${String(amountOf(x.previous_debt))} -> ${String(amountOf(x.new_debt))}`],
        ]),
      );
    });

  // ---- policies ----
  const policies = admin.command('policies').description('policies: list, create, update');
  paging(policies.command('list').description('list a tenant\'s policies'))
    .requiredOption('--tenant <tenant>', 'owning tenant')
    .option('--status <status>', 'ACTIVE or DISABLED')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const res = await client.list('/v1/admin/policies', 'policies', { tenant_id: o.tenant as string, status: o.status as string, limit: o.limit as number, cursor: o.cursor as string }, o.all === true);
      showList(json, 'policies', res, POLICY_COLUMNS);
    });
  const policyFields = (c: Command) =>
    c
      .option('--priority <n>', 'higher wins when several match', int('priority'))
      .option('--description <text>', 'description')
      .option('--max-tokens <n>', 'cap: max_tokens', int('max-tokens'))
      .option('--max-steps <n>', 'cap: max_steps_remaining', int('max-steps'))
      .option('--tool-allow <tools...>', 'cap: tool_allowlist', collect)
      .option('--tool-deny <tools...>', 'cap: tool_denylist', collect)
      .option('--cooldown-ms <n>', 'cap: cooldown_ms', int('cooldown-ms'))
      .option('--overage-policy <policy>', 'default commit overage policy', upper(OVERAGE, 'overage-policy'))
      .option('--default-ttl <ms>', 'default reservation TTL', int('default-ttl'))
      .option('--max-ttl <ms>', 'maximum reservation TTL', int('max-ttl'))
      .option('--max-extensions <n>', 'maximum extensions', int('max-extensions'))
      .option('--effective-from <iso>', 'start of the effective window')
      .option('--effective-until <iso>', 'end of the effective window');
  const policyBody = (o: Json): Json => {
    const caps: Json = { max_tokens: o.maxTokens, max_steps_remaining: o.maxSteps, tool_allowlist: o.toolAllow, tool_denylist: o.toolDeny, cooldown_ms: o.cooldownMs };
    const ttl: Json = { default_ttl_ms: o.defaultTtl, max_ttl_ms: o.maxTtl, max_extensions: o.maxExtensions };
    const some = (x: Json) => Object.values(x).some((v) => v !== undefined);
    return {
      priority: o.priority,
      description: o.description,
      caps: some(caps) ? caps : undefined,
      commit_overage_policy: o.overagePolicy,
      reservation_ttl_override: some(ttl) ? ttl : undefined,
      effective_from: o.effectiveFrom,
      effective_until: o.effectiveUntil,
    };
  };
  policyFields(policies.command('create').description('create a policy for the scopes matching a pattern'))
    .requiredOption('--tenant <tenant>', 'owning tenant')
    .requiredOption('--name <name>', 'policy name (unique per tenant)')
    .requiredOption('--scope-pattern <pattern>', 'e.g. tenant:acme/* or tenant:acme/agent:*')
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('POST', '/v1/admin/policies', {}, { tenant_id: o.tenant, name: o.name, scope_pattern: o.scopePattern, ...policyBody(o) }));
    });
  policyFields(policies.command('update <policy_id>').description('change a policy (fields not given are kept)'))
    .option('--name <name>', 'policy name')
    .option('--status <status>', 'ACTIVE or DISABLED', upper(['ACTIVE', 'DISABLED'], 'status'))
    .action(async (id: string, o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      show(json, await client.call('PATCH', `/v1/admin/policies/${encodeURIComponent(id)}`, {}, { name: o.name, status: o.status, ...policyBody(o) }));
    });

  // ---- audit ----
  const audit = admin.command('audit').description('the audit log');
  audit
    .command('tail')
    .description('the latest audit entries, oldest first; --follow keeps polling')
    .option('--tenant <tenant>', 'one tenant (or __admin__ / __unauth__)')
    .option('--operation <ops...>', 'operation ids', collect)
    .option('--errors', 'only failed requests (status >= 400)')
    .option('-n, --limit <n>', 'how many entries to show first (1-100)', int('limit'), 20)
    .option('-f, --follow', 'keep printing new entries')
    .option('--interval <ms>', 'poll interval with --follow', int('interval'), 2000)
    .action(async (o: Json, cmd: Command) => {
      const { client, json } = ctx(cmd);
      const filter = { tenant_id: o.tenant as string, operation: (o.operation as string[] | undefined)?.join(','), status_min: o.errors === true ? 400 : undefined };
      const seen = new Set<string>();
      let since: string | undefined;
      const print = (rows: Json[]) => {
        const fresh = rows.filter((r) => !seen.has(r.log_id as string)).reverse();
        for (const r of fresh) seen.add(r.log_id as string);
        if (fresh.length === 0) return;
        since = String(fresh[fresh.length - 1]!.timestamp);
        if (json) for (const r of fresh) out(JSON.stringify(r));
        else out(table(fresh, AUDIT_COLUMNS));
      };
      const first = await client.call('GET', '/v1/admin/audit/logs', { ...filter, limit: o.limit as number, sort_by: 'timestamp', sort_dir: 'desc' });
      print((first.logs as Json[]) ?? []);
      if (!json && seen.size === 0) out('(no audit entries)');
      while (o.follow === true) {
        await new Promise((r) => setTimeout(r, o.interval as number));
        const page = await client.call('GET', '/v1/admin/audit/logs', { ...filter, from: since, limit: 100, sort_by: 'timestamp', sort_dir: 'desc' });
        print((page.logs as Json[]) ?? []);
      }
    });

  return admin;
}

/** The tenant a scope belongs to ("tenant:acme/workspace:w" -> "acme"). */
function tenantOfScope(scope: string): string {
  const m = /^tenant:([^/]+)/i.exec(scope);
  if (!m) throw new AdminCliError(`scope must start with tenant:<id> (got "${scope}")`, 2);
  return m[1]!.toLowerCase();
}
