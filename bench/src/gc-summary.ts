/**
 * Summarises V8's `--trace-gc-nvp` output of a server process, one row per isolate (the request
 * thread first, then workers such as the SQLite store thread): how often each thread stopped for
 * garbage collection, for how long, and how much survived its young-generation collections.
 * Bytes promoted per scavenge is the figure to watch: objects that die young should never reach
 * the old generation (docs/benchmarks.md, "What bought it", item 19).
 */
import { percentile, round } from './stats.js';

export interface ThreadGc {
  thread: string;
  scavenges: number;
  scavengePauseP50Ms: number;
  scavengePauseP90Ms: number;
  scavengePauseMaxMs: number;
  scavengePauseTotalMs: number;
  promotedKbPerScavenge: number;
  markCompacts: number;
  markCompactPauseTotalMs: number;
}

/** `[pid:0xisolate]   1234 ms: pause=1.2 mutator=3.4 gc=s ... promoted=123 ...` */
const LINE = /^\[(\d+):(0x[0-9a-f]+)\]\s+\d+ ms: (.*)$/;

const r1 = (v: number) => round(v, 1);

export function summarizeGcTrace(text: string): ThreadGc[] {
  const byIsolate = new Map<string, { pauses: number[]; promoted: number[]; mc: number[] }>();
  for (const line of text.split('\n')) {
    const m = LINE.exec(line.trim());
    if (!m) continue;
    const fields = new Map<string, string>();
    for (const kv of m[3]!.split(/\s+/)) {
      const eq = kv.indexOf('=');
      if (eq > 0) fields.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    const kind = fields.get('gc');
    const pause = Number(fields.get('pause'));
    if (!kind || !Number.isFinite(pause)) continue;
    // Isolates appear in the order they start: the request thread's first.
    let t = byIsolate.get(m[2]!);
    if (!t) byIsolate.set(m[2]!, (t = { pauses: [], promoted: [], mc: [] }));
    if (kind === 's') {
      t.pauses.push(pause);
      t.promoted.push(Number(fields.get('promoted') ?? 0));
    } else if (kind === 'mc' || kind === 'ms') {
      t.mc.push(pause);
    }
  }
  return [...byIsolate.values()].map((t, i) => {
    const sorted = Float64Array.from(t.pauses).sort();
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    return {
      thread: i === 0 ? 'request thread' : `worker thread ${i}`,
      scavenges: t.pauses.length,
      scavengePauseP50Ms: sorted.length === 0 ? 0 : percentile(sorted, 0.5),
      scavengePauseP90Ms: sorted.length === 0 ? 0 : percentile(sorted, 0.9),
      scavengePauseMaxMs: sorted.length === 0 ? 0 : sorted[sorted.length - 1]!,
      scavengePauseTotalMs: r1(sum(t.pauses)),
      promotedKbPerScavenge: t.promoted.length === 0 ? 0 : Math.round(sum(t.promoted) / t.promoted.length / 1024),
      markCompacts: t.mc.length,
      markCompactPauseTotalMs: r1(sum(t.mc)),
    };
  });
}

export function formatGcSummary(rows: ThreadGc[]): string {
  return [
    '| thread | scavenges | pause p50 ms | p90 ms | max ms | total ms | promoted KB per scavenge | mark-compacts | their pauses ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.thread} | ${r.scavenges} | ${r.scavengePauseP50Ms} | ${r.scavengePauseP90Ms} | ${r.scavengePauseMaxMs} | ${r.scavengePauseTotalMs} | ${r.promotedKbPerScavenge.toLocaleString('en-US')} | ${r.markCompacts} | ${r.markCompactPauseTotalMs} |`,
    ),
  ].join('\n');
}
