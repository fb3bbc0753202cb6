import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { writeMeasurements } from "../../db/measurements.js";
import { AGGREGATES, applySchema, refreshAggregate, verifySchema } from "../../db/schema.js";
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

describe("schema on an empty database", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
  });
  afterAll(() => db?.drop());

  it("applies with psql on its own, again on top of itself, and verifies", async () => {
    const psql = `${inject("pgBindir")}/psql`;
    const args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.url, "-f", projectPath("db/cea_schema.sql")];
    await run(psql, args);
    const before = await verifySchema(db.pool);
    expect(before.checks.filter((c) => !c.ok)).toEqual([]);
    // second application through psql and a third through the platform's command path
    const second = await run(psql, args);
    expect(second.stderr).not.toMatch(/ERROR/);
    await applySchema(db.pool);
    const after = await verifySchema(db.pool);
    expect(after.ok).toBe(true);
    expect(after.edition).toBe(inject("edition"));
    // nothing was duplicated by re-applying
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'measurement'");
    expect(rows[0].n).toBe(1);
    const jobs = await db.pool.query(
      "SELECT count(*)::int AS n FROM timescaledb_information.jobs WHERE job_id >= 1000",
    );
    expect(jobs.rows[0].n).toBe(isCommunity() ? 3 : 0);
  });
});

describe("constraints", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  const rejects = async (sql: string, params: unknown[], code: string) => {
    await expect(db.pool.query(sql, params)).rejects.toMatchObject({ code });
  };

  it("rejects every foreign-key violation along the chain", async () => {
    await rejects("INSERT INTO zone (zone_id, facility_id, name) VALUES (900, 999, 'z')", [], "23503");
    await rejects("INSERT INTO room (room_id, facility_id, name) VALUES (900, 999, 'r')", [], "23503");
    await rejects("INSERT INTO room (room_id, facility_id, zone_id, name) VALUES (900, 1, 999, 'r')", [], "23503");
    await rejects("INSERT INTO rack (rack_id, room_id, name) VALUES (900, 999, 'k')", [], "23503");
    await rejects(
      "INSERT INTO device (device_id, room_id, name, device_type) VALUES (900, 999, 'd', 't')",
      [],
      "23503",
    );
    // rack 1 is in room 1: a device in room 2 cannot sit on it
    await rejects(
      "INSERT INTO device (device_id, room_id, rack_id, name, device_type) VALUES (900, 2, 1, 'd', 't')",
      [],
      "23503",
    );
    await rejects(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES (900, 999, 's', 'u', 0)",
      [],
      "23503",
    );
    await rejects("INSERT INTO measurement (time, sensor_id, value) VALUES (now(), 999999, 1)", [], "23503");
    await rejects("INSERT INTO setpoints (room_id, quantity, target) VALUES (999, 'co2', 1)", [], "23503");
    await rejects("INSERT INTO actuator_events (device_id, actuator, action) VALUES (999, 'fan', 'on')", [], "23503");
    await rejects("INSERT INTO crop_batch (room_id, name, started_at) VALUES (999, 'b', now())", [], "23503");
    // the parent cannot go while children point at it
    await rejects("DELETE FROM device WHERE device_id = 1", [], "23503");
  });

  it("rejects duplicates of every unique name and missing required values", async () => {
    await rejects(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES (900, 1, 'dry_bulb_b', 'u', 99)",
      [],
      "23505",
    );
    await rejects(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES (900, 1, 'x_new', 'u', 0)",
      [],
      "23505",
    );
    await rejects("INSERT INTO room (room_id, facility_id, name) VALUES (900, 1, 'Veg Room')", [], "23505");
    await rejects(
      "INSERT INTO device (device_id, room_id, name, device_type, node_id) VALUES (900, 1, 'x', 't', 1)",
      [],
      "23505",
    );
    await rejects("INSERT INTO measurement (time, sensor_id, value) VALUES (NULL, 101, 1)", [], "23502");
    await rejects("INSERT INTO measurement (time, sensor_id, value) VALUES (now(), 101, NULL)", [], "23502");
    await rejects("INSERT INTO measurement (time, sensor_id, value) VALUES (now(), NULL, 1)", [], "23502");
    await rejects(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES (900, NULL, 'y', 'u', 50)",
      [],
      "23502",
    );
  });

  it("makes a second identical write a no-op and a plain duplicate an error", async () => {
    const t = "2026-03-01T12:00:00.123456Z";
    const ins =
      "INSERT INTO measurement (time, sensor_id, value) VALUES ($1, 101, 21.5) ON CONFLICT (sensor_id, time) DO NOTHING";
    expect((await db.pool.query(ins, [t])).rowCount).toBe(1);
    expect((await db.pool.query(ins, [t])).rowCount).toBe(0);
    await rejects("INSERT INTO measurement (time, sensor_id, value) VALUES ($1, 101, 99)", [t], "23505");
    const { rows } = await db.pool.query("SELECT value FROM measurement WHERE sensor_id = 101 AND time = $1", [t]);
    expect(rows).toEqual([{ value: 21.5 }]);
  });
});

describe("aggregates", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  // Deterministic pseudo-random readings over ~3 days for three sensors.
  const readings = (from: number, n: number, seed: number) => {
    let x = seed;
    const out = [];
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const sensor = [101, 205, 310][i % 3]!;
      out.push({ time: new Date(from + i * 7_919).toISOString(), sensor_id: sensor, value: (x % 100_000) / 1000 - 20 });
    }
    return out;
  };

  async function write(rows: ReturnType<typeof readings>) {
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await writeMeasurements(c, rows);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
  }

  async function refresh() {
    if (isCommunity()) {
      // policies run on a schedule; refresh now so the materialized part is used as well
      for (const agg of AGGREGATES) await refreshAggregate(db.pool, agg);
    } else {
      await db.pool.query("SELECT cea_refresh_aggregates()");
    }
  }

  // hourly buckets in UTC, daily ones in the site's local days, computed here from the raw rows
  async function compare() {
    const raw = await rawReadings(db.pool);
    return {
      raw: raw.length,
      hourly: bucketDifferences(await storedBuckets(db.pool, "measurement_hourly"), aggregate(raw, utcHourStart)),
      daily: bucketDifferences(
        await storedBuckets(db.pool, "measurement_daily"),
        aggregate(raw, (ms) => localDayStart(ms, "Europe/Amsterdam")),
      ),
    };
  }

  it("gives exactly the min/max/avg/count of the raw rows, also after late data", async () => {
    const start = Date.parse("2026-02-01T00:00:00Z");
    await write(readings(start, 30_000, 7));
    await refresh();
    expect(await compare()).toEqual({ raw: 30_000, hourly: [], daily: [] });
    // late data: older readings inside already-aggregated buckets, plus a new earlier day
    await write(readings(start - 86_400_000 + 3_001, 20_000, 99));
    await refresh();
    expect(await compare()).toEqual({ raw: 50_000, hourly: [], daily: [] });
    const { rows } = await db.pool.query("SELECT sum(sample_count)::int AS n FROM measurement_daily");
    expect(rows[0].n).toBe(50_000);
  });
});

describe("schema verify", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  const drops: [string, string][] = [
    ["DROP INDEX measurement_sensor_time_key", "unique key measurement(sensor_id,time)"],
    ["ALTER TABLE sensor DROP CONSTRAINT sensor_name_key", "unique key sensor(name)"],
    ["ALTER TABLE sensor DROP CONSTRAINT sensor_device_id_fkey", "foreign key sensor(device_id) -> device"],
    ["DROP TABLE actuator_events", "table actuator_events"],
  ];

  it.each(drops)("fails after: %s", async (ddl, check) => {
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await c.query(ddl);
      const r = await verifySchema(c);
      expect(r.ok).toBe(false);
      expect(r.checks.filter((x) => !x.ok).map((x) => x.name)).toContain(check);
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
    expect((await verifySchema(db.pool)).ok).toBe(true);
  });

  it("fails when an aggregate is missing", async () => {
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await c.query(isCommunity() ? "DROP MATERIALIZED VIEW measurement_daily" : "DROP TABLE measurement_daily");
      const r = await verifySchema(c);
      expect(r.ok).toBe(false);
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
  });

  it("the verify command exits 1 on a database with one piece dropped, 0 on a whole one", async () => {
    const cli = projectPath("dist/pipeline/cli.js");
    const env = { ...process.env, CEA_DATABASE_URL: db.url };
    const ok = await run("node", [cli, "schema", "verify"], { env });
    expect(ok.stdout).toMatch(/schema OK/);
    await db.pool.query("DROP INDEX measurement_sensor_time_key");
    const bad = await run("node", [cli, "schema", "verify"], { env }).then(
      () => ({ code: 0, stdout: "" }),
      (e: { code: number; stdout: string }) => e,
    );
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/MISSING {2}unique key measurement\(sensor_id,time\)/);
  });
});

describe.runIf(isCommunity())("Community edition features", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("compresses chunks older than 90 days through the policy job, and reads them back", async () => {
    const old = Date.now() - 120 * 86_400_000;
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await writeMeasurements(
        c,
        Array.from({ length: 2000 }, (_, i) => ({
          time: new Date(old + i * 1000),
          sensor_id: 101 + (i % 5),
          value: i,
        })),
      );
      await c.query("COMMIT");
    } finally {
      c.release();
    }
    const { rows: job } = await db.pool.query(
      "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' AND hypertable_name = 'measurement'",
    );
    await db.pool.query(`CALL run_job(${Number(job[0].job_id)})`);
    const { rows } = await db.pool.query(
      "SELECT count(*) FILTER (WHERE is_compressed)::int AS compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'measurement'",
    );
    expect(rows[0].compressed).toBeGreaterThan(0);
    const back = await db.pool.query("SELECT count(*)::int AS n, sum(value) AS s FROM measurement");
    expect(back.rows[0]).toEqual({ n: 2000, s: (1999 * 2000) / 2 });
    // a retried write into a compressed chunk is still a no-op
    const c2 = await db.pool.connect();
    try {
      await c2.query("BEGIN");
      const n = await writeMeasurements(c2, [{ time: new Date(old), sensor_id: 101, value: 0 }]);
      await c2.query("COMMIT");
      expect(n).toBe(0);
    } finally {
      c2.release();
    }
  });

  it("refresh policies run (run_job) and the aggregates hold what the raw rows say", async () => {
    const { rows: jobs } = await db.pool.query(
      "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'",
    );
    expect(jobs.length).toBe(2);
    for (const j of jobs) await db.pool.query(`CALL run_job(${Number(j.job_id)})`);
    const { rows } = await db.pool.query(
      `SELECT (SELECT sum(sample_count) FROM measurement_hourly)::int AS h,
              (SELECT sum(sample_count) FROM measurement_daily)::int AS d,
              (SELECT count(*) FROM measurement)::int AS raw`,
    );
    expect(rows[0].h).toBe(rows[0].raw);
    expect(rows[0].d).toBe(rows[0].raw);
  });
});

describe("raw-data retention", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("is off by default, and when set drops only chunks older than the interval", async () => {
    const { setRetention } = await import("../../db/schema.js");
    const old = new Date(Date.now() - 40 * 86_400_000).toISOString();
    const recent = new Date(Date.now() - 2 * 86_400_000).toISOString();
    await db.pool.query("INSERT INTO measurement (time, sensor_id, value) VALUES ($1, 101, 1), ($2, 101, 2)", [
      old,
      recent,
    ]);
    expect((await db.pool.query("SELECT cea_apply_retention() AS n")).rows[0].n).toBe(0);
    await setRetention(db.pool, "30 days");
    if (isCommunity()) {
      const { rows } = await db.pool.query(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'",
      );
      expect(rows).toHaveLength(1);
      await db.pool.query(`CALL run_job(${Number(rows[0].job_id)})`);
    } else {
      expect((await db.pool.query("SELECT cea_apply_retention() AS n")).rows[0].n).toBe(1);
    }
    const left = await db.pool.query("SELECT value FROM measurement ORDER BY time");
    expect(left.rows).toEqual([{ value: 2 }]);
    await setRetention(db.pool, null);
    expect((await db.pool.query("SELECT value FROM cea_setting WHERE key = 'raw_retention'")).rows[0].value).toBeNull();
  });
});

describe("the shared write path", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("keeps working on a connection whose first write was rolled back", async () => {
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await writeMeasurements(c, [{ time: "2026-03-02T00:00:00Z", sensor_id: 101, value: 1 }]);
      await c.query("ROLLBACK");
      await c.query("BEGIN");
      const n = await writeMeasurements(c, [
        { time: "2026-03-02T00:00:00Z", sensor_id: 101, value: 1 },
        { time: "2026-03-02T00:00:00.000001Z", sensor_id: 101, value: 2, status: "tab\there\\" },
      ]);
      await c.query("COMMIT");
      expect(n).toBe(2);
    } finally {
      c.release();
    }
    const { rows } = await db.pool.query(
      "SELECT to_char(time AT TIME ZONE 'UTC', 'HH24:MI:SS.US') AS t, value, status FROM measurement ORDER BY time",
    );
    expect(rows).toEqual([
      { t: "00:00:00.000000", value: 1, status: null },
      { t: "00:00:00.000001", value: 2, status: "tab\there\\" },
    ]);
  });
});
