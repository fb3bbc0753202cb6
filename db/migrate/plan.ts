import type pg from "pg";
import { batchMs, DAY, HOUR, iso, type Options, sql } from "./options.js";
import type { Outlier } from "./report.js";
import type { LegacySource } from "./source.js";

// Planning: the windows come from the data (the windows that hold rows),
// never from the calendar between the first and the last row, so one stray row
// decades away costs one more window, not thousands. Windows are instant ranges
// [s, s + length) aligned to multiples of their length: --batch, or one hour
// when batches are sized by rows. Then (without --batch) the windows are cut
// into batches of about the same number of legacy rows (batchesByRows): many
// small windows make one statement, so a batch's fixed cost (planning, the
// checkpoint row, the commit) is paid per ~100k rows rather than per window,
// and an hour denser than that is split.

export type Window = [number, number];

/** The planned windows in time order, and the legacy rows of each (null: not counted, --batch given). */
export interface Plan {
  windows: Window[];
  rows: number[] | null;
}

/**
 * The windows that hold legacy rows, in time order, with their row counts when
 * batches are sized by rows (`batches`: false when nothing will be moved).
 */
export async function planWindows(db: pg.ClientBase, src: LegacySource, o: Options, batches = true): Promise<Plan> {
  const step = o.batch ? batchMs(o.batch) : HOUR;
  const counted = o.batch === undefined && batches;
  const { rows } = await db.query<{ s: string; n: string }>(await sql(src.timeIndexed ? "plan_index" : "plan_scan"), [
    step,
  ]);
  const rawStarts = rows.map((r) => Number(r.s));
  // without an index one scan found the instant windows and counted them
  if (!src.timeIndexed)
    return {
      windows: rawStarts.map((s): Window => [s, s + step]),
      rows: counted ? rows.map((r) => Number(r.n)) : null,
    };
  if (src.timeWithZone) {
    const windows = rawStarts.map((s): Window => [s, s + step]);
    // after the loose index scan, one index range count per window
    return counted ? countWindows(db, windows) : { windows, rows: null };
  }
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
  const plan = await countWindows(
    db,
    starts.map((s): Window => [s, s + step]),
  );
  return counted ? plan : { windows: plan.windows, rows: null };
}

/** The windows that hold rows, with their counts (plan_count.sql: a range of the raw column each). */
async function countWindows(db: pg.ClientBase, windows: Window[]): Promise<Plan> {
  if (windows.length === 0) return { windows: [], rows: [] };
  const { rows } = await db.query<{ s: string; n: string }>(await sql("plan_count"), [
    windows.map((w) => iso(w[0])),
    windows.map((w) => iso(w[1])),
  ]);
  const byStart = new Map(windows.map((w) => [w[0], w]));
  return {
    windows: rows.map((r) => byStart.get(Number(r.s))!),
    rows: rows.map((r) => Number(r.n)),
  };
}

/** Batches in flight per session at least, when the table is small: the last round stays short. */
const BATCHES_PER_SESSION = 4;

/** The legacy rows per batch: at most `batchRows`, fewer for a small table (BATCHES_PER_SESSION). */
export function rowTarget(total: number, o: Pick<Options, "batchRows" | "parallel">): number {
  return Math.max(1, Math.min(o.batchRows, Math.ceil(total / (o.parallel * BATCHES_PER_SESSION))));
}

/**
 * Windows (with their row counts) cut into batches of about `target` rows, in
 * time order: neighbouring windows go together while the batch stays within
 * the target and no gap longer than 30 days lies between them (a range far
 * from the bulk stays a batch of its own); a window with more rows is split
 * into equal time slices. A batch is an instant range like a window; the
 * empty time between the windows it joins holds no legacy row.
 */
export function batchesByRows(
  windows: Window[],
  rows: number[],
  target: number,
): { batches: Window[]; rows: number[] } {
  const batches: Window[] = [];
  const counts: number[] = [];
  for (let i = 0; i < windows.length; i++) {
    const [s, e] = windows[i]!;
    const n = rows[i] ?? 0;
    if (n > target) {
      const k = Math.ceil(n / target);
      const bounds = Array.from({ length: k + 1 }, (_, j) => (j === k ? e : s + Math.floor(((e - s) * j) / k)));
      for (let j = 0; j < k; j++)
        if (bounds[j + 1]! > bounds[j]!) {
          batches.push([bounds[j]!, bounds[j + 1]!]);
          counts.push(Math.ceil(n / k));
        }
      continue;
    }
    const last = batches.at(-1);
    const lastRows = counts.at(-1) ?? 0;
    if (last && lastRows + n <= target && s >= last[1] && s - last[1] <= OUTLIER_GAP) {
      last[1] = e;
      counts[counts.length - 1] = lastRows + n;
    } else {
      batches.push([s, e]);
      counts.push(n);
    }
  }
  return { batches, rows: counts };
}

/**
 * The parts of the windows that no committed batch covers, with their rows
 * (a part of a window gets its share of the window's rows by length).
 */
export function uncoveredRows(
  windows: Window[],
  rows: number[],
  done: Window[],
): { windows: Window[]; rows: number[] } {
  const parts = uncovered(windows, done);
  const counts: number[] = [];
  // the parts come in window order, each inside one window
  let i = 0;
  for (const p of parts) {
    while (windows[i]![1] <= p[0]) i++;
    const w = windows[i]!;
    counts.push(Math.ceil(((rows[i] ?? 0) * (p[1] - p[0])) / (w[1] - w[0])));
  }
  return { windows: parts, rows: counts };
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
