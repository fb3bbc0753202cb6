import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { writeMeasurements } from "../../db/measurements.js";
import { PRIVILEGES, ROLES, type ServiceRole } from "../../db/roles.js";
import { applySchema, formatVerifyReport, verifySchema } from "../../db/schema.js";
import { loadSite, syncSite } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, isCommunity, type TestDatabase } from "../support/db.js";
import { withDatabase } from "../support/global-setup.js";
import { startPrivatePg } from "../support/private-pg.js";

// Each kind of client connects as its own role and can do what it needs and
// nothing more; `cea schema verify` checks the grants; the schema applies as an
// owner that is not a superuser.

describe("database roles", () => {
  let db: TestDatabase;
  const pools = new Map<ServiceRole, pg.Pool>();
  const as = (role: ServiceRole) => {
    let p = pools.get(role);
    if (!p) {
      p = new pg.Pool({ connectionString: db.urlAs(role), max: 2 });
      p.on("error", () => undefined);
      pools.set(role, p);
    }
    return p;
  };
  const denied = async (role: ServiceRole, sql: string, params: unknown[] = []) =>
    expect(as(role).query(sql, params), `${ROLES[role]}: ${sql}`).rejects.toMatchObject({ code: "42501" });

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all([...pools.values()].map((p) => p.end()));
    await db?.drop();
  });

  it("verify finds every role with exactly its privileges", async () => {
    const r = await verifySchema(db.pool);
    expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    const privilegeChecks = r.checks.filter((c) => c.name.startsWith("privilege: "));
    expect(privilegeChecks).toHaveLength(PRIVILEGES.length);
    expect(r.features.roles).toMatch(/^4 of 4 \(login: /);
    // the API's health route runs the same check as the API's role
    expect((await verifySchema(as("api"))).checks.filter((c) => !c.ok)).toEqual([]);
  });

  it("the worker writes measurements and runs its maintenance, and can change nothing else", async () => {
    const w = await as("worker").connect();
    try {
      await w.query("BEGIN");
      // COPY + INSERT … ON CONFLICT … RETURNING, and the aggregate queue, as the worker writes
      expect(await writeMeasurements(w, [{ time: "2026-02-01T10:00:00Z", sensor_id: 101, value: 20 }])).toBe(1);
      await w.query("COMMIT");
    } finally {
      w.release();
    }
    await as("worker").query("SELECT cea_refresh_aggregates()");
    await as("worker").query("SELECT cea_apply_retention()");
    const h = await db.pool.query("SELECT sample_count::int AS n FROM measurement_hourly WHERE sensor_id = 101");
    expect(h.rows).toEqual([{ n: 1 }]);
    expect((await as("worker").query("SELECT count(*)::int AS n FROM sensor")).rows[0].n).toBe(65 + 9);
    await denied("worker", "DELETE FROM measurement");
    await denied("worker", "UPDATE measurement SET value = 0");
    await denied("worker", "UPDATE sensor SET calibration_offset = 1");
    await denied("worker", "DELETE FROM measurement_agg_pending");
    await denied("worker", "INSERT INTO setpoints (room_id, quantity, target) VALUES (1, 'co2', 20)");
    await denied("worker", "UPDATE cea_setting SET value = '1 day'");
    await denied("worker", "SELECT drop_chunks('measurement', older_than => INTERVAL '1 day')");
  });

  it("the API reads and writes measurements, and runs no maintenance", async () => {
    const a = await as("api").connect();
    try {
      await a.query("BEGIN");
      expect(await writeMeasurements(a, [{ time: "2026-02-01T11:00:00Z", sensor_id: 101, value: 21 }])).toBe(1);
      await a.query("COMMIT");
    } finally {
      a.release();
    }
    const back = await as("api").query("SELECT count(*)::int AS n FROM measurement WHERE sensor_id = 101");
    expect(back.rows[0].n).toBe(2);
    await as("api").query("SELECT count(*) FROM measurement_daily");
    await denied("api", "SELECT cea_refresh_aggregates()");
    await denied("api", "SELECT cea_apply_retention()");
    await denied("api", "DELETE FROM measurement");
    await denied("api", "DELETE FROM measurement_agg_pending");
  });

  it("the reader only reads", async () => {
    const r = await as("reader").query(
      `SELECT (SELECT count(*) FROM measurement)::int AS m, (SELECT count(*) FROM measurement_hourly) >= 0 AS h,
              (SELECT count(*) FROM room)::int AS rooms`,
    );
    expect(r.rows[0]).toEqual({ m: 2, h: true, rooms: 4 });
    await denied("reader", "INSERT INTO measurement (time, sensor_id, value) VALUES (now(), 101, 1)");
    await denied("reader", "INSERT INTO measurement_agg_pending VALUES (101, now())");
    await denied("reader", "SELECT cea_refresh_aggregates()");
    await denied("reader", "UPDATE room SET target_temp = 30");
  });

  it("the API writes setpoints; the automation service records decisions, writes no setpoint and no measurement", async () => {
    const sp = await as("api").query(
      "INSERT INTO setpoints (room_id, quantity, period, target, tolerance) VALUES (1, 'air_temperature', 'day', 24, 1) RETURNING setpoint_id",
    );
    await as("automation").query(
      `INSERT INTO actuator_events (device_id, room_id, actuator, action, value, setpoint, band, state, dry_run, setpoint_id)
       VALUES (1, 1, 'heater', 'on', 22.5, 24, 1, true, false, $1)`,
      [sp.rows[0].setpoint_id],
    );
    expect((await as("api").query("SELECT actuator, state FROM actuator_events")).rows).toEqual([
      { actuator: "heater", state: true },
    ]);
    await denied("automation", "INSERT INTO setpoints (room_id, quantity, target) VALUES (1, 'co2', 800)");
    await denied("automation", "INSERT INTO measurement (time, sensor_id, value) VALUES (now(), 101, 1)");
    await denied("automation", "DELETE FROM setpoints");
    await denied("api", "INSERT INTO actuator_events (device_id, actuator, action) VALUES (1, 'heater', 'on')");
    // a quantity the controller does not know and a period that is neither day, night nor any
    await expect(
      as("api").query("INSERT INTO setpoints (room_id, quantity, target) VALUES (1, 'temp', 20)"),
    ).rejects.toMatchObject({ code: "23514" });
    await expect(
      as("api").query("INSERT INTO setpoints (room_id, quantity, period, target) VALUES (1, 'co2', 'dusk', 800)"),
    ).rejects.toMatchObject({ code: "23514" });
  });

  it("verify names a grant that is missing and one that must not be there", async () => {
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await c.query("REVOKE INSERT ON measurement FROM cea_writer");
      await c.query("GRANT DELETE ON measurement TO cea_reader");
      const r = await verifySchema(c);
      expect(r.ok).toBe(false);
      const text = formatVerifyReport(r);
      expect(text).toMatch(/MISSING {2}privilege: cea_writer may INSERT measurement\n/);
      expect(text).toMatch(/WRONG {4}privilege: cea_reader may not DELETE measurement\n/);
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
    expect((await verifySchema(db.pool)).ok).toBe(true);
  });
});

describe("the schema owner", () => {
  const owner = `cea_owner_${randomBytes(4).toString("hex")}`;
  const name = `cea_t_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: withDatabase(inject("databaseUrl"), "postgres") });
  beforeAll(async () => {
    await admin.connect();
    // no superuser, no CREATEROLE, no CREATEDB: a database of its own with the extension already created
    await admin.query(`CREATE ROLE ${owner} LOGIN`);
    await admin.query(`CREATE DATABASE ${name} OWNER ${owner}`);
    const su = new pg.Client({ connectionString: withDatabase(inject("databaseUrl"), name) });
    await su.connect();
    await su.query("CREATE EXTENSION timescaledb");
    await su.end();
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(`DROP ROLE IF EXISTS ${owner}`);
    await admin.end();
  });

  it("needs no superuser: applies every migration, syncs the site and verifies", async () => {
    const u = new URL(withDatabase(inject("databaseUrl"), name));
    u.username = owner;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      expect((await c.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).rows[0].rolsuper).toBe(
        false,
      );
      await applySchema(c);
      await syncSite(c, await loadSite(projectPath("ops/site.json")));
      const r = await verifySchema(c);
      expect(r.checks.filter((x) => !x.ok)).toEqual([]);
      if (isCommunity()) {
        const jobs = await c.query(
          "SELECT DISTINCT owner::text FROM timescaledb_information.jobs WHERE job_id >= 1000",
        );
        expect(jobs.rows).toEqual([{ owner }]);
      }
    } finally {
      await c.end();
    }
  });
});

describe("a cluster without the roles", () => {
  it("an owner that may not create roles is told what to create; once created, the schema applies", async () => {
    const cluster = await startPrivatePg({ bindir: inject("pgBindir") });
    const su = new pg.Client({ connectionString: cluster.url.replace(/\/cea$/, "/postgres") });
    await su.connect();
    try {
      // a cluster where the roles were never created: drop what the private cluster's set-up made
      await su.query("DROP DATABASE cea WITH (FORCE)");
      for (const r of Object.values(ROLES)) await su.query(`DROP ROLE ${r}`);
      await su.query("CREATE ROLE owner_t LOGIN");
      await su.query("CREATE DATABASE cea OWNER owner_t");
      const ext = new pg.Client({ connectionString: cluster.url });
      await ext.connect();
      await ext.query("CREATE EXTENSION timescaledb");
      await ext.end();

      const ownerUrl = new URL(cluster.url);
      ownerUrl.username = "owner_t";
      const c = new pg.Client({ connectionString: ownerUrl.toString() });
      await c.connect();
      try {
        const err = (await applySchema(c).catch((e: unknown) => e)) as Error;
        expect(err).toBeInstanceOf(Error);
        expect(err.message).toMatch(/0002_roles\.sql: role cea_writer does not exist and owner_t may not create roles/);
        // nothing of the failed migration stays; the baseline before it does
        const { rows } = await c.query("SELECT version FROM cea_schema_migration ORDER BY version");
        expect(rows).toEqual([{ version: 1 }]);
        for (const r of Object.values(ROLES)) await su.query(`CREATE ROLE ${r} NOLOGIN`);
        const done = await applySchema(c);
        expect(done.applied.map((m) => m.version)[0]).toBe(2);
        expect((await verifySchema(c)).checks.filter((x) => !x.ok)).toEqual([]);
      } finally {
        await c.end();
      }
    } finally {
      await su.end();
      await cluster.cleanup();
    }
  });
});
