import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import pg from "pg";
import { applySchema, edition, refreshAggregate } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { type Bench, type BenchRow, percentile } from "./lib.js";

// The aggregate refresh after a bulk load (legacy migration, a backfill through
// the batch route): every (sensor, hour) of the load queued, as the platform's
// writers queue them. Against, in the same run and on the same rows:
//   ceiling   one set-based INSERT … SELECT … GROUP BY per aggregate from the raw rows
//   before    the refresh as it was before migration 0003 (per-bucket index probes,
//             each day again from raw rows); stopped after a time limit
// and the live case the worker's maintenance meets every minute: one hour of
// every sensor queued. Besides the time, the buffer pages each one touches
// (pg_stat_database hits + reads): on a machine whose RAM holds the data they
// are all hits, and times stay close; on an appliance whose RAM does not, each
// is a read from disk, and the ratio of pages is the ratio to expect. Apache edition (the platform's own refresh); on the
// Community edition the continuous aggregates' refresh against the ceiling.
// Scale 1 = 50 sensors × 1 Hz × 7 days (30.24 M rows).

const START = "2026-01-05T00:00:00Z";
const SENSORS = 50;

/** Buffer pages this database touched so far (hits + reads), with this session's counts flushed. */
async function pagesTouched(db: pg.Client): Promise<number> {
  await db.query("SELECT pg_stat_force_next_flush()");
  const { rows } = await db.query<{ n: string }>(
    "SELECT (blks_hit + blks_read)::text AS n FROM pg_stat_database WHERE datname = current_database()",
  );
  return Number(rows[0]?.n ?? 0);
}

const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};

/** The refresh function as the schema had it before migration 0003, under another name. */
async function beforeFunction(): Promise<string> {
  const text = await readFile(projectPath("tests/fixtures/schema-before-migrations.sql"), "utf8");
  const start = text.indexOf("CREATE OR REPLACE FUNCTION cea_refresh_aggregates()");
  const end = text.indexOf("$$;", text.indexOf("LANGUAGE plpgsql AS $$", start) + 25) + 3;
  if (start < 0 || end < start) throw new Error("the earlier cea_refresh_aggregates() is not in the fixture");
  return text
    .slice(start, end)
    .replace("cea_refresh_aggregates()", "cea_refresh_aggregates_before()")
    .replace("hashtext('cea_refresh_aggregates')", "hashtext('cea_refresh_aggregates_before')");
}

const bench: Bench = async (ctx) => {
  const days = Math.max(1, Math.round(7 * ctx.scale));
  const rows = SENSORS * days * 86_400;
  const limitS = Number(process.env.CEA_BENCH_AGG_LIMIT_S ?? 900);
  const name = `cea_bench_agg_${randomBytes(3).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ctx.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(ctx.databaseUrl);
  u.pathname = `/${name}`;
  const db = new pg.Client({ connectionString: u.toString() });
  const out: BenchRow[] = [];
  try {
    await db.connect();
    await applySchema(db);
    await syncSite(db, await loadSite(projectPath("ops/site.json")));
    const ed = await edition(db);
    const sensors = (
      await db.query<{ id: number }>("SELECT sensor_id AS id FROM sensor ORDER BY 1 LIMIT $1", [SENSORS])
    ).rows;
    ctx.log(`loading ${rows.toLocaleString("en-US")} rows (${sensors.length} sensors × 1 Hz × ${days} days)`);
    // stored as the worker writes them: the readings of one second of every sensor together
    for (let d = 0; d < days; d++)
      await db.query(
        `INSERT INTO measurement (time, sensor_id, value)
         SELECT t, s, 20 + 5 * sin(extract(epoch FROM t) / 13751) + (s * 7919 + extract(epoch FROM t)::bigint % 1000) / 1000.0
         FROM generate_series($1::timestamptz + $2 * INTERVAL '1 day',
                              $1::timestamptz + ($2 + 1) * INTERVAL '1 day' - INTERVAL '1 second', INTERVAL '1 second') t
         CROSS JOIN unnest($3::int[]) s
         ORDER BY t, s`,
        [START, d, sensors.map((s) => s.id)],
      );
    await db.query("VACUUM ANALYZE measurement");
    const queueAll = () =>
      db.query(
        `INSERT INTO measurement_agg_pending (sensor_id, bucket)
         SELECT s, h FROM unnest($1::int[]) s,
                generate_series($2::timestamptz, $2::timestamptz + $3 * INTERVAL '1 day' - INTERVAL '1 hour', INTERVAL '1 hour') h`,
        [sensors.map((s) => s.id), START, days],
      );
    const queueHour = () =>
      db.query(
        `INSERT INTO measurement_agg_pending (sensor_id, bucket)
         SELECT s, $2::timestamptz + $3 * INTERVAL '1 day' - INTERVAL '1 hour' FROM unnest($1::int[]) s`,
        [sensors.map((s) => s.id), START, days],
      );

    // the ceiling: one set-based statement per aggregate over every raw row
    const zone = (await db.query<{ tz: string }>("SELECT cea_daily_timezone() AS tz")).rows[0]?.tz ?? "UTC";
    const pages: Record<string, number> = {};
    const counted = async (label: string, fn: () => Promise<unknown>) => {
      const p0 = await pagesTouched(db);
      const s = await timed(fn);
      pages[label] = (await pagesTouched(db)) - p0;
      return s;
    };
    const ceiling = await counted("ceiling", async () => {
      await db.query(
        `CREATE TEMP TABLE ceiling_hourly AS
         SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, sensor_id, min(value), max(value), avg(value), count(*)
         FROM measurement GROUP BY 1, 2`,
      );
      await db.query(
        `CREATE TEMP TABLE ceiling_daily AS
         SELECT time_bucket(INTERVAL '1 day', time, $1) AS bucket, sensor_id, min(value), max(value), avg(value), count(*)
         FROM measurement GROUP BY 1, 2`,
        [zone],
      );
    });
    out.push({
      case: "ceiling: INSERT … GROUP BY (hourly + daily)",
      value: rows / ceiling,
      unit: "rows/s",
      note: `${ceiling.toFixed(1)} s`,
    });

    if (ed === "community") {
      const refresh = await timed(async () => {
        await refreshAggregate(db, "measurement_hourly");
        await refreshAggregate(db, "measurement_daily");
      });
      out.push({
        case: "refresh of the continuous aggregates",
        value: rows / refresh,
        unit: "rows/s",
        baseline: "ceiling",
        ratio: ceiling / refresh,
        note: `${refresh.toFixed(1)} s`,
      });
      return { rows: out, params: { scale: ctx.scale, rows, sensors: sensors.length, days, edition: ed } };
    }

    await queueAll();
    let buckets = 0;
    const after = await counted("after", async () => {
      buckets = (await db.query<{ n: number }>("SELECT cea_refresh_aggregates() AS n")).rows[0]?.n ?? 0;
    });
    out.push({
      case: "cea_refresh_aggregates(): bulk load queued",
      value: rows / after,
      unit: "rows/s",
      baseline: "ceiling",
      ratio: ceiling / after,
      note: `${after.toFixed(1)} s for ${buckets.toLocaleString("en-US")} hourly buckets (ratio = ceiling time / this time)`,
    });

    await db.query(await beforeFunction());
    await queueAll();
    await db.query(`SET statement_timeout = '${Math.round(limitS * 1000)}'`);
    let stopped = false;
    const before = await counted("before", async () => {
      try {
        await db.query("SELECT cea_refresh_aggregates_before()");
      } catch (err) {
        if ((err as { code?: string }).code !== "57014") throw err;
        stopped = true;
      }
    });
    await db.query("SET statement_timeout = 0");
    await db.query("DELETE FROM measurement_agg_pending");
    out.push({
      case: "before 0003: bulk load queued",
      value: rows / before,
      unit: "rows/s",
      baseline: "cea_refresh_aggregates(): bulk load queued",
      ratio: after / before,
      note: stopped
        ? `stopped after ${before.toFixed(0)} s (CEA_BENCH_AGG_LIMIT_S) without finishing: the rate is an upper bound`
        : `${before.toFixed(1)} s`,
    });

    out.push({
      case: "pages touched: ceiling",
      value: pages.ceiling!,
      unit: "buffer pages",
      note: "shared buffer hits + reads of the bench database",
    });
    out.push({
      case: "pages touched: cea_refresh_aggregates()",
      value: pages.after!,
      unit: "buffer pages",
      baseline: "pages touched: ceiling",
      ratio: pages.after! / pages.ceiling!,
    });
    out.push({
      case: "pages touched: before 0003",
      value: pages.before!,
      unit: "buffer pages",
      baseline: "pages touched: ceiling",
      ratio: pages.before! / pages.ceiling!,
      note: stopped ? "up to where it was stopped" : undefined,
    });

    // the worker's every-minute case: the newest hour of every sensor
    const live = async (fn: string) => {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        await queueHour();
        times.push(await timed(() => db.query(`SELECT ${fn}()`)));
      }
      return percentile(times, 50);
    };
    const liveAfter = await live("cea_refresh_aggregates");
    const liveBefore = await live("cea_refresh_aggregates_before");
    out.push({
      case: "cea_refresh_aggregates(): one hour of every sensor",
      value: liveAfter * 1000,
      unit: "ms (p50 of 5)",
      baseline: "before 0003: one hour",
      ratio: liveBefore / liveAfter,
      note: "ratio = before / after (above 1: faster now); the day is combined from hourly rows instead of re-read",
    });
    out.push({ case: "before 0003: one hour", value: liveBefore * 1000, unit: "ms (p50 of 5)" });
    return {
      rows: out,
      params: { scale: ctx.scale, rows, sensors: sensors.length, days, edition: ed, limit_s: limitS },
    };
  } finally {
    await db.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
};

export default bench;
