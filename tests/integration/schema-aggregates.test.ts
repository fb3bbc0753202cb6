import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MeasurementRow, writeMeasurements } from "../../db/measurements.js";
import { AGGREGATES, rebuildAggregates, refreshAggregate, setRetention } from "../../db/schema.js";
import { loadSite, parseSite, syncSite } from "../../db/site.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, isCommunity, type TestDatabase } from "../support/db.js";
import {
  aggregate,
  type Bucket,
  bucketDifferences,
  localDayStart,
  rawReadings,
  storedBuckets,
  utcHourStart,
} from "../support/local-days.js";

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

async function write(db: TestDatabase, rows: MeasurementRow[]): Promise<void> {
  const c = await db.pool.connect();
  try {
    await c.query("BEGIN");
    // in slices: one statement per 50 000 rows
    for (let i = 0; i < rows.length; i += 50_000) await writeMeasurements(c, rows.slice(i, i + 50_000));
    await c.query("COMMIT");
  } finally {
    c.release();
  }
}

/** Bring the aggregates up to date the way the platform does: the queue (Apache) or a refresh (Community). */
async function refresh(db: TestDatabase): Promise<void> {
  if (isCommunity()) for (const agg of AGGREGATES) await refreshAggregate(db.pool, agg);
  else await db.pool.query("SELECT cea_refresh_aggregates()");
}

/** Both aggregates against the raw rows, daily in `zone`. */
async function differences(db: pg.Pool | TestDatabase, zone: string) {
  const pool = "pool" in db ? db.pool : db;
  const raw = await rawReadings(pool);
  return {
    hourly: bucketDifferences(await storedBuckets(pool, "measurement_hourly"), aggregate(raw, utcHourStart)),
    daily: bucketDifferences(
      await storedBuckets(pool, "measurement_daily"),
      aggregate(raw, (ms) => localDayStart(ms, zone)),
    ),
  };
}

/** Readings every `step` ms in [from, to) for each sensor, values from a small deterministic sequence. */
function series(sensors: number[], from: number, to: number, step: number, status?: (i: number) => string | null) {
  const rows: MeasurementRow[] = [];
  let i = 0;
  for (let t = from; t < to; t += step, i++)
    for (const s of sensors)
      rows.push({ time: new Date(t), sensor_id: s, value: ((i * 37 + s) % 1000) / 10, status: status?.(i) ?? null });
  return rows;
}

async function withSiteZone(db: TestDatabase, zone: string) {
  const site = await loadSite(projectPath("ops/site.json"));
  site.facility.timezone = zone;
  const c = await db.pool.connect();
  try {
    return await syncSite(c, site);
  } finally {
    c.release();
  }
}

describe("daily buckets are the facility's local days", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
    // 2026: summer time begins on 29 March (a 23-hour day) and ends on 25 October (25 hours)
    await write(db, [
      ...series([101, 205], Date.parse("2026-03-27T00:00:00Z"), Date.parse("2026-04-01T00:00:00Z"), 10 * MIN),
      ...series([101, 205], Date.parse("2026-10-23T00:00:00Z"), Date.parse("2026-10-28T00:00:00Z"), 10 * MIN),
    ]);
    await refresh(db);
  });
  afterAll(() => db?.drop());

  it("follow the site's zone across both DST changes (23- and 25-hour days); hourly buckets stay UTC", async () => {
    expect(await differences(db, "Europe/Amsterdam")).toEqual({ hourly: [], daily: [] });
    const { rows } = await db.pool.query<{ day: string; n: number }>(
      `SELECT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"') AS day, sample_count::int AS n
       FROM measurement_daily WHERE sensor_id = 101 AND bucket IN ('2026-03-28T23:00Z', '2026-10-24T22:00Z')
       ORDER BY bucket`,
    );
    // one reading every 10 minutes: 23 and 25 hours
    expect(rows).toEqual([
      { day: "2026-03-28T23:00Z", n: 23 * 6 },
      { day: "2026-10-24T22:00Z", n: 25 * 6 },
    ]);
  });

  it("a new zone rebuilds the daily aggregate, also for a zone whose days begin on the half hour", async () => {
    const r = await withSiteZone(db, "Asia/Kolkata");
    expect(r.daily_timezone).toEqual({ zone: "Asia/Kolkata", changed: true });
    expect(await differences(db, "Asia/Kolkata")).toEqual({ hourly: [], daily: [] });
    // later writes and refreshes keep to the new zone
    await write(db, series([101], Date.parse("2026-03-31T20:00:00Z"), Date.parse("2026-04-02T04:00:00Z"), 7 * MIN));
    await refresh(db);
    expect(await differences(db, "Asia/Kolkata")).toEqual({ hourly: [], daily: [] });
    const back = await withSiteZone(db, "Europe/Amsterdam");
    expect(back.daily_timezone.changed).toBe(true);
    expect(await differences(db, "Europe/Amsterdam")).toEqual({ hourly: [], daily: [] });
    expect((await withSiteZone(db, "Europe/Amsterdam")).daily_timezone.changed).toBe(false);
  });

  it("one zone per database: a site whose zone differs from another facility's is refused, naming both", async () => {
    await db.pool.query("INSERT INTO facility (facility_id, name, timezone) VALUES (2, 'Annex', 'America/New_York')");
    try {
      await expect(withSiteZone(db, "Europe/Amsterdam")).rejects.toThrow(
        /facility 2 \(Annex\) has time zone America\/New_York and not Europe\/Amsterdam/,
      );
      const { rows } = await db.pool.query("SELECT value FROM cea_setting WHERE key = 'daily_timezone'");
      expect(rows).toEqual([{ value: "Europe/Amsterdam" }]);
    } finally {
      await db.pool.query("DELETE FROM facility WHERE facility_id = 2");
    }
  });

  it("a site file with an unknown zone stops, naming the file and the field", async () => {
    const site = JSON.parse(
      await import("node:fs/promises").then((f) => f.readFile(projectPath("ops/site.json"), "utf8")),
    );
    site.facility.timezone = "Europe/Atlantis";
    expect(() => parseSite(JSON.stringify(site), "ops/site.json")).toThrow(ConfigError);
    expect(() => parseSite(JSON.stringify(site), "ops/site.json")).toThrow(
      /ops\/site\.json: facility\.timezone: not a known IANA time zone/,
    );
  });
});

describe("what the aggregates count", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("readings with status out_of_range are left out; the provenance statuses are kept", async () => {
    const from = Date.parse("2026-05-04T00:00:00Z");
    const statuses = [null, "simulated", "replayed", "migrated", "out_of_range"];
    await write(
      db,
      series([103], from, from + 2 * DAY, MIN, (i) => statuses[i % 5] ?? null),
    );
    await refresh(db);
    expect(await differences(db, "Europe/Amsterdam")).toEqual({ hourly: [], daily: [] });
    const { rows } = await db.pool.query(
      "SELECT sum(sample_count)::int AS n FROM measurement_hourly WHERE sensor_id = 103",
    );
    expect(rows[0].n).toBe((2 * 24 * 60 * 4) / 5);
  });

  it("readings near the float8 limit do not stop the refresh: the mean is taken in numeric", async () => {
    const t = Date.parse("2026-05-10T10:00:00Z");
    await write(db, [
      { time: new Date(t), sensor_id: 104, value: 1.7e308 },
      { time: new Date(t + 1000), sensor_id: 104, value: 1.7e308 },
      { time: new Date(t + 2000), sensor_id: 104, value: 1.6e308 },
    ]);
    await refresh(db);
    const { rows } = await db.pool.query(
      `SELECT avg_value, sample_count::int AS n FROM measurement_hourly WHERE sensor_id = 104
       UNION ALL SELECT avg_value, sample_count::int FROM measurement_daily WHERE sensor_id = 104`,
    );
    // (1.7e308 + 1.7e308 + 1.6e308) / 3 without overflowing here either
    const mean = (1.7e308 / 3) * 2 + 1.6e308 / 3;
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.n).toBe(3);
      expect(Math.abs(r.avg_value - mean) / mean).toBeLessThan(1e-12);
    }
  });
});

describe.runIf(!isCommunity())("Apache edition: the queued refresh", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("a bulk-loaded day (one scan) and a few live hours (index probes) give the exact aggregates", async () => {
    const all = (await db.pool.query<{ id: number }>("SELECT sensor_id AS id FROM sensor ORDER BY 1")).rows.map(
      (r) => r.id,
    );
    expect(all).toHaveLength(65 + 9); // the nodes' sensors (with the applied outputs) and the derived ones
    // a whole day for every sensor: every hour of that UTC day queued, past the bulk threshold
    const day = Date.parse("2026-06-01T00:00:00Z");
    await write(db, series(all, day, day + DAY, MIN));
    // and two hours of two sensors on another day
    await write(db, series([101, 205], day + 5 * DAY + 3 * HOUR, day + 5 * DAY + 5 * HOUR, 30_000));
    const queued = await db.pool.query(
      "SELECT count(DISTINCT (sensor_id, bucket))::int AS n FROM measurement_agg_pending",
    );
    expect(queued.rows[0].n).toBe(all.length * 24 + 2 * 2);
    const { rows } = await db.pool.query("SELECT cea_refresh_aggregates() AS n");
    expect(rows[0].n).toBe(all.length * 24 + 2 * 2);
    expect(await differences(db, "Europe/Amsterdam")).toEqual({ hourly: [], daily: [] });
    // late rows inside both: recomputed again
    await write(db, series([101, 205], day + 3 * HOUR + 7_000, day + 4 * HOUR, 120_000));
    await db.pool.query("SELECT cea_refresh_aggregates()");
    expect(await differences(db, "Europe/Amsterdam")).toEqual({ hourly: [], daily: [] });
  });
});

describe("a refresh never freezes the current bucket", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("after a rebuild, a reading written into the current hour and day shows in both aggregates", async () => {
    const now = Date.now();
    await write(db, series([101], now - 3 * DAY, now - 5_000, 10 * MIN));
    await rebuildAggregates(db.pool);
    const current = async () =>
      (
        await db.pool.query<{ h: number; d: number }>(
          `SELECT (SELECT coalesce(sum(sample_count), 0)::int FROM measurement_hourly
                   WHERE sensor_id = 101 AND bucket = time_bucket(INTERVAL '1 hour', now())) AS h,
                  (SELECT coalesce(sum(sample_count), 0)::int FROM measurement_daily
                   WHERE sensor_id = 101 AND bucket = cea_daily_bucket(now())) AS d`,
        )
      ).rows[0]!;
    const before = await current();
    await write(db, [{ time: new Date(), sensor_id: 101, value: 1 }]);
    // Apache: the worker's maintenance runs the queued refresh; Community: real-time aggregation
    if (!isCommunity()) await db.pool.query("SELECT cea_refresh_aggregates()");
    expect(await current()).toEqual({ h: before.h + 1, d: before.d + 1 });
    if (isCommunity()) {
      const { rows } = await db.pool.query<{ view_name: string; ok: boolean }>(
        `SELECT c.view_name,
                _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(h.id))
                  <= CASE c.view_name WHEN 'measurement_daily' THEN cea_daily_bucket(now())
                                      ELSE time_bucket(INTERVAL '1 hour', now()) END AS ok
         FROM timescaledb_information.continuous_aggregates c
         JOIN _timescaledb_catalog.hypertable h ON h.schema_name = c.materialization_hypertable_schema
                                                AND h.table_name = c.materialization_hypertable_name
         ORDER BY 1`,
      );
      expect(rows).toEqual([
        { view_name: "measurement_daily", ok: true },
        { view_name: "measurement_hourly", ok: true },
      ]);
    }
  });
});

describe("raw-data retention never erases aggregates", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const old = async (): Promise<{ hourly: Bucket[]; daily: Bucket[] }> => {
    const cut = Date.now() - 31 * DAY;
    return {
      hourly: (await storedBuckets(db.pool, "measurement_hourly")).filter((b) => b.bucket < cut),
      daily: (await storedBuckets(db.pool, "measurement_daily")).filter((b) => b.bucket < cut),
    };
  };

  /** run_job of one policy, waiting out a run of the scheduler's on the same aggregate (55P03). */
  const runJob = async (proc: string, target?: string) => {
    const { rows } = await db.pool.query<{ job_id: number }>(
      `SELECT j.job_id FROM timescaledb_information.jobs j
       LEFT JOIN timescaledb_information.continuous_aggregates c
         ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name)
       WHERE j.proc_name = $1 AND ($2::text IS NULL OR c.view_name = $2)`,
      [proc, target ?? null],
    );
    expect(rows).toHaveLength(1);
    for (let attempt = 0; ; attempt++) {
      try {
        await db.pool.query(`CALL run_job(${Number(rows[0]!.job_id)})`);
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== "55P03" || attempt > 50) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  it("refuses a retention shorter than 7 days, naming the minimum", async () => {
    await expect(setRetention(db.pool, "3 days")).rejects.toThrow(/at least 7 days/);
  });

  it("raw chunks past the retention go; every hourly and daily row of theirs stays, also after late data", async () => {
    const now = Date.now();
    // 60 days, one reading every 20 minutes for two sensors
    await write(db, series([101, 205], now - 60 * DAY, now - HOUR, 20 * MIN));
    await rebuildAggregates(db.pool);
    const before = await old();
    expect(before.daily.length).toBeGreaterThan(2 * 25);
    expect(before.hourly.length).toBeGreaterThan(2 * 25 * 24);

    await setRetention(db.pool, "30 days");
    if (isCommunity()) {
      // the refresh policies now stop short of the retention horizon
      const { rows } = await db.pool.query(
        `SELECT DISTINCT config->>'start_offset' AS s FROM timescaledb_information.jobs
         WHERE proc_name = 'policy_refresh_continuous_aggregate'`,
      );
      expect(rows).toEqual([{ s: "28 days" }]);
      await runJob("policy_retention");
    } else {
      expect((await db.pool.query("SELECT cea_apply_retention() AS n")).rows[0].n).toBeGreaterThan(25);
    }
    const left = await db.pool.query(
      "SELECT count(*)::int AS n FROM measurement WHERE time < now() - INTERVAL '31 days'",
    );
    expect(left.rows[0].n).toBe(0);

    // a late reading into a dropped day (a replayed log), then every refresh there is
    await write(db, [{ time: new Date(now - 45 * DAY), sensor_id: 101, value: -999 }]);
    if (isCommunity()) {
      await runJob("policy_refresh_continuous_aggregate", "measurement_hourly");
      await runJob("policy_refresh_continuous_aggregate", "measurement_daily");
    } else {
      await db.pool.query("SELECT cea_refresh_aggregates()");
    }
    await rebuildAggregates(db.pool);
    const after = await old();
    expect(bucketDifferences(after.hourly, before.hourly)).toEqual([]);
    expect(bucketDifferences(after.daily, before.daily)).toEqual([]);
    process.stdout.write(
      `retention: raw rows older than 31 days ${left.rows[0].n}; aggregate rows older than 31 days kept: ` +
        `hourly ${after.hourly.length} of ${before.hourly.length}, daily ${after.daily.length} of ${before.daily.length}\n`,
    );

    // a new zone now cannot recompute the days whose rows are gone: the old daily aggregate is kept
    const rezoned = await withSiteZone(db, "Europe/Lisbon");
    expect(rezoned.daily_timezone.changed).toBe(true);
    const kept = await db.pool.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = current_schema() AND c.relname LIKE 'measurement_daily_kept_%' AND c.relkind IN ('r', 'v')`,
    );
    expect(kept.rows).toHaveLength(1);
    const keptRows = await db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${kept.rows[0]!.name} WHERE bucket < now() - INTERVAL '31 days'`,
    );
    expect(keptRows.rows[0]!.n).toBe(before.daily.length);
    // the new aggregate holds the days the stored rows (Apache: the hourly rows) still make, in the new zone
    const days = await storedBuckets(db.pool, "measurement_daily");
    expect(days.length).toBeGreaterThan(2 * 25);
    expect(days.every((d) => d.bucket === localDayStart(d.bucket + HOUR, "Europe/Lisbon"))).toBe(true);
    await withSiteZone(db, "Europe/Amsterdam");

    // and retention off again: policies over everything
    await setRetention(db.pool, null);
    if (isCommunity()) {
      const { rows } = await db.pool.query(
        `SELECT DISTINCT config->'start_offset' AS s FROM timescaledb_information.jobs
         WHERE proc_name = 'policy_refresh_continuous_aggregate'`,
      );
      expect(rows).toEqual([{ s: null }]);
    }
  });
});
