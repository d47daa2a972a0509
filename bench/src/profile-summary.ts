/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): the functions with the most self time, the
 * project functions with the most inclusive time, and the time per area (project code, each
 * dependency, Node internals, GC). Usage: npm run profile-summary -w bench -- <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { typedPath } from './processes.js';
import { median } from './stats.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface HotSpot {
  name: string;
  where: string;
  area: string;
  ms: number;
  /** Share of the busy (non-idle) time. */
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Time in gaps between samples longer than `gapCapMs`, left out of every share (see summarizeProfile). */
  gapMs: number;
  gapCapMs: number;
  idleMs: number;
  busyMs: number;
  areas: Array<{ area: string; ms: number; pct: number }>;
  self: HotSpot[];
  /** Project functions (packages/*) by inclusive time: where the server's own code spends it. */
  inclusive: HotSpot[];
}

/** Shortens a script URL to the part that identifies it: a dependency path or a project path. */
function where(url: string, line: number): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) u = u.slice(nm + 'node_modules/'.length);
  else {
    const pk = u.indexOf('/packages/');
    if (pk >= 0) u = u.slice(pk + 1);
  }
  return `${u}:${line + 1}`;
}

function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'gc';
    if (functionName === '(program)' || functionName === '(idle)' || functionName === '(root)') return functionName;
    return 'native';
  }
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const m = /\/packages\/([^/]+)\/(?:dist|src)\/([^/]+)\//.exec(url);
  if (m) return `${m[1]}/${m[2]}`;
  return 'other';
}

/**
 * Each sample stands for the time since the one before it, up to four times the median interval.
 * On a busy machine the thread that takes the samples sometimes does not run for hundreds of
 * milliseconds (a 14 s profile of 2026-11-22 had 5.5 s in gaps over 20 ms, the longest 844 ms);
 * the sample taken after such a gap shows one moment, and weighting it by the whole gap credited
 * that moment's function with up to a tenth of the profile. What ran during a gap is unknown, so
 * gaps count only up to the cap, and the rest is reported apart.
 */
const GAP_CAP_MEDIANS = 4;

export function summarizeProfile(profile: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const capUs = GAP_CAP_MEDIANS * (median(profile.timeDeltas.filter((d) => d > 0)) ?? 0);
  let gapUs = 0;
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'}\u0000${where(n.callFrame.url, n.callFrame.lineNumber)}`;

  const selfUs = new Map<string, number>();
  const inclUs = new Map<string, number>();
  const areaUs = new Map<string, number>();
  const frameOf = new Map<string, CallFrame>();
  let totalUs = 0;
  let idleUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const raw = profile.timeDeltas[i] ?? 0;
    const node = byId.get(profile.samples[i]!);
    if (!node || raw <= 0) continue;
    const dt = Math.min(raw, capUs);
    gapUs += raw - dt;
    totalUs += dt;
    const area = areaOf(node.callFrame);
    if (area === '(idle)') {
      idleUs += dt;
      continue;
    }
    areaUs.set(area, (areaUs.get(area) ?? 0) + dt);
    const key = keyOf(node);
    frameOf.set(key, node.callFrame);
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
    // Inclusive: each project function on the stack once, however often it recurses.
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (!/\/packages\//.test(n.callFrame.url)) continue;
      const k = keyOf(n);
      if (seen.has(k)) continue;
      seen.add(k);
      frameOf.set(k, n.callFrame);
      inclUs.set(k, (inclUs.get(k) ?? 0) + dt);
    }
  }
  const busyUs = totalUs - idleUs || 1;
  const spots = (m: Map<string, number>, n: number): HotSpot[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => {
        const [name, loc] = k.split('\u0000') as [string, string];
        return { name, where: loc, area: areaOf(frameOf.get(k)!), ms: Math.round(us / 100) / 10, pct: Math.round((us / busyUs) * 1000) / 10 };
      });
  return {
    totalMs: Math.round(totalUs / 1000),
    gapMs: Math.round(gapUs / 1000),
    gapCapMs: Math.round(capUs / 100) / 10,
    idleMs: Math.round(idleUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    areas: [...areaUs.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, ms: Math.round(us / 1000), pct: Math.round((us / busyUs) * 1000) / 10 })),
    self: spots(selfUs, top),
    inclusive: spots(inclUs, top),
  };
}

export function formatSummary(s: ProfileSummary): string {
  const lines: string[] = [];
  lines.push(`Profile: ${s.totalMs} ms sampled, ${s.busyMs} ms busy (${s.idleMs} ms idle).`);
  if (s.gapMs > 0) {
    lines.push(`Left out: ${s.gapMs} ms in gaps between samples longer than ${s.gapCapMs} ms (four times the median interval), when the thread that samples did not run; what ran then is unknown.`);
  }
  lines.push('');
  lines.push('Busy time by area:', '', '| area | ms | % busy |', '|---|---:|---:|');
  for (const a of s.areas.slice(0, 15)) lines.push(`| ${a.area} | ${a.ms} | ${a.pct} |`);
  lines.push('', 'Top functions by self time:', '', '| % busy | ms | function | where |', '|---:|---:|---|---|');
  for (const h of s.self) lines.push(`| ${h.pct} | ${h.ms} | ${h.name} | ${h.where || h.area} |`);
  lines.push('', 'Project functions by inclusive time:', '', '| % busy | ms | function | where |', '|---:|---:|---|---|');
  for (const h of s.inclusive) lines.push(`| ${h.pct} | ${h.ms} | ${h.name} | ${h.where} |`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: profile-summary <file.cpuprofile> [top]');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(typedPath(file), 'utf8')) as CpuProfile;
  console.log(formatSummary(summarizeProfile(profile, Number(process.argv[3] ?? 25))));
}
