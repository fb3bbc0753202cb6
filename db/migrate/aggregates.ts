import type pg from "pg";
import { DAY, iso, sql } from "./options.js";
import type { ProgressSink } from "./progress.js";
import type { MigrationReport } from "./report.js";

// The aggregates over the migrated history: once at the end of a run, over the
// range of every committed batch not yet aggregated (this run's, and those of
// a run that died before this step).

type Step = (c: pg.ClientBase) => Promise<void>;

/**
 * Recompute (Apache) or refresh (Community) both aggregates over [from, to),
 * widened to whole days. `before` changes raw rows first, `after` records that
 * it is done: on the Apache edition all three in one transaction; on the
 * Community edition (a refresh runs outside any transaction) `before` commits
 * first and `after` commits once the refresh is done.
 */
export async function aggregateRange(
  db: pg.ClientBase,
  ed: "community" | "apache",
  fromMs: number,
  toMs: number,
  steps: { before?: Step; after?: Step } = {},
): Promise<{ from: string; to: string }> {
  // whole UTC days; the schema's functions widen further to the facility's local days
  const from = iso(Math.floor(fromMs / DAY) * DAY);
  const to = iso(Math.ceil(toMs / DAY) * DAY);
  const tx = async (f: Step) => {
    await db.query("BEGIN");
    try {
      await f(db);
      await db.query("COMMIT");
    } catch (err) {
      await db.query("ROLLBACK").catch(() => undefined);
      throw err;
    }
  };
  if (ed === "apache") {
    await tx(async (c) => {
      await steps.before?.(c);
      await c.query(await sql("aggregate_apache"), [from, to]);
      await steps.after?.(c);
    });
    return { from, to };
  }
  if (steps.before) await tx(steps.before);
  for (const view of ["measurement_hourly", "measurement_daily"])
    await db.query(await sql("refresh_community"), [view, from, to]);
  if (steps.after) await tx(steps.after);
  return { from, to };
}

/** Pending batches closer than this are aggregated as one range. */
const MERGE_GAP = 7 * DAY;

/** The aggregates over every committed batch of `key` not yet aggregated; null when there is nothing to do. */
export async function refreshAggregates(
  db: pg.ClientBase,
  ed: "community" | "apache",
  key: string,
  progress: ProgressSink,
): Promise<MigrationReport["aggregates"]> {
  const { rows } = await db.query<{ start: string; end: string }>(await sql("aggregate_pending"), [key]);
  const ranges: [number, number][] = [];
  for (const r of rows) {
    const [s, e] = [Number(r.start), Number(r.end)];
    const last = ranges.at(-1);
    if (last && s - last[1] <= MERGE_GAP) last[1] = Math.max(last[1], e);
    else ranges.push([s, e]);
  }
  if (ranges.length === 0) return null;
  const done = await sql("aggregate_done");
  let from = "";
  let to = "";
  for (const [s, e] of ranges) {
    progress.line(`aggregates ${iso(s).slice(0, 10)} .. ${iso(e).slice(0, 10)} ...`);
    const w = await aggregateRange(db, ed, s, e, {
      after: async (c) => {
        await c.query(done, [key, iso(s), iso(e)]);
      },
    });
    from ||= w.from;
    to = w.to;
  }
  return {
    edition: ed,
    method:
      (ed === "community"
        ? "refresh_continuous_aggregate over the migrated range"
        : "hourly and daily tables recomputed from measurement over the migrated range") +
      (ranges.length > 1 ? ` (${ranges.length} separate ranges)` : ""),
    from,
    to,
  };
}
