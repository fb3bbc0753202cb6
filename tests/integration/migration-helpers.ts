import pg from "pg";
import type { ProgressSink } from "../../db/migrate/progress.js";
import { loadSite, type Site } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";

// Shared by the migration-*.test.ts files.

export const loadTestSite = (): Promise<Site> => loadSite(projectPath("ops/site.json"));

/** A progress sink that keeps the lines (the tests run without a TTY). */
export function recordingProgress(
  onUpdate?: (n: number) => void,
): ProgressSink & { lines: string[]; bars: { label: string; total: number; done: number[] }[] } {
  const lines: string[] = [];
  const bars: { label: string; total: number; done: number[] }[] = [];
  let updates = 0;
  return {
    lines,
    bars,
    start(total, label) {
      bars.push({ label, total, done: [] });
    },
    update(done) {
      bars.at(-1)?.done.push(done);
      updates++;
      onUpdate?.(updates);
    },
    finish() {},
    line(msg) {
      lines.push(msg);
    },
  };
}

export async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/** The legacy table's full content, hashed in id order: equal before and after means untouched. */
export async function tableHash(db: pg.ClientBase, table: string): Promise<{ md5: string; rows: number }> {
  const { rows } = await db.query<{ md5: string; rows: number }>(
    `SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.id)) AS md5, count(*)::int AS rows FROM ${db.escapeIdentifier(table)} t`,
  );
  return rows[0]!;
}

/** measurement rows per sensor name. */
export async function measuredBySensor(db: pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await db.query<{ name: string; n: number }>(
    "SELECT s.name, count(*)::int AS n FROM measurement m JOIN sensor s USING (sensor_id) GROUP BY s.name",
  );
  return Object.fromEntries(rows.map((r) => [r.name, r.n]));
}

/**
 * Buckets of measurement_hourly/daily that disagree with the raw rows (missing,
 * extra, or other counts/min/max/avg), and how many buckets the raw rows make.
 * On the Community edition only the MATERIALIZED part of the continuous
 * aggregates is compared: real-time aggregation would fill in buckets that were
 * never refreshed, so the views are switched to materialized_only inside a
 * transaction that is rolled back.
 */
export async function aggregateMismatches(
  db: pg.ClientBase,
  community: boolean,
): Promise<Record<string, { bad: number; buckets: number }>> {
  const out: Record<string, { bad: number; buckets: number }> = {};
  await db.query("BEGIN");
  try {
    // daily buckets are the facility's local days (cea_daily_bucket)
    for (const [view, bucket] of [
      ["measurement_hourly", "time_bucket(INTERVAL '1 hour', time)"],
      ["measurement_daily", "cea_daily_bucket(time)"],
    ] as const) {
      if (community) await db.query(`ALTER MATERIALIZED VIEW ${view} SET (timescaledb.materialized_only = true)`);
      const { rows } = await db.query<{ bad: number; buckets: number }>(
        `WITH raw AS (
           SELECT sensor_id, ${bucket} AS bucket, count(*) AS n, min(value) AS lo, max(value) AS hi, avg(value) AS av
           FROM measurement WHERE status IS DISTINCT FROM 'out_of_range' GROUP BY 1, 2)
         SELECT count(*) FILTER (WHERE a.sensor_id IS NULL OR raw.sensor_id IS NULL OR a.sample_count <> raw.n
                                   OR a.min_value <> raw.lo OR a.max_value <> raw.hi OR abs(a.avg_value - raw.av) > 1e-9)::int AS bad,
                count(raw.sensor_id)::int AS buckets
         FROM raw FULL JOIN ${view} a ON a.sensor_id = raw.sensor_id AND a.bucket = raw.bucket`,
      );
      out[view] = rows[0]!;
    }
  } finally {
    await db.query("ROLLBACK");
  }
  return out;
}
