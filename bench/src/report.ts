/** The markdown report and the targets of the benchmark issue, evaluated from a run's results. */
import { OP_METHOD, type Op } from './plan.js';
import type { CeilingResult, CellResult } from './runner.js';
import { round } from './stats.js';

export interface SkippedBackend {
  backend: string;
  reason: string;
}

export interface TargetResult {
  target: string;
  status: 'pass' | 'FAIL' | 'skipped' | 'not measured';
  measured: string;
}

/**
 * The throughput targets of the benchmark issue, each on one cell (50 connections, depth 3). These
 * cells also get a ceiling of their own, measured just before and just after them (main.ts).
 */
export const TARGET_CELLS: ReadonlyArray<{ label: string; backend: string; op: Op; min: number; tenants: number }> = [
  { label: 'Embedded SQLite', backend: 'sqlite', op: 'reserve', min: 0.5, tenants: 1 },
  { label: 'Embedded SQLite', backend: 'sqlite', op: 'lifecycle', min: 0.25, tenants: 1 },
  { label: 'SQLite, fsync per commit group', backend: 'sqlite-full', op: 'reserve', min: 0.3, tenants: 1 },
  { label: 'Redis', backend: 'redis', op: 'reserve', min: 0.4, tenants: 1 },
  { label: 'PostgreSQL', backend: 'postgres', op: 'reserve', min: 0.15, tenants: 1 },
  { label: 'PostgreSQL', backend: 'postgres', op: 'reserve', min: 0.25, tenants: 100 },
];

/** Whether a cell is the one a throughput target is judged on. */
export const isTargetCell = (c: { backend: string; op: Op; connections: number; depth: number; tenants: number }): boolean =>
  c.connections === 50 && c.depth === 3 && TARGET_CELLS.some((t) => t.backend === c.backend && t.op === c.op && t.tenants === c.tenants);

/** The highest ceiling seen for a method and connection count at the start and the end of a run. */
export function ceilingFor(ceilings: CeilingResult[], method: 'GET' | 'POST', connections: number): number | null {
  const rps = ceilings.filter((c) => c.method === method && c.connections === connections && (c.when === 'start' || c.when === 'end')).map((c) => c.requestsPerS);
  return rps.length ? Math.max(...rps) : null;
}

/** A cell's ops/s over a ceiling's req/s (null for a failed cell or no ceiling). */
const ratioTo = (r: CellResult, ceilingRps: number | null): number | null => (ceilingRps && r.status === 'ok' ? round(r.opsPerS / ceilingRps, 3) : null);

/** A target cell's own ceiling: the mean of the bursts just before and just after it. */
export function applyAdjacentCeiling(r: CellResult, before: CeilingResult, after: CeilingResult): void {
  r.adjacentCeilingRps = round((before.requestsPerS + after.requestsPerS) / 2, 1);
  r.adjacentRatio = ratioTo(r, r.adjacentCeilingRps);
}

export function applyCeilings(results: CellResult[], ceilings: CeilingResult[]): void {
  for (const r of results) {
    r.ceilingRps = ceilingFor(ceilings, OP_METHOD[r.op], r.connections);
    r.ratio = ratioTo(r, r.ceilingRps);
  }
}

const f = (v: number | null | undefined, digits = 1): string => (v === null || v === undefined ? '–' : v.toFixed(digits));
const pct = (v: number | null): string => (v === null ? '–' : `${(v * 100).toFixed(1)}%`);
const cell = (s: string): string => s.replace(/\|/g, '/');
const int = (v: number): string => Math.round(v).toLocaleString('en-US');

export function ceilingTable(ceilings: CeilingResult[]): string {
  const lines = [
    '| ceiling | conns | when | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU % | busiest thread % | CPU µs/req | client CPU % | other CPU % | steal % | idle % |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of ceilings) {
    lines.push(
      `| bare Fastify ${c.method} | ${c.connections} | ${c.when} | ${int(c.requestsPerS)} | ${f(c.latencyMs.p50, 2)} | ${f(c.latencyMs.p95, 2)} | ${f(c.latencyMs.p99, 2)} | ${c.errors} | ${f(c.serverCpuPct, 0)} | ${f(c.busiestThreadPct, 0)} | ${f(c.serverCpuUsPerReq, 0)} | ${f(c.clientCpuPct, 0)} | ${f(c.otherCpuPct, 0)} | ${f(c.stealCpuPct, 0)} | ${f(c.idleCpuPct, 0)} |`,
    );
  }
  return lines.join('\n');
}

export function resultsTable(results: CellResult[], skipped: SkippedBackend[]): string {
  const lines = [
    '| backend | operation | conns | depth | tenants | ops/s | req/s | ceiling req/s | ratio | ceiling around | ratio around | p50 ms | p95 ms | p99 ms | errors | ledger mismatches | RSS max MB | start-up ms | server CPU % | busiest thread % | CPU µs/op | other CPU % | steal % | idle % |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    if (r.status === 'failed') {
      lines.push(`| ${r.backend} | ${r.label} | ${r.connections} | ${r.depth} | ${r.tenants} | FAILED: ${cell(r.reason ?? '')} | | | | | | | | | ${r.errors} | | | | | | | | | |`);
      continue;
    }
    const ledger = r.ledger ? `${r.ledger.mismatches} / ${r.ledger.scopes}` : '–';
    lines.push(
      `| ${r.backend} | ${r.label} | ${r.connections} | ${r.depth} | ${r.tenants} | ${int(r.opsPerS)} | ${int(r.requestsPerS)} | ${r.ceilingRps === null ? '–' : int(r.ceilingRps)} | ${pct(r.ratio)} | ${r.adjacentCeilingRps == null ? '–' : int(r.adjacentCeilingRps)} | ${pct(r.adjacentRatio ?? null)} | ${f(r.latencyMs.p50, 2)} | ${f(r.latencyMs.p95, 2)} | ${f(r.latencyMs.p99, 2)} | ${r.errors} | ${ledger} | ${f(r.rssMaxMb)} | ${r.startupMs} | ${f(r.serverCpuPct, 0)} | ${f(r.busiestThreadPct, 0)} | ${f(r.serverCpuUsPerOp, 0)} | ${f(r.otherCpuPct, 0)} | ${f(r.stealCpuPct, 0)} | ${f(r.idleCpuPct, 0)} |`,
    );
  }
  for (const s of skipped) lines.push(`| ${s.backend} | SKIPPED: ${cell(s.reason)} | | | | | | | | | | | | | | | | | | | | | | |`);
  return lines.join('\n');
}

const isHot = (r: CellResult, backend: string, op: Op, tenants = 1, connections = 50) =>
  r.backend === backend && r.op === op && r.connections === connections && r.depth === 3 && r.tenants === tenants && r.status === 'ok';

/** The targets of the benchmark issue (2-core machine, load generator on the same machine). */
export function evaluateTargets(results: CellResult[], skipped: SkippedBackend[], backends: string[]): TargetResult[] {
  const out: TargetResult[] = [];
  const skippedReason = (b: string) => skipped.find((s) => s.backend === b)?.reason;
  const find = (b: string, op: Op, tenants = 1, connections = 50) => results.find((r) => isHot(r, b, op, tenants, connections) && !r.label.includes('reserved desc'));

  // Judged on the ceiling measured around the cell when there is one (the machine's speed drifts
  // within a run), else on the run's; both are shown.
  const ratioTarget = ({ label, backend, op, min, tenants }: (typeof TARGET_CELLS)[number]) => {
    const target = `${label}: ${op === 'lifecycle' ? 'lifecycles/s' : 'reserves/s'} >= ${min * 100}% of the ceiling (50 conns, depth 3, ${tenants === 1 ? 'one hot tenant' : `${tenants} tenants`})`;
    if (skippedReason(backend)) return out.push({ target, status: 'skipped', measured: `backend not available: ${skippedReason(backend)}` });
    const r = find(backend, op, tenants);
    const ratio = r?.adjacentRatio ?? r?.ratio ?? null;
    if (!r || ratio === null) return out.push({ target, status: 'not measured', measured: backends.includes(backend) ? 'cell not in this run' : 'backend not selected' });
    const run = r.ratio === null ? '' : `${(r.ratio * 100).toFixed(1)}% of the run's ceiling (${int(r.ceilingRps!)} req/s)`;
    const measured =
      r.adjacentRatio != null
        ? `${(r.adjacentRatio * 100).toFixed(1)}% of the ceiling around the cell (${int(r.opsPerS)}/s vs ${int(r.adjacentCeilingRps!)} req/s)${run ? `; ${run}` : ''}`
        : `${(ratio * 100).toFixed(1)}% (${int(r.opsPerS)}/s vs ${int(r.ceilingRps!)} req/s)`;
    out.push({ target, status: ratio >= min ? 'pass' : 'FAIL', measured });
  };

  const [sqliteReserve, sqliteLifecycle, ...otherTargets] = TARGET_CELLS;
  ratioTarget(sqliteReserve!);
  ratioTarget(sqliteLifecycle!);
  {
    const target = 'Embedded SQLite: p99 <= 20 ms (reserve and reserve+commit requests, 50 conns, depth 3)';
    const cells = [find('sqlite', 'reserve'), find('sqlite', 'lifecycle')].filter((r): r is CellResult => r !== undefined);
    if (cells.length === 0) out.push({ target, status: 'not measured', measured: '' });
    else {
      const worst = Math.max(...cells.map((r) => r.requestLatencyMs.p99 ?? Infinity));
      out.push({ target, status: worst <= 20 ? 'pass' : 'FAIL', measured: cells.map((r) => `${r.label} ${f(r.requestLatencyMs.p99, 2)} ms`).join(', ') });
    }
  }
  for (const t of otherTargets) ratioTarget(t);

  for (const b of backends) {
    if (skippedReason(b)) continue;
    const list = results.find((r) => r.backend === b && r.op === 'list' && r.connections === 1 && r.label.includes('created_at_ms') && r.status === 'ok');
    const target = `${b}: sorted list over 10,000 reservations p50 <= 5 ms (1 connection)`;
    if (!list) continue;
    out.push({ target, status: (list.latencyMs.p50 ?? Infinity) <= 5 ? 'pass' : 'FAIL', measured: `p50 ${f(list.latencyMs.p50, 2)} ms, p99 ${f(list.latencyMs.p99, 2)} ms` });
  }
  for (const b of backends) {
    if (skippedReason(b)) continue;
    const rss = results.filter((r) => r.backend === b && r.rssMaxMb !== null).map((r) => r.rssMaxMb!);
    if (rss.length === 0) continue;
    const max = Math.max(...rss);
    out.push({ target: `${b}: server memory under load <= 250 MB RSS`, status: max <= 250 ? 'pass' : 'FAIL', measured: `max ${max.toFixed(1)} MB over ${rss.length} cells` });
  }
  {
    const starts = results.filter((r) => r.backend.startsWith('sqlite') && r.startupMs > 0).map((r) => r.startupMs);
    if (starts.length) {
      const max = Math.max(...starts);
      const sorted = [...starts].sort((a, b) => a - b);
      out.push({ target: 'Embedded store: start-up to ready <= 1 s', status: max <= 1000 ? 'pass' : 'FAIL', measured: `max ${max} ms, median ${sorted[Math.floor(sorted.length / 2)]} ms over ${starts.length} starts` });
    }
  }
  const measured = results.filter((r) => r.backend);
  const errors = measured.reduce((s, r) => s + r.errors, 0);
  out.push({ target: '0 errors in every run', status: errors === 0 ? 'pass' : 'FAIL', measured: `${errors} errors over ${measured.length} cells` });
  const checked = measured.filter((r) => r.ledger);
  const mismatches = checked.reduce((s, r) => s + r.ledger!.mismatches, 0);
  const missing = measured.filter((r) => r.status === 'ok' && !r.ledger).length;
  out.push({
    target: '0 ledger mismatches in every run',
    status: mismatches === 0 && missing === 0 ? 'pass' : 'FAIL',
    measured: `${mismatches} mismatches over ${checked.length} checked cells${missing ? `, ${missing} unchecked` : ''}`,
  });
  return out;
}

export function targetsTable(targets: TargetResult[]): string {
  const lines = ['| target | result | measured |', '|---|---|---|'];
  for (const t of targets) lines.push(`| ${t.target} | ${t.status} | ${cell(t.measured)} |`);
  return lines.join('\n');
}
