import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadSite, syncSite } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, runService } from "../support/procs.js";
import { type Api, startApi } from "./api-harness.js";

// Status values named by the CAN database's value tables, through the API on
// the real stack: the greenhouse fixtures (a vendor-shaped DBC and the same
// layout as KCD) map sensor 1003 to Status_Std.NodeState (0 Off, 1 Boot,
// 2 Run, 3 Error) and 1014 to Substrate_Mux.SensorState (… 255 No sensor);
// 1001 (a float temperature) has no value table.

const siteFile = projectPath("tests/fixtures/greenhouse-site.json");
const T = "2024-05-01T10:00:0";
const WINDOW = "start=2024-05-01T10:00:00Z&end=2024-05-01T11:00:00Z&resolution=raw";
const NODE_STATE = { "0": "Off", "1": "Boot", "2": "Run", "3": "Error" };

let db: TestDatabase;
const dir = mkdtempSync(join(tmpdir(), "cea-labels-"));

beforeAll(async () => {
  db = await createTestDatabase();
  const c = await db.pool.connect();
  try {
    await syncSite(c, await loadSite(siteFile));
  } finally {
    c.release();
  }
});
afterAll(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
  await db?.drop();
});

describe.each([
  ["DBC", "tests/fixtures/greenhouse.dbc"],
  ["KCD", "tests/fixtures/greenhouse.kcd"],
])("value labels from the %s file", (_format, canDb) => {
  let api: Api;
  const get = (url: string, headers: Record<string, string> = {}) =>
    api.app.inject({ url: `/api/v1${url}`, headers: { ...api.auth, ...headers } });

  beforeAll(async () => {
    api = await startApi({ CEA_SITE_FILE: siteFile, CEA_CAN_DB_FILE: canDb }, { db });
    // stored through the write route (idempotent: the second format's run finds them stored)
    const res = await api.app.inject({
      method: "POST",
      url: "/api/v1/measurements",
      headers: api.auth,
      payload: [
        { time: `${T}0Z`, sensor_id: 1003, value: 2 },
        { time: `${T}1Z`, sensor_id: 1003, value: 7 },
        { time: `${T}0Z`, sensor_id: 1014, value: 255 },
        { time: `${T}0Z`, sensor_id: 1001, value: 21.5 },
      ],
    });
    expect([200, 201]).toContain(res.statusCode);
  });
  afterAll(() => api?.close());

  it("sensor metadata lists the value table; null for a sensor without one", async () => {
    const one = (await get("/sensors/1003")).json();
    expect(one.labels).toEqual(NODE_STATE);
    expect((await get("/sensors/1014")).json().labels).toEqual({
      "0": "OK",
      "1": "Degraded",
      "2": "Warming up",
      "3": "Fault",
      "255": "No sensor",
    });
    expect((await get("/sensors/1001")).json().labels).toBeNull();
    const list = (await get("/sensors?room_id=10")).json().sensors as { id: number; labels: unknown }[];
    expect(list.find((s) => s.id === 1003)?.labels).toEqual(NODE_STATE);
    expect(list.find((s) => s.id === 1001)?.labels).toBeNull();
  });

  it("raw history names a stored value; an unlisted value has label null; a sensor without a table has none", async () => {
    const h = (await get(`/sensors/1003/history?${WINDOW}`)).json();
    expect(h.points).toEqual([
      { time: "2024-05-01T10:00:00.000000Z", value: 2, status: null, label: "Run" },
      { time: "2024-05-01T10:00:01.000000Z", value: 7, status: null, label: null },
    ]);
    const plain = (await get(`/sensors/1001/history?${WINDOW}`)).json();
    expect(plain.points).toEqual([{ time: "2024-05-01T10:00:00.000000Z", value: 21.5, status: null }]);
    const room = (await get(`/rooms/10/history?${WINDOW}`)).json();
    const series = (id: number) =>
      room.series.find((s: { sensor_id: number }) => s.sensor_id === id).points as Record<string, unknown>[];
    expect(series(1014)).toEqual([
      { time: "2024-05-01T10:00:00.000000Z", value: 255, status: null, label: "No sensor" },
    ]);
    expect(series(1003).map((p) => p.label)).toEqual(["Run", null]);
    expect(series(1001)[0]).not.toHaveProperty("label");
  });

  it("CSV: the label is the last cell, empty when there is none", async () => {
    const csv = (await get(`/rooms/10/history?${WINDOW}&format=csv`)).body.trimEnd().split("\n");
    expect(csv[2]).toBe("sensor_id,sensor,time,value,status,label");
    expect(csv).toContain("1003,node_state_a,2024-05-01T10:00:00.000000Z,2,,Run");
    expect(csv).toContain("1003,node_state_a,2024-05-01T10:00:01.000000Z,7,,");
    expect(csv).toContain("1014,substrate_state_gh,2024-05-01T10:00:00.000000Z,255,,No sensor");
    expect(csv).toContain("1001,air_temp_gh,2024-05-01T10:00:00.000000Z,21.5,,");
  });

  it("aggregate points carry no label", async () => {
    const h = (
      await get("/sensors/1003/history?start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z&resolution=hourly")
    ).json();
    for (const p of h.points) expect(p).not.toHaveProperty("label");
  });

  it("live values: the label of the current value", async () => {
    const key = `${api.prefix}live:values`;
    const time = new Date().toISOString();
    await api.redis.hset(key, {
      "1003": JSON.stringify({ value: 3, time, name: "node_state_a", status: null }),
      "1014": JSON.stringify({ value: 9, time, name: "substrate_state_gh", status: null }),
      "1001": JSON.stringify({ value: 20.25, time, name: "air_temp_gh", status: null }),
    });
    const live = (await get("/rooms/10/live")).json();
    const by = (id: number) => live.values.find((v: { sensor_id: number }) => v.sensor_id === id);
    expect(by(1003)).toMatchObject({ value: 3, label: "Error" });
    expect(by(1014)).toMatchObject({ value: 9, label: null });
    expect(by(1001)).not.toHaveProperty("label");
    expect((await get("/live")).json().values.find((v: { sensor_id: number }) => v.sensor_id === 1003).label).toBe(
      "Error",
    );
  });

  it("the OpenAPI document describes label and labels", async () => {
    const doc = (await api.app.inject({ url: "/api/v1/openapi.json" })).json();
    const text = JSON.stringify(doc);
    const sensor = doc.paths["/api/v1/sensors/{id}"].get.responses["200"].content["application/json"].schema;
    expect(sensor.properties.labels).toBeDefined();
    expect(sensor.required).toContain("labels");
    expect(text).toContain("the value's name in the signal's value table");
  });
});

describe("start-up: the CAN database as can-worker loads it", () => {
  it("a message the loader refuses is logged once, naming file and message; the API serves the rest", async () => {
    const api = await startApi({ CEA_SITE_FILE: siteFile, CEA_CAN_DB_FILE: "tests/fixtures/greenhouse.dbc" }, { db });
    try {
      const refused = api.logs.filter((l) => l.includes("CAN database message refused"));
      expect(refused).toHaveLength(1);
      expect(refused[0]).toContain("greenhouse.dbc");
      expect(refused[0]).toContain("HalfFloat_Bad");
      expect((await api.app.inject({ url: "/api/v1/sensors/1003", headers: api.auth })).json().labels).toEqual(
        NODE_STATE,
      );
    } finally {
      await api.close();
    }
  });

  const backend = (canDb: string) =>
    runService(
      "cea-backend",
      {
        PATH: process.env.PATH ?? "",
        CEA_DATABASE_URL: db.url,
        CEA_REDIS_URL: inject("redisUrl"),
        CEA_REDIS_PREFIX: testPrefix(),
        CEA_API_TOKEN: "labels-test-token-0123456789",
        CEA_HTTP_HOST: "127.0.0.1",
        CEA_HTTP_PORT: "0",
        CEA_SITE_FILE: siteFile,
        CEA_CAN_DB_FILE: canDb,
      },
      [],
    );

  it("a CAN database that cannot be read as one stops cea-backend (exit 1) naming the file", async () => {
    const bad = join(dir, "broken.dbc");
    writeFileSync(bad, 'VERSION ""\nhello\n');
    const exit = await backend(bad);
    expect(exit.code).toBe(1);
    expect(exit.output).toContain(`${bad}:2: not a DBC statement`);
  });

  it("a site sensor on a signal the CAN database lacks stops cea-backend naming the site file and signal", async () => {
    const exit = await backend(projectPath("ops/cea.kcd"));
    expect(exit.code).toBe(1);
    expect(exit.output).toContain("greenhouse-site.json: devices.0.sensors.0.signal");
    expect(exit.output).toContain('"ClimateFloat_N1.AirTemp" is not a signal of');
  });
});
