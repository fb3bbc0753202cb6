import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { appliedMigrations, checksum, loadMigrations, MIGRATIONS_DIR, migrate } from "../../db/migrations.js";
import { applySchema, applySchemaFile, verifySchema } from "../../db/schema.js";
import { loadSite, type Site, syncSite } from "../../db/site.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, isCommunity, type TestDatabase } from "../support/db.js";
import {
  aggregate,
  bucketDifferences,
  localDayStart,
  rawReadings,
  storedBuckets,
  utcHourStart,
} from "../support/local-days.js";

const run = promisify(execFile);

/**
 * The schema part of a database as text that two equal schemas share: pg_dump
 * --schema-only without its session settings, comments and per-run tokens, and
 * without TimescaleDB's chunks (data, not schema), plus what pg_dump leaves out:
 * TimescaleDB's own catalog (hypertables, dimensions, compression, continuous
 * aggregates, policies) and the bookkeeping rows.
 */
async function catalog(db: TestDatabase): Promise<string> {
  const { stdout } = await run(
    `${inject("pgBindir")}/pg_dump`,
    ["--schema-only", "--no-owner", "--exclude-schema=_timescaledb_internal", "-d", db.url],
    {
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  // one block per object (pg_dump heads each with "-- Name: …"), sorted: the order
  // pg_dump chooses follows dependencies, which data (chunks) can change
  const dump = stdout
    .split(/\n--\n-- Name: /)
    .map((block) =>
      block
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith("--") && !l.startsWith("SET ") && !/^\\(un)?restrict /.test(l))
        .filter((l) => !l.startsWith("SELECT pg_catalog.set_config"))
        .join("\n"),
    )
    .filter((b) => b !== "")
    .sort()
    .join("\n");
  const q = async (sql: string) => JSON.stringify((await db.pool.query(sql)).rows);
  const ts = [
    await q(
      "SELECT hypertable_name, num_dimensions, compression_enabled FROM timescaledb_information.hypertables ORDER BY 1",
    ),
    await q(
      "SELECT hypertable_name, column_name, time_interval::text FROM timescaledb_information.dimensions ORDER BY 1, 2",
    ),
    await q(
      "SELECT view_name, materialized_only, view_definition FROM timescaledb_information.continuous_aggregates ORDER BY 1",
    ),
    // a policy of a continuous aggregate by the aggregate's name: the id of its
    // materialization hypertable depends on how often aggregates were re-created
    await q(
      `SELECT j.proc_name, coalesce(c.view_name, j.hypertable_name, '') AS target, j.schedule_interval::text,
              j.config - 'mat_hypertable_id' AS config
       FROM timescaledb_information.jobs j
       LEFT JOIN timescaledb_information.continuous_aggregates c
         ON (j.hypertable_schema, j.hypertable_name) IN ((c.view_schema, c.view_name),
            (c.materialization_hypertable_schema, c.materialization_hypertable_name))
       WHERE j.job_id >= 1000 ORDER BY 1, 2`,
    ),
    await q("SELECT key, value FROM cea_setting ORDER BY key"),
    await q("SELECT version, name, checksum FROM cea_schema_migration ORDER BY version"),
  ];
  // TimescaleDB numbers the hypertable behind each continuous aggregate in creation
  // order: an aggregate re-created in another time zone gets a new number, the same schema
  return [dump, ...ts]
    .join("\n")
    .replace(/_materialized_hypertable_\d+/g, "_materialized_hypertable_N")
    .replace(/cagg_watermark\(\d+\)/g, "cagg_watermark(N)");
}

async function migrationsCopy(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "cea-migrations-"));
  cpSync(projectPath(MIGRATIONS_DIR), dir, { recursive: true });
  return dir;
}

describe("schema migrations", () => {
  const dbs: TestDatabase[] = [];
  const dirs: string[] = [];
  const fresh = async () => {
    const db = await createTestDatabase({ empty: true });
    dbs.push(db);
    return db;
  };
  afterAll(async () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    await Promise.all(dbs.map((d) => d.drop()));
  });

  let viaMigrations: TestDatabase;
  beforeAll(async () => {
    viaMigrations = await fresh();
    await applySchema(viaMigrations.pool);
  });

  it("the one-file view and the migrations give the same schema on an empty database", async () => {
    const viaFile = await fresh();
    const psql = `${inject("pgBindir")}/psql`;
    await run(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", viaFile.url, "-f", projectPath("db/cea_schema.sql")]);
    const [a, b] = [await catalog(viaFile), await catalog(viaMigrations)];
    expect(a.length).toBeGreaterThan(5_000);
    expect(a).toBe(b);
    // the file records exactly the migrations there are, with their real checksums
    const files = await loadMigrations();
    expect(await appliedMigrations(viaFile.pool)).toEqual(
      files.map((f) => ({ version: f.version, name: f.name, checksum: f.checksum })),
    );
    expect((await verifySchema(viaMigrations.pool)).ok).toBe(true);
  });

  it("0006 adopts the checkpoint table an older legacy migration created itself: rows kept, columns added, same schema", async () => {
    const db = await fresh();
    const files = await loadMigrations();
    const six = files.findIndex((f) => f.name === "migration_checkpoint");
    expect(six).toBe(5);
    await migrate(db.pool, files.slice(0, six));
    // the table as the command created it on first use before it had aggregated and time_zone
    await db.pool.query(`
      CREATE TABLE migration_checkpoint (
        source text NOT NULL, batch_start timestamptz NOT NULL, batch_end timestamptz NOT NULL,
        legacy_rows bigint NOT NULL, values_seen bigint NOT NULL, keys_numeric bigint NOT NULL,
        inserted bigint NOT NULL, stats jsonb NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, batch_end), CHECK (batch_end > batch_start));
      INSERT INTO migration_checkpoint (source, batch_start, batch_end, legacy_rows, values_seen, keys_numeric, inserted, stats)
      VALUES ('public.can_messages(timestamp,node_id,decoded_data)', '2024-01-01Z', '2024-01-02Z', 3, 5, 4, 4, '{"kinds": []}')`);
    const r = await applySchema(db.pool);
    expect(r.applied.map((m) => m.name)).toEqual(files.slice(six).map((f) => f.name));
    const { rows } = await db.pool.query(
      "SELECT source, legacy_rows::int AS n, aggregated, time_zone, ambiguous FROM migration_checkpoint",
    );
    expect(rows).toEqual([
      {
        source: "public.can_messages(timestamp,node_id,decoded_data)",
        n: 3,
        aggregated: false,
        time_zone: null,
        ambiguous: null,
      },
    ]);
    await db.pool.query("TRUNCATE migration_checkpoint");
    expect(await catalog(db)).toBe(await catalog(viaMigrations));
  });

  it("applying again applies nothing; the file on top of the migrations changes nothing", async () => {
    const before = await catalog(viaMigrations);
    const jobIds = "SELECT array_agg(job_id ORDER BY job_id) AS ids FROM timescaledb_information.jobs";
    const jobsBefore = (await viaMigrations.pool.query(jobIds)).rows[0];
    const again = await applySchema(viaMigrations.pool);
    expect(again.applied).toEqual([]);
    expect(again.alreadyApplied).toBe((await loadMigrations()).length);
    await applySchemaFile(viaMigrations.pool);
    expect(await catalog(viaMigrations)).toBe(before);
    // the same policies, not replaced ones
    expect((await viaMigrations.pool.query(jobIds)).rows[0]).toEqual(jobsBefore);
  });

  it("refuses a database whose applied migration file has changed, naming the file", async () => {
    const dir = await migrationsCopy();
    dirs.push(dir);
    const first = (await loadMigrations(dir))[0]!;
    writeFileSync(first.file, `${readFileSync(first.file, "utf8")}\n-- edited after it was applied\n`);
    const edited = await loadMigrations(dir);
    const err = await migrate(viaMigrations.pool, edited).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(first.file);
    expect((err as Error).message).toMatch(/changed after it was applied/);
  });

  it("refuses a database set up by a newer version (a migration the files lack)", async () => {
    const db = await fresh();
    await applySchema(db.pool);
    await db.pool.query("INSERT INTO cea_schema_migration (version, name, checksum) VALUES (999, 'future', 'x')");
    await expect(applySchema(db.pool)).rejects.toThrow(/migration 999 \(future\).*newer version/);
  });

  it("refuses gaps and badly named files", async () => {
    const dir = await migrationsCopy();
    dirs.push(dir);
    writeFileSync(join(dir, "0009_far_ahead.sql"), "SELECT 1;\n");
    await expect(loadMigrations(dir)).rejects.toThrow(/0009_far_ahead\.sql: expected migration number/);
    rmSync(join(dir, "0009_far_ahead.sql"));
    writeFileSync(join(dir, "2_Bad Name.sql"), "SELECT 1;\n");
    await expect(loadMigrations(dir)).rejects.toThrow(/NNNN_name\.sql/);
  });

  it("a failing migration leaves nothing of itself and is not recorded; the next run applies it once fixed", async () => {
    const db = await fresh();
    const dir = await migrationsCopy();
    dirs.push(dir);
    const next = String((await loadMigrations(dir)).length + 1).padStart(4, "0");
    const bad = join(dir, `${next}_half_done.sql`);
    writeFileSync(bad, "CREATE TABLE cea_half_done (x int);\nSELECT 1 / 0;\n");
    await expect(migrate(db.pool, await loadMigrations(dir))).rejects.toThrow(
      new RegExp(`${next}_half_done\\.sql: division by zero \\(22012\\)`),
    );
    const present = await db.pool.query("SELECT to_regclass('cea_half_done') IS NOT NULL AS p");
    expect(present.rows[0].p).toBe(false);
    const recorded = (await appliedMigrations(db.pool)).map((m) => m.version);
    expect(recorded).not.toContain(Number(next));
    // the migrations before it stay applied
    expect(recorded.length).toBe(Number(next) - 1);
    writeFileSync(bad, "CREATE TABLE cea_half_done (x int);\n");
    const r = await migrate(db.pool, await loadMigrations(dir));
    expect(r.applied.map((m) => m.version)).toEqual([Number(next)]);
    expect((await appliedMigrations(db.pool)).at(-1)?.checksum).toBe(checksum(readFileSync(bad, "utf8")));
  });

  it("two migrators at once: one applies, the other waits and finds nothing to do", async () => {
    const db = await fresh();
    const [a, b] = await Promise.all([applySchema(db.pool), applySchema(db.pool)]);
    expect(a.applied.length + b.applied.length).toBe((await loadMigrations()).length);
    expect(Math.min(a.applied.length, b.applied.length)).toBe(0);
  });
});

describe("upgrade from the schema as it was before migrations", () => {
  let old: TestDatabase;
  let reference: TestDatabase;
  beforeAll(async () => {
    old = await createTestDatabase({ empty: true });
    reference = await createTestDatabase({ empty: true });
  });
  afterAll(async () => {
    await old?.drop();
    await reference?.drop();
  });

  // The metadata as the site sync of that time wrote it (today's syncSite also
  // sets the daily aggregate's zone, which that schema has not).
  const oldSync = async (pool: pg.Pool, site: Site) => {
    const f = site.facility;
    await pool.query("INSERT INTO facility (facility_id, name, timezone) VALUES ($1, $2, $3)", [
      f.id,
      f.name,
      f.timezone,
    ]);
    for (const r of site.rooms) {
      await pool.query("INSERT INTO room (room_id, facility_id, name) VALUES ($1, $2, $3)", [r.id, f.id, r.name]);
      for (const k of r.racks)
        await pool.query("INSERT INTO rack (rack_id, room_id, name) VALUES ($1, $2, $3)", [k.id, r.id, k.name]);
    }
    for (const d of site.devices) {
      await pool.query(
        "INSERT INTO device (device_id, room_id, rack_id, name, device_type, node_id) VALUES ($1, $2, $3, $4, $5, $6)",
        [d.id, d.room_id, d.rack_id ?? null, d.name, d.type, d.node_id],
      );
      for (const x of d.sensors)
        await pool.query("INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES ($1, $2, $3, $4, $5)", [
          x.id,
          d.id,
          x.name,
          x.unit,
          x.channel,
        ]);
    }
  };

  const rawSnapshot = async (pool: pg.Pool) =>
    (
      await pool.query(
        `SELECT count(*)::int AS n, sum(value) AS total, min(time) AS first, max(time) AS last,
                count(*) FILTER (WHERE status = 'migrated')::int AS migrated,
                count(*) FILTER (WHERE status = 'out_of_range')::int AS out_of_range,
                (SELECT count(*)::int FROM sensor) AS sensors FROM measurement`,
      )
    ).rows[0];

  it("keeps every row; the aggregates hold what the raw rows say, days now local; ends like a fresh database", async () => {
    // a database set up by the landed one-file schema, in use: site synced, readings, aggregates
    await old.pool.query(readFileSync(projectPath("tests/fixtures/schema-before-migrations.sql"), "utf8"));
    const site = await loadSite(projectPath("ops/site.json"));
    expect(site.facility.timezone).toBe("Europe/Amsterdam");
    await oldSync(old.pool, site);
    // seven days across the change to summer time (2026-03-29, a 23-hour local day)
    await old.pool.query(
      `INSERT INTO measurement (time, sensor_id, value, status)
       SELECT timestamptz '2026-03-28 00:00:00+00' + (i * INTERVAL '7 minutes'), s.sensor_id,
              s.sensor_id + i / 100.0,
              CASE WHEN i % 50 = 0 THEN 'migrated' WHEN i % 37 = 0 THEN 'out_of_range' END
       FROM generate_series(0, 1500) i CROSS JOIN (SELECT sensor_id FROM sensor ORDER BY sensor_id LIMIT 6) s`,
    );
    // the aggregates as that schema kept them
    if (isCommunity()) {
      for (const agg of ["measurement_hourly", "measurement_daily"])
        await old.pool.query(`CALL refresh_continuous_aggregate('${agg}', NULL, NULL)`);
    } else {
      await old.pool.query(
        `INSERT INTO measurement_agg_pending (sensor_id, bucket)
         SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM measurement`,
      );
      await old.pool.query("SELECT cea_refresh_aggregates()");
    }
    const before = await rawSnapshot(old.pool);
    expect(before).toMatchObject({ n: 1501 * 6, migrated: 31 * 6, out_of_range: 40 * 6 });
    expect((await old.pool.query("SELECT count(*)::int AS n FROM measurement_hourly")).rows[0].n).toBeGreaterThan(100);
    expect(await appliedMigrations(old.pool)).toEqual([]);

    const r = await applySchema(old.pool);
    expect(r.applied.map((m) => m.version)).toEqual((await loadMigrations()).map((m) => m.version));
    expect(await rawSnapshot(old.pool)).toEqual(before);

    // both aggregates against an independent computation from the raw rows
    const raw = await rawReadings(old.pool);
    const hourly = aggregate(raw, utcHourStart);
    const daily = aggregate(raw, (ms) => localDayStart(ms, "Europe/Amsterdam"));
    // the 23-hour day is there, and days begin at local midnight (22:00 or 23:00 UTC)
    expect(daily.map((d) => new Date(d.bucket).toISOString())).toContain("2026-03-28T23:00:00.000Z");
    expect(daily.map((d) => new Date(d.bucket).toISOString())).toContain("2026-03-29T22:00:00.000Z");
    expect(bucketDifferences(await storedBuckets(old.pool, "measurement_hourly"), hourly)).toEqual([]);
    expect(bucketDifferences(await storedBuckets(old.pool, "measurement_daily"), daily)).toEqual([]);
    if (isCommunity()) {
      // materialized by the refresh that follows the migrations, not only computed in real time
      const c = await old.pool.connect();
      try {
        await c.query("BEGIN");
        for (const agg of ["measurement_hourly", "measurement_daily"])
          await c.query(`ALTER MATERIALIZED VIEW ${agg} SET (timescaledb.materialized_only = true)`);
        expect(bucketDifferences(await storedBuckets(c, "measurement_hourly"), hourly)).toEqual([]);
        expect(bucketDifferences(await storedBuckets(c, "measurement_daily"), daily)).toEqual([]);
      } finally {
        await c.query("ROLLBACK");
        c.release();
      }
    }
    const report = await verifySchema(old.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.features.daily_buckets).toMatch(/Europe\/Amsterdam/);

    const ref = await reference.pool.connect();
    try {
      await applySchema(ref);
      await syncSite(ref, site);
    } finally {
      ref.release();
    }
    expect(await catalog(old)).toBe(await catalog(reference));
  });
});
