import type pg from "pg";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { sql } from "./options.js";
import { type BatchStats, finishSensors, type MigrationReport, newSensor, type SensorReport } from "./report.js";

// The checkpoints of earlier runs, and the report's totals over them.

export interface CheckpointRow {
  batch_start: string;
  batch_end: string;
  legacy_rows: string;
  values_seen: string;
  keys_numeric: string;
  inserted: string;
  stats: BatchStats;
  time_zone: string | null;
  ambiguous: string | null;
}

export async function checkpoints(db: pg.ClientBase, key: string): Promise<CheckpointRow[]> {
  return (await db.query<CheckpointRow>(await sql("checkpoint_state"), [key])).rows;
}

/**
 * The checkpoint table is the schema's (migration 0006). "missing" only on a
 * database whose schema predates it and where no run ever created it; a table
 * an older version of the command created, without the columns 0006 adds, is
 * "outdated".
 */
export async function checkpointTable(db: pg.ClientBase): Promise<"ok" | "missing" | "outdated"> {
  const { rows } = await db.query<{ t: string | null; current: boolean }>(
    `SELECT to_regclass('migration_checkpoint')::text AS t,
            EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('migration_checkpoint')
                    AND attname = 'ambiguous' AND NOT attisdropped) AS current`,
  );
  return !rows[0]?.t ? "missing" : rows[0].current ? "ok" : "outdated";
}

/** Stops the run, saying what to do, unless the schema has the checkpoint table as 0006 made it. */
export async function requireCheckpointTable(db: pg.ClientBase): Promise<void> {
  const state = await checkpointTable(db);
  if (state !== "ok")
    throw new ConfigError(
      `the database's schema lacks migration 0006 (the table migration_checkpoint is ${state === "missing" ? "missing" : "of an older version"}): run \`cea schema apply\` first (it keeps the checkpoints of earlier runs)`,
    );
}

/** Earlier runs' checkpoints; none when the schema has no checkpoint table yet. */
export async function checkpointsIfAny(db: pg.ClientBase, key: string): Promise<CheckpointRow[]> {
  const state = await checkpointTable(db);
  if (state === "missing") return [];
  if (state === "outdated") await requireCheckpointTable(db);
  return checkpoints(db, key);
}

/** Totals, per-sensor counts and conflicts over every committed batch. */
export function totalsFromCheckpoints(
  all: CheckpointRow[],
  names: Map<number, string>,
): Pick<MigrationReport, "totals" | "sensors" | "conflicts"> {
  const totals = { legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, already_present: 0, duplicates: 0 };
  const conflicts: MigrationReport["conflicts"] = { total: 0, rule: "smallest value kept", samples: [] };
  const per = new Map<number, SensorReport>();
  const sensor = (sid: number) => {
    const s = per.get(sid) ?? newSensor(sid, names);
    per.set(sid, s);
    return s;
  };
  for (const c of all) {
    totals.legacy_rows += Number(c.legacy_rows);
    totals.values_seen += Number(c.values_seen);
    totals.keys_numeric += Number(c.keys_numeric);
    totals.inserted += Number(c.inserted);
    for (const [sid, kind, n] of c.stats.kinds) {
      const s = sensor(sid);
      s.kinds[kind] = (s.kinds[kind] ?? 0) + n;
    }
    for (const [sid, n] of c.stats.inserted) sensor(sid).rows += n;
    for (const [sid, n] of c.stats.conflicts) {
      sensor(sid).conflicts += n;
      conflicts.total += n;
    }
    for (const [sid, t, kept, other] of c.stats.conflict_samples)
      if (conflicts.samples.length < 50)
        conflicts.samples.push({ sensor_id: sid, sensor: names.get(sid) ?? null, time: t, kept, also_seen: other });
  }
  const sensors = finishSensors([...per.values()]);
  const numeric = sensors.reduce((a, s) => a + (s.kinds.number ?? 0) + (s.kinds.numeric_string ?? 0), 0);
  totals.duplicates = numeric - totals.keys_numeric;
  totals.already_present = totals.keys_numeric - totals.inserted;
  return { totals, sensors, conflicts };
}
