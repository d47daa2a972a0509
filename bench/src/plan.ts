import { deleteRedisKeys, dropPostgresSchema, ensurePostgresDatabase } from './external-stores.js';

/**
 * What a run measures: the backends (data-driven; a backend that cannot start is skipped and shown
 * as such), the operations, and the matrix of connections x scope depth x tenants for each mode.
 */

export const OPS = ['reserve', 'lifecycle', 'decide', 'commit', 'balances', 'list'] as const;
export type Op = (typeof OPS)[number];

/** Which ceiling an operation is compared with: POST for writes and decide, GET for reads. */
export const OP_METHOD: Record<Op, 'POST' | 'GET'> = {
  reserve: 'POST', lifecycle: 'POST', decide: 'POST', commit: 'POST', balances: 'GET', list: 'GET',
};

export const OP_LABEL: Record<Op, string> = {
  reserve: 'reserve',
  lifecycle: 'reserve+commit',
  decide: 'decide',
  commit: 'commit',
  balances: 'balances',
  list: 'sorted list',
};

/** Names a cell's private namespace on a shared store: unique per run and cell. */
export interface Namespace {
  runId: string;
  cell: number;
}

export interface Backend {
  name: string;
  description: string;
  /** Environment of one cell's server process. */
  env: (ns: Namespace) => Record<string, string>;
  /** Once per run, before the first cell (e.g. create the database). */
  prepare?: (env: Record<string, string>) => Promise<void>;
  /** After each cell's server has stopped: remove what it stored. */
  cleanup?: (env: Record<string, string>) => Promise<void>;
  /** Cells of the quick mode for this backend (the full mode runs the same matrix everywhere). */
  quick: CellShape[];
}

export interface CellShape {
  op: Op;
  connections: number;
  depth: number;
  tenants: number;
}

export interface Cell extends CellShape {
  backend: Backend;
}

const firstSet = (...names: string[]): string | undefined => names.map((n) => process.env[n]).find((v) => v !== undefined && v !== '');

const at50 = (op: Op, extra: Partial<CellShape> = {}): CellShape => ({ op, connections: 50, depth: 3, tenants: 1, ...extra });

const QUICK_PRIMARY: CellShape[] = [
  at50('reserve'),
  at50('lifecycle'),
  at50('decide'),
  at50('commit'),
  at50('balances'),
  at50('list'),
  at50('list', { connections: 1 }),
  at50('reserve', { tenants: 100 }),
];

const QUICK_RESERVE: CellShape[] = [at50('reserve')];
const QUICK_RESERVE_TENANTS: CellShape[] = [at50('reserve'), at50('reserve', { tenants: 100 })];

export const BACKENDS: Backend[] = [
  {
    name: 'sqlite',
    description: 'embedded SQLite (WAL, synchronous=NORMAL: survives kill -9)',
    env: () => ({ CYCLES_STORE: 'sqlite', CYCLES_SQLITE_SYNC: 'normal' }),
    quick: QUICK_PRIMARY,
  },
  {
    name: 'sqlite-full',
    description: 'embedded SQLite, fsync on every commit group (CYCLES_SQLITE_SYNC=full: survives power loss)',
    env: () => ({ CYCLES_STORE: 'sqlite', CYCLES_SQLITE_SYNC: 'full' }),
    quick: QUICK_RESERVE,
  },
  {
    name: 'redis',
    description: 'Redis (CYCLES_STORE=redis, REDIS_URL; one key prefix per cell, deleted after it)',
    env: (ns) => ({
      CYCLES_STORE: 'redis',
      REDIS_URL: firstSet('CYCLES_BENCH_REDIS_URL', 'REDIS_URL') ?? 'redis://127.0.0.1:6379',
      CYCLES_REDIS_PREFIX: `cycles-bench:${ns.runId}:${ns.cell}:`,
    }),
    cleanup: (env) => deleteRedisKeys(env.REDIS_URL!, env.CYCLES_REDIS_PREFIX!),
    quick: QUICK_RESERVE_TENANTS,
  },
  {
    name: 'postgres',
    description: 'PostgreSQL (CYCLES_STORE=postgres, DATABASE_URL; one schema per cell, dropped after it)',
    env: (ns) => ({
      CYCLES_STORE: 'postgres',
      DATABASE_URL: firstSet('CYCLES_BENCH_DATABASE_URL', 'DATABASE_URL') ?? 'postgres://postgres@127.0.0.1:5432/cycles_bench',
      CYCLES_PG_SCHEMA: `cycles_bench_${ns.runId}_${ns.cell}`,
    }),
    prepare: (env) => ensurePostgresDatabase(env.DATABASE_URL!),
    cleanup: (env) => dropPostgresSchema(env.DATABASE_URL!, env.CYCLES_PG_SCHEMA!),
    quick: QUICK_RESERVE_TENANTS,
  },
];

export const ALL_CONNECTIONS = [1, 10, 50, 200];

/** The full matrix, the same for every backend (about 5 minutes each). */
export function fullMatrix(): CellShape[] {
  const cells: CellShape[] = [];
  // Every operation at every connection count: depth 3, one hot tenant.
  for (const op of OPS) for (const connections of ALL_CONNECTIONS) cells.push({ op, connections, depth: 3, tenants: 1 });
  // Scope depth 1 and 6 for the operations whose cost grows with depth.
  for (const depth of [1, 6]) for (const op of ['reserve', 'lifecycle', 'decide'] as const) cells.push(at50(op, { depth }));
  // The same load spread over 100 tenants.
  for (const op of ['reserve', 'lifecycle', 'decide', 'commit', 'balances'] as const) cells.push(at50(op, { tenants: 100 }));
  for (const op of ['reserve', 'lifecycle'] as const) cells.push(at50(op, { connections: 200, tenants: 100 }));
  return cells;
}

export interface Timing {
  warmupS: number;
  measureS: number;
}

export const QUICK_TIMING: Timing = { warmupS: 1, measureS: 3 };
export const FULL_TIMING: Timing = { warmupS: 2, measureS: 5 };

/** Rows of the sorted list: seeded once per backend in a tenant of their own. */
export const LIST_ROWS = 10_000;
export const LIST_SORTS = ['created_at_ms', 'reserved'] as const;
export type ListSort = (typeof LIST_SORTS)[number];
