import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { projectPath } from "../pipeline/runtime/paths.js";

// Shared by every benchmark: each one measures its subject and a baseline in
// the same run and reports rates and ratios, never a bare time.

export interface BenchRow {
  /** what was measured */
  case: string;
  value: number;
  unit: string;
  /** the case this one is compared with, in the same run */
  baseline?: string;
  /** value / baseline value (or its inverse for latencies: say which in note) */
  ratio?: number;
  target?: string;
  met?: boolean;
  note?: string;
}

export interface BenchContext {
  databaseUrl: string;
  redisUrl: string;
  pgBindir: string;
  /** scale factor from --scale (1 = the documented default) */
  scale: number;
  log: (msg: string) => void;
}

export type Bench = (ctx: BenchContext) => Promise<{ rows: BenchRow[]; params: Record<string, unknown> }>;

const fmt = (n: number) =>
  Number.isInteger(n) ? n.toLocaleString("en-US") : n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toPrecision(3);

export function formatTable(title: string, rows: BenchRow[]): string {
  const head = ["case", "value", "unit", "vs baseline", "ratio", "target", "met"];
  const body = rows.map((r) => [
    r.case,
    fmt(r.value),
    r.unit,
    r.baseline ?? "",
    r.ratio === undefined ? "" : r.ratio.toFixed(2),
    r.target ?? "",
    r.met === undefined ? "" : r.met ? "yes" : "NO",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  const notes = rows.filter((r) => r.note).map((r) => `  * ${r.case}: ${r.note}`);
  return [`\n== ${title}`, line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line), ...notes].join(
    "\n",
  );
}

export async function writeResults(name: string, data: Record<string, unknown>): Promise<string> {
  const dir = projectPath("bench/results");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  const machine = { cpus: cpus().length, cpu: cpus()[0]?.model, memory_gb: Math.round(totalmem() / 2 ** 30) };
  await writeFile(file, `${JSON.stringify({ name, at: new Date().toISOString(), machine, ...data }, null, 2)}\n`);
  return file;
}

/** Percentile of a sorted-or-not sample (nearest rank). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
