import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { batchStatement } from "../../db/migrate/batches.js";
import { prepareSession, siteMapping } from "../../db/migrate/mapping.js";
import { runMigration } from "../../db/migrate/migrate.js";
import { migrateOptionsSchema } from "../../db/migrate/options.js";
import type { Site } from "../../db/site.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, recordingProgress } from "./migration-helpers.js";

// A legacy table with naive local times (America/New_York) over a year with
// both DST changes, an index on the time column, and rows of both shapes real
// systems leave at the changes: a spring-forward time that does not exist and
// fall-back times that occur twice.
const ZONE = "America/New_York";

describe("legacy migration: a local time column (timestamp without time zone)", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let site: Site;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await connect(db.url);
    site = await loadTestSite();
    await client.query(`
      CREATE TABLE local_frames (id bigserial PRIMARY KEY, "timestamp" timestamp without time zone, node_id integer, decoded_data jsonb);
      -- a reading of node 3 every 30 minutes through 2024 (bulk)
      INSERT INTO local_frames ("timestamp", node_id, decoded_data)
      SELECT t, 3, jsonb_build_object('dry_bulb_v', 20 + (extract(epoch FROM t)::bigint % 97) / 10.0)
      FROM generate_series('2024-01-01 00:00'::timestamp, '2024-12-31 23:30', INTERVAL '30 minutes') AS t;
      -- node 1 at the DST changes
      INSERT INTO local_frames ("timestamp", node_id, decoded_data) VALUES
        ('2024-03-10 01:30', 1, '{"dry_bulb_b": 1}'),
        ('2024-03-10 02:30', 1, '{"dry_bulb_b": 2}'),   -- does not exist: clocks jump 02:00 -> 03:00
        ('2024-03-10 03:15', 1, '{"dry_bulb_b": 3}'),
        ('2024-11-03 00:30', 1, '{"dry_bulb_b": 4}'),
        ('2024-11-03 01:30', 1, '{"dry_bulb_b": 5}'),   -- ambiguous: 01:00 -> 02:00 happens twice
        ('2024-11-03 01:45', 1, '{"dry_bulb_b": 6}'),   -- ambiguous
        ('2024-11-03 02:30', 1, '{"dry_bulb_b": 7}');
      CREATE INDEX ON local_frames ("timestamp");
      ANALYZE local_frames`);
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it("compares the column in its own type: the batch reads through the index", async () => {
    const o = migrateOptionsSchema.parse({ table: "local_frames", legacyTimeZone: ZONE });
    const s = await connect(db.url);
    try {
      const src = await prepareSession(s, o, siteMapping(site));
      expect(src.timeIndexed).toBe(true);
      const { rows } = await s.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${await batchStatement()}`, [
        "2024-05-01T00:00:00Z",
        "2024-05-02T00:00:00Z",
      ]);
      // every scan of the legacy table in the plan, with its index condition
      const scans: { type: string; index?: string; cond?: string }[] = [];
      const walk = (n: Record<string, unknown>) => {
        if (n["Relation Name"] === "local_frames")
          scans.push({
            type: String(n["Node Type"]),
            index: n["Index Name"] as string,
            cond: n["Index Cond"] as string,
          });
        for (const c of (n.Plans as Record<string, unknown>[] | undefined) ?? []) walk(c);
      };
      walk((rows[0]!["QUERY PLAN"] as { Plan: Record<string, unknown> }[])[0]!.Plan);
      // the column against the instant range's local bounds (EST -5 h .. EDT -4 h)
      expect(scans).toEqual([
        {
          type: "Index Scan",
          index: "local_frames_timestamp_idx",
          cond: `(("timestamp" >= '2024-04-30 19:00:00'::timestamp without time zone) AND ("timestamp" < '2024-05-01 20:00:00'::timestamp without time zone))`,
        },
      ]);
    } finally {
      await s.end();
    }
  });

  const stored = async () =>
    (
      await client.query<{ t: string; v: number }>(
        `SELECT to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"') AS t, m.value AS v
         FROM measurement m JOIN sensor s USING (sensor_id) WHERE s.name = 'dry_bulb_b' ORDER BY m.time`,
      )
    ).rows;

  it("counts ambiguous and nonexistent local times, reads them as --ambiguous says, and verifies", async () => {
    const progress = recordingProgress();
    const r = await runMigration(client, site, { table: "local_frames", legacyTimeZone: ZONE }, { progress });
    expect(r.local_times).toMatchObject({ zone: ZONE, ambiguous: 4, nonexistent: 3 });
    expect(progress.lines.join("\n")).toMatch(
      /4 local time\(s\) fall in a fall-back hour of America\/New_York and are ambiguous: read as the earlier instant/,
    );
    expect(progress.lines.join("\n")).toMatch(/3 local time\(s\) fall in a spring-forward gap/);
    // batches by rows (no --batch): 17 575 rows, two sessions with four batches each
    // at least, so about 2 197 rows a batch; not one per window that holds rows
    expect(r.batch).toBe("about 2197 legacy rows (windows of 1h)");
    expect(r.batches.total).toBe(9);
    expect(r.verification?.ok).toBe(true);
    expect(await stored()).toEqual([
      { t: "2024-03-10T06:30Z", v: 1 },
      { t: "2024-03-10T07:15Z", v: 3 },
      { t: "2024-03-10T07:30Z", v: 2 }, // 02:30 moved forward by the gap: 03:30 EDT
      { t: "2024-11-03T04:30Z", v: 4 },
      { t: "2024-11-03T05:30Z", v: 5 }, // the earlier 01:30 (EDT)
      { t: "2024-11-03T05:45Z", v: 6 },
      { t: "2024-11-03T07:30Z", v: 7 },
    ]);
  });

  it("records --ambiguous with the checkpoints and refuses a rerun with the other choice naming both", async () => {
    const { rows: recorded } = await client.query<{ time_zone: string; ambiguous: string; n: number }>(
      "SELECT time_zone, ambiguous, count(*)::int AS n FROM migration_checkpoint GROUP BY 1, 2",
    );
    expect(recorded).toEqual([{ time_zone: ZONE, ambiguous: "earlier", n: expect.any(Number) }]);
    const count = "SELECT count(*)::int AS n FROM measurement";
    const before = (await client.query<{ n: number }>(count)).rows[0]!.n;
    const other = runMigration(
      client,
      site,
      { table: "local_frames", legacyTimeZone: ZONE, ambiguous: "later", ignoreCheckpoint: true },
      { progress: recordingProgress() },
    );
    await expect(other).rejects.toThrow(
      /earlier runs read the ambiguous local times of public\.local_frames\.timestamp as the earlier instant \(--ambiguous earlier\), this one as the later \(--ambiguous later\): rerun with --ambiguous earlier, or undo those runs first \(--undo\)/,
    );
    expect((await client.query<{ n: number }>(count)).rows[0]!.n).toBe(before);
  });

  it("refuses a rerun in another zone naming both; --undo removes the run, and a run in the other zone follows", async () => {
    const other = runMigration(
      client,
      site,
      { table: "local_frames", legacyTimeZone: "UTC" },
      { progress: recordingProgress() },
    );
    await expect(other).rejects.toThrow(
      /earlier runs read public\.local_frames\.timestamp in time zone America\/New_York, this one in UTC: rerun with --legacy-time-zone America\/New_York, or undo those runs first/,
    );
    const { rows: before } = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement");
    const undo = await runMigration(
      client,
      site,
      { table: "local_frames", legacyTimeZone: ZONE, undo: true },
      { progress: recordingProgress() },
    );
    expect(undo.undone).toMatchObject({ measurement_rows: before[0]!.n, checkpoints: 9 });
    const { rows: after } = await client.query(
      "SELECT (SELECT count(*)::int FROM measurement) AS m, (SELECT count(*)::int FROM migration_checkpoint) AS cp, (SELECT count(*)::int FROM measurement_daily) AS daily, (SELECT count(*)::int FROM measurement_hourly) AS hourly",
    );
    expect(after[0]).toEqual({ m: 0, cp: 0, daily: 0, hourly: 0 });

    const later = await runMigration(
      client,
      site,
      { table: "local_frames", legacyTimeZone: ZONE, ambiguous: "later" },
      { progress: recordingProgress() },
    );
    expect(later.verification?.ok).toBe(true);
    expect((await stored()).filter((x) => x.v === 5 || x.v === 6)).toEqual([
      { t: "2024-11-03T06:30Z", v: 5 }, // the later 01:30 (EST)
      { t: "2024-11-03T06:45Z", v: 6 },
    ]);
  });
});
