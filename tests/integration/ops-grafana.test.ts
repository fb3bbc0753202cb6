import { readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeMeasurements } from "../../db/measurements.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

// Every SQL text of the provisioned dashboard runs on a real database with a
// little data, its Grafana macros replaced by concrete values the way Grafana's
// PostgreSQL datasource expands them.

interface Target {
  refId: string;
  rawSql: string;
}
interface Panel {
  title: string;
  type: string;
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; query: string }[] };
}

const dashboard = JSON.parse(readFileSync(projectPath("ops/grafana/dashboards/cea-climate.json"), "utf8")) as Dashboard;
const flat = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...flat(p.panels ?? [])]);
const queryPanels = flat(dashboard.panels).filter((p) => p.targets?.length);
const panel = (prefix: string) => {
  const p = queryPanels.find((q) => q.title.startsWith(prefix));
  if (!p) throw new Error(`no panel ${prefix}`);
  return p;
};

const quoteList = (vals: string[]) => vals.map((v) => `'${v.replace(/'/g, "''")}'`).join(",");

/** The SQL Grafana would send for this range and these variable values. */
function expand(
  sql: string,
  from: Date,
  to: Date,
  vars: { room: string[]; sensor: string[] },
  intervalMs = 60_000,
): string {
  const f = `'${from.toISOString()}'`;
  const t = `'${to.toISOString()}'`;
  const out = sql
    .replace(/\$__timeFilter\(([^)]+)\)/g, (_, col: string) => `${col} BETWEEN ${f} AND ${t}`)
    .replace(/\$__timeFrom\(\)/g, f)
    .replace(/\$__timeTo\(\)/g, t)
    .replace(/\$__interval_ms/g, String(intervalMs))
    .replace(/\$room\b/g, quoteList(vars.room))
    .replace(/\$sensor\b/g, quoteList(vars.sensor));
  if (out.includes("$")) throw new Error(`unexpanded macro left in:\n${out}`);
  return out;
}

const HOUR = 3_600_000;
const now = new Date();
// data: the last 3 hours every minute, and one hour 10 days ago; nothing in between
const recentStart = new Date(Math.floor((now.getTime() - 3 * HOUR) / HOUR) * HOUR);
const oldHour = new Date(Math.floor((now.getTime() - 10 * 24 * HOUR) / HOUR) * HOUR);
const FLOWER = [101, 103, 105, 106]; // dry_bulb_b, rh_b, co2_b, vpd_b
const VALUE: Record<number, number> = { 101: 25, 103: 60, 105: 900, 106: 1.1 };

let db: TestDatabase;
// the dashboard's queries run as the role Grafana's datasource uses (read-only)
let reader: pg.Pool;
let allSensors: string[];
let allRooms: string[];

beforeAll(async () => {
  db = await createTestDatabase();
  reader = new pg.Pool({ connectionString: db.urlAs("reader"), max: 2 });
  const rows: { time: Date; sensor_id: number; value: number }[] = [];
  for (const id of FLOWER) {
    for (let t = recentStart.getTime(); t < now.getTime() - 60_000; t += 60_000)
      rows.push({ time: new Date(t), sensor_id: id, value: VALUE[id]! });
    for (let i = 0; i < 60; i++)
      rows.push({ time: new Date(oldHour.getTime() + i * 60_000), sensor_id: id, value: VALUE[id]! });
  }
  const c = await db.pool.connect();
  try {
    await c.query("BEGIN");
    await writeMeasurements(c, rows);
    await c.query("COMMIT");
    // Apache edition: bring the aggregate tables up to date; Community: real-time aggregation covers it
    await c.query("SELECT cea_refresh_aggregates()");
  } finally {
    c.release();
  }
  allRooms = (
    await reader.query<{ name: string }>(
      expand(dashboard.templating.list[0]!.query, now, now, { room: [], sensor: [] }),
    )
  ).rows.map((r) => r.name);
  allSensors = (
    await reader.query<{ name: string }>(
      expand(dashboard.templating.list[1]!.query, now, now, { room: allRooms, sensor: [] }),
    )
  ).rows.map((r) => r.name);
});
afterAll(async () => {
  await reader?.end();
  await db?.drop();
});

describe("Grafana provisioning files", () => {
  it("the datasource is PostgreSQL with TimescaleDB enabled and no password in the file", () => {
    const yaml = readFileSync(projectPath("ops/grafana/provisioning/datasources/cea.yaml"), "utf8");
    expect(yaml).toMatch(/^apiVersion: 1$/m);
    expect(yaml).toMatch(/^\s+type: postgres$/m);
    expect(yaml).toMatch(/^\s+uid: cea-timescaledb$/m);
    expect(yaml).toMatch(/^\s+timescaledb: true$/m);
    expect(yaml).toMatch(/^\s+password: \$CEA_GRAFANA_DB_PASSWORD$/m);
    // the read-only role of the schema (db/migrations/0002_roles.sql), which the queries below run as
    expect(yaml).toMatch(/^\s+user: cea_reader$/m);
  });

  it("the dashboard provider points at the installed dashboards directory, and every panel uses the datasource", () => {
    const yaml = readFileSync(projectPath("ops/grafana/provisioning/dashboards/cea.yaml"), "utf8");
    expect(yaml).toMatch(/^\s+path: \/opt\/cea-telemetry\/ops\/grafana\/dashboards$/m);
    expect(dashboard.uid).toBe("cea-climate");
    const text = JSON.stringify(dashboard);
    const uids = new Set([...text.matchAll(/"uid":"([^"]+)"/g)].map((m) => m[1]));
    expect([...uids].sort()).toEqual(["cea-climate", "cea-timescaledb"]);
  });
});

describe("dashboard SQL on a real database", () => {
  it("the variables list the rooms and the sensors of the site", () => {
    expect(allRooms).toEqual(["Flower Room", "Lab", "Outside", "Veg Room"]);
    expect(allSensors).toHaveLength(65 + 9); // the CAN nodes' sensors (with the applied outputs) and the derived ones
  });

  const ranges: [string, number][] = [
    ["6 hours (raw)", 6 * HOUR],
    ["14 days (hourly)", 14 * 24 * HOUR],
    ["200 days (daily)", 200 * 24 * HOUR],
  ];
  it.each(ranges)("every panel query runs without error over %s", async (_, span) => {
    const from = new Date(now.getTime() - span);
    let ran = 0;
    for (const p of queryPanels) {
      for (const t of p.targets ?? []) {
        const sql = expand(t.rawSql, from, now, { room: allRooms, sensor: allSensors });
        await expect(reader.query(sql), `${p.title} ${t.refId}`).resolves.toBeDefined();
        ran++;
      }
    }
    // five climate panels of three ranges each, the actuator timeline, samples per hour, latest reading
    expect(ran).toBe(5 * 3 + 1 + 2);
  });

  /** Rows of each target of a panel for a range, for the Flower Room only. */
  async function rowsByTarget(title: string, span: number) {
    const from = new Date(now.getTime() - span);
    const out: Record<string, { time: Date; metric: string; value: number }[]> = {};
    for (const t of panel(title).targets ?? []) {
      const sql = expand(t.rawSql, from, now, { room: ["Flower Room"], sensor: allSensors }, 600_000);
      out[t.refId] = (await reader.query(sql)).rows;
    }
    return out;
  }

  it("a short range reads raw rows, a long one the hourly aggregate, a very long one the daily aggregate", async () => {
    const short = await rowsByTarget("Temperature", 6 * HOUR);
    expect(short.A!.length).toBeGreaterThan(0);
    expect(new Set(short.A!.map((r) => r.metric))).toEqual(new Set(["dry_bulb_b"]));
    expect(short.A!.every((r) => r.value === 25)).toBe(true);
    expect(short.B).toEqual([]);
    expect(short.C).toEqual([]);

    const long = await rowsByTarget("Temperature", 14 * 24 * HOUR);
    expect(long.A).toEqual([]);
    expect(long.C).toEqual([]);
    // the old hour and the three-ish recent hours, one row each
    expect(long.B!.map((r) => r.time.getTime())).toContain(oldHour.getTime());
    expect(long.B!.every((r) => r.metric === "dry_bulb_b" && r.value === 25)).toBe(true);

    const veryLong = await rowsByTarget("CO2", 200 * 24 * HOUR);
    expect(veryLong.A).toEqual([]);
    expect(veryLong.B).toEqual([]);
    expect(veryLong.C!.length).toBeGreaterThanOrEqual(2);
    expect(veryLong.C!.every((r) => r.metric === "co2_b" && r.value === 900)).toBe(true);
  });

  it("the VPD and dew point panels show the derived sensors by kind next to the nodes' own", async () => {
    // derived rows of the Flower Room (911 air VPD, 912 leaf VPD, 913 dew point) in the last hour
    const t = new Date(now.getTime() - 30 * 60_000);
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await writeMeasurements(c, [
        { time: t, sensor_id: 911, value: 1.27 },
        { time: t, sensor_id: 912, value: 0.91 },
        { time: t, sensor_id: 913, value: 16.7 },
      ]);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
    const vpd = await rowsByTarget("VPD", 6 * HOUR);
    expect(new Set(vpd.A!.map((r) => r.metric))).toEqual(
      new Set(["vpd_b", "air_vpd_flower_calc", "leaf_vpd_flower_calc"]),
    );
    const dew = await rowsByTarget("Dew point", 6 * HOUR);
    expect(dew.A!.map((r) => [r.metric, r.value])).toEqual([["dew_point_flower_calc", 16.7]]);
    await db.pool.query("DELETE FROM measurement WHERE sensor_id IN (911, 912, 913)");
  });

  it("the actuator timeline: each actuator's state from actuator_events, the state at the range start first", async () => {
    // events of node-1's heater in the Flower Room, and one of the Veg Room's node that must not show
    const at = (minAgo: number) => new Date(now.getTime() - minAgo * 60_000);
    const events: [number, string, string, Date][] = [
      [1, "heater", "on", at(120)], // before the range: the state at its start
      [1, "heater", "off", at(50)],
      [1, "heater", "safe", at(20)],
      [1, "heater", "hold", at(10)], // not a state change: left out
      [1, "humidifier", "on", at(30)],
      [3, "heater", "on", at(40)],
    ];
    for (const [device, actuator, action, time] of events)
      await db.pool.query("INSERT INTO actuator_events (device_id, actuator, action, time) VALUES ($1, $2, $3, $4)", [
        device,
        actuator,
        action,
        time,
      ]);
    // a dry run decides without sending: its decisions switched nothing and must not show as switching
    await db.pool.query(
      `INSERT INTO actuator_events (device_id, actuator, action, time, dry_run)
       VALUES (1, 'heater', 'on', $1, true), (1, 'co2_valve', 'on', $2, true), (1, 'humidifier', 'off', $3, true)`,
      [at(45), at(90), at(25)],
    );
    try {
      const from = at(60);
      const sql = expand(panel("Actuators").targets![0]!.rawSql, from, now, {
        room: ["Flower Room"],
        sensor: allSensors,
      });
      const rows = (await reader.query<{ time: Date; metric: string; value: number }>(sql)).rows;
      expect(rows.map((r) => [r.time.getTime(), r.metric, r.value])).toEqual([
        [from.getTime(), "node-1 heater", 1],
        [at(50).getTime(), "node-1 heater", 0],
        [at(30).getTime(), "node-1 humidifier", 1],
        [at(20).getTime(), "node-1 heater", 2],
      ]);
    } finally {
      await db.pool.query("DELETE FROM actuator_events");
    }
  });

  it("the samples-per-hour panel lists every hour, with 0 where there is no data", async () => {
    const from = new Date(oldHour.getTime() - 2 * HOUR);
    const to = new Date(oldHour.getTime() + 3 * HOUR - 1);
    const sql = expand(panel("Samples per hour").targets![0]!.rawSql, from, to, {
      room: ["Flower Room"],
      sensor: allSensors,
    });
    const rows = (await reader.query<{ time: Date; metric: string; samples: string }>(sql)).rows;
    expect(rows.map((r) => [r.time.getTime() - oldHour.getTime(), r.metric, Number(r.samples)])).toEqual([
      [-2 * HOUR, "Flower Room", 0],
      [-HOUR, "Flower Room", 0],
      [0, "Flower Room", 4 * 60],
      [HOUR, "Flower Room", 0],
      [2 * HOUR, "Flower Room", 0],
    ]);
  });
});
