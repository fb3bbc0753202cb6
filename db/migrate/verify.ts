import type pg from "pg";
import { iso, sql } from "./options.js";
import type { Window } from "./plan.js";
import type { ProgressSink } from "./progress.js";
import type { MigrationReport, VerifyMismatch } from "./report.js";

// Verification: per sensor and facility-local day, the legacy side against
// measurement (verify.sql: count, min, max, time range and a content
// checksum), over the days the planned windows touch, a few days per query;
// then the migrated rows in ranges earlier runs covered that this comparison
// did not reach, which no legacy row accounts for any more (verify_orphans.sql).

interface VerifyRow {
  sensor_id: number;
  day: string;
  day_start: string;
  legacy_n: string | null;
  measured_n: string | null;
  legacy_min: number | null;
  measured_min: number | null;
  legacy_max: number | null;
  measured_max: number | null;
  legacy_first: string | null;
  measured_first: string | null;
  legacy_last: string | null;
  measured_last: string | null;
  legacy_sum: string | null;
  measured_sum: string | null;
  other: string;
}

/** Local days per verification query: long enough to amortize, short enough to stay in memory. */
const DAYS_PER_QUERY = 7;
/** Mismatching sensor-days whose first differing keys are looked up. */
const DETAILED = 20;

export async function verify(
  db: pg.ClientBase,
  progress: ProgressSink,
  windows: Window[],
  first: string | null,
  last: string | null,
  nodes: number[],
  names: Map<number, string>,
  /** the source's checkpoint key */
  key: string,
): Promise<NonNullable<MigrationReport["verification"]>> {
  const { rows: days } = await db.query<{ start: string; end: string }>(await sql("verify_days"), [
    windows.map((w) => iso(w[0])),
    windows.map((w) => iso(w[1])),
  ]);
  // consecutive days go together, up to DAYS_PER_QUERY
  const chunks: [string, string, number][] = [];
  for (const d of days) {
    const c = chunks.at(-1);
    if (c && c[1] === d.start && c[2] < DAYS_PER_QUERY) {
      c[1] = d.end;
      c[2]++;
    } else chunks.push([d.start, d.end, 1]);
  }
  const verifySql = await sql("verify");
  const mismatches: VerifyMismatch[] = [];
  let sensorDays = 0;
  let legacyValues = 0;
  let measuredRows = 0;
  let done = 0;
  const sensors = new Set<number>();
  progress.start(days.length, "days verified");
  for (const [s, e, n] of chunks) {
    const { rows } = await db.query<VerifyRow>(verifySql, [s, e, first, last, nodes]);
    for (const r of rows) {
      sensorDays++;
      sensors.add(r.sensor_id);
      const ln = Number(r.legacy_n ?? 0);
      const mn = Number(r.measured_n ?? 0);
      legacyValues += ln;
      measuredRows += mn;
      const diffs: string[] = [];
      if (ln !== mn) diffs.push(`count legacy ${ln} vs measurement ${mn}`);
      if (r.legacy_min !== r.measured_min) diffs.push(`min ${r.legacy_min} vs ${r.measured_min}`);
      if (r.legacy_max !== r.measured_max) diffs.push(`max ${r.legacy_max} vs ${r.measured_max}`);
      if (r.legacy_first !== r.measured_first || r.legacy_last !== r.measured_last)
        diffs.push(`range ${r.legacy_first}..${r.legacy_last} vs ${r.measured_first}..${r.measured_last}`);
      if (Number(r.other) > 0)
        diffs.push(`${r.other} row(s) not written by the migration (status other than migrated)`);
      if (r.legacy_sum !== r.measured_sum) diffs.push("content checksum differs (a value or a time was changed)");
      if (diffs.length)
        mismatches.push({
          sensor_id: r.sensor_id,
          sensor: names.get(r.sensor_id) ?? null,
          day: r.day,
          day_start: r.day_start,
          problems: diffs,
          first_differences: [],
        });
    }
    done += n;
    progress.update(done, 0, `verified up to ${e.slice(0, 10)}`);
  }
  progress.finish();
  // without JIT: the planner's row guesses for the ranges make it compile for
  // a second or more a query that reads a few index entries
  let orphans: { sensor_id: number; day: string; day_start: string; n: string; first: string; last: string }[];
  await db.query("BEGIN");
  try {
    await db.query("SET LOCAL jit = off");
    orphans = (
      await db.query(await sql("verify_orphans"), [
        key,
        chunks.map((c) => c[0]),
        chunks.map((c) => c[1]),
        first,
        last,
        nodes,
      ])
    ).rows;
  } finally {
    await db.query("COMMIT");
  }
  const orphanMismatches: VerifyMismatch[] = orphans.map((o) => ({
    sensor_id: o.sensor_id,
    sensor: names.get(o.sensor_id) ?? null,
    day: o.day,
    day_start: o.day_start,
    problems: [
      `${o.n} migrated row(s) (${o.first}..${o.last}) in a range earlier runs moved, but no legacy row: ` +
        "deleted from the legacy table after the migration? (--undo and a new run make measurement follow it)",
    ],
    first_differences: [],
  }));
  for (const o of orphans) {
    sensorDays++;
    sensors.add(o.sensor_id);
    measuredRows += Number(o.n);
  }
  const detail = await sql("verify_detail");
  for (const m of mismatches.slice(0, DETAILED)) {
    if (first === null || last === null) break;
    const start = m.day_start as string;
    const end = days.find((d) => d.start === start)?.end ?? start;
    const { rows } = await db.query<{
      time: string;
      legacy: number | null;
      stored: number | null;
      status: string | null;
    }>(detail, [m.sensor_id, start, end, first, last]);
    m.first_differences = rows;
  }
  mismatches.push(...orphanMismatches);
  return {
    ok: mismatches.length === 0,
    sensor_days: sensorDays,
    sensors: sensors.size,
    legacy_values: legacyValues,
    measurement_rows: measuredRows,
    mismatch_count: mismatches.length,
    mismatches: mismatches.slice(0, 1000),
  };
}
