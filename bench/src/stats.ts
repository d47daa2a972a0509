/** Latency samples in milliseconds, kept exactly (a run holds at most a few hundred thousand). */
export class Samples {
  private data = new Float64Array(1024);
  private n = 0;

  add(ms: number): void {
    if (this.n === this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.n++] = ms;
  }

  get count(): number {
    return this.n;
  }

  summary(): LatencySummary {
    if (this.n === 0) return { p50: null, p95: null, p99: null, max: null, mean: null };
    const sorted = this.data.slice(0, this.n).sort();
    let sum = 0;
    for (const v of sorted) sum += v;
    return {
      p50: round(percentile(sorted, 0.5)),
      p95: round(percentile(sorted, 0.95)),
      p99: round(percentile(sorted, 0.99)),
      max: round(sorted[sorted.length - 1]!),
      mean: round(sum / sorted.length),
    };
  }
}

export interface LatencySummary {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

/** Nearest-rank percentile, `sorted[ceil(p·n) − 1]`, the definition the reference server uses. */
export function percentile(sorted: Float64Array, p: number): number {
  const i = Math.max(0, Math.ceil(p * sorted.length) - 1);
  return sorted[Math.min(i, sorted.length - 1)]!;
}

export const round = (v: number, digits = 2): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Median, range and wins of the per-round ratios B/A of two builds' alternating bursts (B is ahead
 * in a round when its ratio is above 1 for `better: 'up'`, below 1 for `'down'`).
 */
export function ratios(a: number[], b: number[], better: 'up' | 'down'): { median: number; min: number; max: number; bAhead: number } {
  const r = a.map((x, i) => b[i]! / x).filter((v) => Number.isFinite(v));
  const sorted = [...r].sort((x, y) => x - y);
  return {
    median: round(sorted.length > 0 ? percentile(Float64Array.from(sorted), 0.5) : NaN, 3),
    min: round(sorted[0] ?? NaN, 3),
    max: round(sorted.at(-1) ?? NaN, 3),
    bAhead: r.filter((v) => (better === 'up' ? v > 1 : v < 1)).length,
  };
}
