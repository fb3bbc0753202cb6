import type pg from "pg";
import { aggregateRange } from "./aggregates.js";
import { sql } from "./options.js";
import type { MigrationReport } from "./report.js";

// --undo: remove what the runs of one source wrote (its 'migrated' rows in the
// range of its checkpoints) and its checkpoints, and bring the aggregates over
// that range back in line with the raw rows. After it, a run starts afresh
// (with another --legacy-time-zone, for instance).

export async function undoRuns(
  db: pg.ClientBase,
  ed: "community" | "apache",
  key: string,
): Promise<NonNullable<MigrationReport["undone"]>> {
  const { rows: t } = await db.query<{ t: string | null }>("SELECT to_regclass('migration_checkpoint')::text AS t");
  if (!t[0]?.t) return { measurement_rows: 0, checkpoints: 0, from: null, to: null };
  const undo = await sql("undo");
  let result: NonNullable<MigrationReport["undone"]> = { measurement_rows: 0, checkpoints: 0, from: null, to: null };
  const { rows } = await db.query<{ s: string | null; e: string | null }>(
    "SELECT min(batch_start)::text AS s, max(batch_end)::text AS e FROM migration_checkpoint WHERE source = $1",
    [key],
  );
  const s = rows[0]?.s;
  const e = rows[0]?.e;
  if (!s || !e) return result;
  await aggregateRange(db, ed, Date.parse(s), Date.parse(e), {
    before: async (c) => {
      const r = (await c.query<{ rows: string; checkpoints: string; from: string; to: string }>(undo, [key])).rows[0]!;
      result = { measurement_rows: Number(r.rows), checkpoints: Number(r.checkpoints), from: r.from, to: r.to };
    },
  });
  return result;
}
