import type pg from "pg";
import { batchMs, DAY, iso, type Options, sql } from "./options.js";
import type { Outlier } from "./report.js";
import type { LegacySource } from "./source.js";

// Planning: the batch windows come from the data (the windows that hold rows),
// never from the calendar between the first and the last row, so one stray row
// decades away costs one more batch, not thousands. Windows are instant ranges
// [s, s + batch) aligned to multiples of the batch length.

export type Window = [number, number];

/** The windows that hold legacy rows, in time order. */
export async function planWindows(db: pg.ClientBase, src: LegacySource, o: Options): Promise<Window[]> {
  const step = batchMs(o.batch);
  const { rows } = await db.query<{ s: string }>(await sql(src.timeIndexed ? "plan_index" : "plan_scan"), [step]);
  const rawStarts = rows.map((r) => Number(r.s));
  if (src.timeWithZone) return rawStarts.map((s) => [s, s + step]);
  // a local time column: a window of local times holds instants of the windows
  // that overlap it shifted by the zone's offsets; keep those that hold a row
  const { rows: z } = await db.query<{ lo: number; hi: number }>(
    `SELECT extract(epoch FROM pg_temp.cea_raw_lo('epoch') AT TIME ZONE 'UTC')::int AS lo,
            extract(epoch FROM pg_temp.cea_raw_hi('epoch') AT TIME ZONE 'UTC')::int AS hi`,
  );
  const minOff = z[0]!.lo * 1000;
  const maxOff = z[0]!.hi * 1000;
  const candidates = new Set<number>();
  for (const a of rawStarts) {
    // raw = instant + offset: the instants of [a, a + step) lie in (a - maxOff, a + step - minOff)
    const from = Math.floor((a - maxOff) / step) * step;
    for (let s = from; s < a + step - minOff; s += step) candidates.add(s);
  }
  const starts = [...candidates].sort((x, y) => x - y);
  if (starts.length === 0) return [];
  const { rows: held } = await db.query<{ s: string }>(await sql("plan_probe"), [
    starts.map(iso),
    starts.map((s) => iso(s + step)),
  ]);
  return held.map((r): Window => [Number(r.s), Number(r.s) + step]);
}

/** The parts of the windows that no committed batch covers, in time order. */
export function uncovered(windows: Window[], done: Window[]): Window[] {
  const covered = [...done].sort((a, b) => a[0] - b[0]);
  const out: Window[] = [];
  for (const [ws, we] of windows) {
    let s = ws;
    for (const [cs, ce] of covered) {
      if (ce <= s || cs >= we) continue;
      if (cs > s) out.push([s, cs]);
      s = Math.max(s, ce);
      if (s >= we) break;
    }
    if (s < we) out.push([s, we]);
  }
  return out;
}

/** A gap between windows longer than this splits the data into clusters. */
const OUTLIER_GAP = 30 * DAY;
/** A cluster with at most this share of the windows is far from the bulk. */
const OUTLIER_SHARE = 0.02;

/**
 * Ranges of the data far from its bulk (a row in 1970 or 2100 next to years of
 * readings): clusters of windows separated from the largest cluster by more
 * than 30 days and holding at most 2 % of the windows, with their rows per node.
 */
export async function findOutliers(db: pg.ClientBase, windows: Window[]): Promise<Outlier[]> {
  const clusters: Window[][] = [];
  for (const w of windows) {
    const last = clusters.at(-1);
    if (last && w[0] - last.at(-1)![1] <= OUTLIER_GAP) last.push(w);
    else clusters.push([w]);
  }
  if (clusters.length < 2) return [];
  const bulk = clusters.reduce((a, c) => (c.length > a.length ? c : a));
  const far = clusters.filter((c) => c !== bulk && c.length <= Math.max(1, OUTLIER_SHARE * windows.length));
  if (far.length === 0) return [];
  const { rows } = await db.query<{ range: number; node_id: string | null; rows: string }>(await sql("outliers"), [
    far.map((c) => iso(c[0]![0])),
    far.map((c) => iso(c.at(-1)![1])),
  ]);
  return far.map((c, i) => ({
    from: iso(c[0]![0]),
    to: iso(c.at(-1)![1]),
    bulk: { from: iso(bulk[0]![0]), to: iso(bulk.at(-1)![1]) },
    nodes: rows
      .filter((r) => r.range === i + 1)
      .map((r) => ({ node_id: r.node_id === null ? null : Number(r.node_id), rows: Number(r.rows) })),
  }));
}
