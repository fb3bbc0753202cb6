import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { rebuildAggregates } from "../../db/schema.js";
import { localDayStart, utcHourStart } from "../support/local-days.js";
import { type Api, startApi } from "./api-harness.js";

// Data set: sensor 301 one reading a minute and 302 one every 10 minutes, over
// three whole days, aggregates refreshed before any test reads them.
const START = "2024-03-01T00:00:00Z";
const END = "2024-03-04T00:00:00Z";

let api: Api;
beforeAll(async () => {
  api = await startApi();
  const db = api.db.pool;
  await db.query(
    `INSERT INTO measurement (time, sensor_id, value, status)
     SELECT t, s.id, round((20 + 5 * sin(extract(epoch FROM t) / 3600.0 + s.id))::numeric, 3)::float8, 'ok'
     FROM (VALUES (301, INTERVAL '1 minute'), (302, INTERVAL '10 minutes')) s(id, step),
          LATERAL generate_series($1::timestamptz, $2::timestamptz - INTERVAL '1 second', s.step) t`,
    [START, END],
  );
  await rebuildAggregates(db);
});
afterAll(() => api?.close());

const get = (url: string, headers: Record<string, string> = {}) =>
  api.app.inject({ url: `/api/v1${url}`, headers: { ...api.auth, ...headers } });

interface AggPoint {
  time: string;
  min: number;
  max: number;
  avg: number;
  count: number;
}
interface RawPoint {
  time: string;
  value: number;
  status: string | null;
}

describe("metadata", () => {
  it("GET /facility: rooms with racks, devices and their sensors", async () => {
    const res = await get("/facility");
    expect(res.statusCode).toBe(200);
    const tree = res.json();
    expect(tree.facility).toEqual({ id: 1, name: "CEA Facility", timezone: "Europe/Amsterdam" });
    expect(tree.rooms.map((r: { name: string }) => r.name)).toEqual(["Flower Room", "Veg Room", "Lab", "Outside"]);
    const flower = tree.rooms[0];
    expect(flower.racks.map((r: { name: string }) => r.name)).toEqual(["back", "front"]);
    const sensorIds = flower.devices.flatMap((d: { sensors: { id: number }[] }) => d.sensors.map((s) => s.id));
    expect(sensorIds.sort()).toEqual([
      ...Array.from({ length: 15 }, (_, i) => 101 + i), // 111–115: node 1's applied outputs
      ...Array.from({ length: 10 }, (_, i) => 201 + i),
      911, // the room's derived sensors (air VPD, leaf VPD, dew point) on its virtual device
      912,
      913,
    ]);
    expect(flower.devices[0].sensors[0]).toEqual({
      id: 101,
      name: "dry_bulb_b",
      unit: "°C",
      data_type: "float",
      kind: "air_temperature",
    });
  });

  it("GET /sensors filters by room, device and unit", async () => {
    const all = (await get("/sensors")).json().sensors;
    expect(all).toHaveLength(65 + 9); // the nodes' sensors (with the applied outputs) and the derived ones
    const veg = (await get("/sensors?room_id=2")).json().sensors;
    expect(veg.map((s: { id: number }) => s.id)).toEqual([
      ...Array.from({ length: 15 }, (_, i) => 301 + i), // 311–315: node 3's applied outputs
      921,
      922,
      923,
    ]);
    const dev = (await get(`/sensors?device_id=${veg[0].device_id}`)).json().sensors;
    expect(dev).toHaveLength(15);
    const celsius = (await get(`/sensors?unit=${encodeURIComponent("°C")}`)).json().sensors;
    expect(celsius.length).toBeGreaterThan(0);
    expect(celsius.length).toBeLessThan(50);
    expect(celsius.every((s: { unit: string }) => s.unit === "°C")).toBe(true);
    const both = (await get(`/sensors?room_id=2&unit=${encodeURIComponent("°C")}`)).json().sensors;
    expect(both.every((s: { room_id: number; unit: string }) => s.room_id === 2 && s.unit === "°C")).toBe(true);
    expect((await get("/sensors?room_id=abc")).statusCode).toBe(400);
    const unknownParam = await get("/sensors?rom_id=2");
    expect(unknownParam.statusCode).toBe(400);
    expect(unknownParam.json().issues[0].path).toBe("rom_id");
  });

  it("GET /sensors?kind= selects by what the sensors measure, not by their names", async () => {
    const temps = (await get("/sensors?kind=air_temperature")).json().sensors;
    expect(temps.map((s: { name: string }) => s.name)).toEqual([
      "dry_bulb_b",
      "dry_bulb_f",
      "dry_bulb_v",
      "dry_bulb_l",
      "dry_bulb_o",
    ]);
    expect(temps[0]).toMatchObject({ kind: "air_temperature", quantity: "temperature", unit: "°C" });
    // a sensor renamed away from the legacy pattern is still found by its kind
    await api.db.pool.query("UPDATE sensor SET name = 'canopy_air_b' WHERE sensor_id = 101");
    try {
      const renamed = (await get("/sensors?kind=air_temperature&room_id=1")).json().sensors;
      expect(renamed.map((s: { id: number; name: string }) => [s.id, s.name])).toEqual([
        [101, "canopy_air_b"],
        [201, "dry_bulb_f"],
      ]);
    } finally {
      await api.db.pool.query("UPDATE sensor SET name = 'dry_bulb_b' WHERE sensor_id = 101");
    }
    const co2Veg = (await get("/sensors?kind=co2&room_id=2")).json().sensors;
    expect(co2Veg.map((s: { name: string }) => s.name)).toEqual(["co2_v"]);
    const unknown = await get("/sensors?kind=temperature");
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().issues[0].path).toBe("kind");
  });

  it("GET /sensors/:id: the sensor with its device and room; 404 / 400 otherwise", async () => {
    const res = await get("/sensors/301");
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      id: 301,
      room_id: 2,
      room_name: "Veg Room",
      unit: expect.any(String),
      labels: null,
    });
    expect((await get("/sensors/9999")).statusCode).toBe(404);
    expect((await get("/sensors/x")).statusCode).toBe(400);
  });
});

describe("history", () => {
  it("raw: the readings of the window [start, end), oldest first", async () => {
    const res = await get(`/sensors/301/history?start=${START}&end=2024-03-01T01:00:00Z&resolution=raw`);
    expect(res.statusCode).toBe(200);
    const h = res.json();
    expect(h).toMatchObject({ resolution: "raw", requested_resolution: "raw", timezone: "Europe/Amsterdam" });
    expect(h.points).toHaveLength(60);
    expect(h.points[0]).toEqual({ time: "2024-03-01T00:00:00.000000Z", value: expect.any(Number), status: "ok" });
    expect(h.points[59].time).toBe("2024-03-01T00:59:00.000000Z");
  });

  it("hourly and daily come from the aggregates and agree with the raw readings of the same window", async () => {
    const raw: RawPoint[] = (await get(`/sensors/301/history?start=${START}&end=${END}&resolution=raw`)).json().points;
    expect(raw).toHaveLength(3 * 24 * 60);
    // hourly buckets are UTC hours; daily ones the facility's local days (Europe/Amsterdam:
    // 2024-03-01 begins at 2024-02-29T23:00Z), so the window touches four of them
    const hourOf = (t: string) => utcHourStart(Date.parse(t));
    const dayOf = (t: string) => localDayStart(Date.parse(t), "Europe/Amsterdam");
    for (const [resolution, bucketOf, n] of [
      ["hourly", hourOf, 72],
      ["daily", dayOf, 4],
    ] as const) {
      const res = await get(`/sensors/301/history?start=${START}&end=${END}&resolution=${resolution}`);
      const h = res.json();
      expect(h.resolution).toBe(resolution);
      const agg: AggPoint[] = h.points;
      expect(agg).toHaveLength(n);
      // group the raw points by bucket start
      const groups = new Map<number, number[]>();
      for (const p of raw) {
        const k = bucketOf(p.time);
        groups.set(k, [...(groups.get(k) ?? []), p.value]);
      }
      for (const a of agg) {
        expect(bucketOf(a.time), a.time).toBe(Date.parse(a.time));
        const vals = groups.get(Date.parse(a.time))!;
        expect(vals, a.time).toBeDefined();
        expect(a.count).toBe(vals.length);
        expect(a.min).toBe(Math.min(...vals));
        expect(a.max).toBe(Math.max(...vals));
        expect(a.avg).toBeCloseTo(vals.reduce((x, y) => x + y, 0) / vals.length, 9);
      }
    }
  });

  it("auto picks the finest resolution within the point budget and says which", async () => {
    const hour = (await get(`/sensors/301/history?start=${START}&end=2024-03-01T01:00:00Z`)).json();
    expect(hour).toMatchObject({ resolution: "raw", requested_resolution: "auto", point_budget: 2000 });
    const days = (await get(`/sensors/301/history?start=${START}&end=${END}&resolution=auto`)).json();
    expect(days.resolution).toBe("hourly");
    expect(days.points).toHaveLength(72);
    expect(days.points[0]).toEqual({
      time: "2024-03-01T00:00:00.000000Z",
      min: expect.any(Number),
      max: expect.any(Number),
      avg: expect.any(Number),
      count: 60,
    });
    const small = await startApi({ CEA_HISTORY_POINT_BUDGET: "50", CEA_HISTORY_RAW_MAX: "100" }, { db: api.db });
    try {
      const d = await small.app.inject({
        url: `/api/v1/sensors/301/history?start=${START}&end=${END}`,
        headers: small.auth,
      });
      expect(d.json()).toMatchObject({ resolution: "daily", point_budget: 50 });
      // local days: 23 hours of the first (it began before the window), two whole, the last hour of the window
      expect(d.json().points.map((p: AggPoint) => p.count)).toEqual([1380, 1440, 1440, 60]);
      const tooMany = await small.app.inject({
        url: `/api/v1/sensors/301/history?start=${START}&end=${END}&resolution=raw`,
        headers: small.auth,
      });
      expect(tooMany.statusCode).toBe(422);
      expect(tooMany.json()).toMatchObject({ error: "too_many_points", message: expect.stringContaining("100") });
    } finally {
      await small.close();
    }
  });

  it("CSV through Accept: text/csv or format=csv, times in UTC, facility time zone stated", async () => {
    const q = `start=${START}&end=2024-03-01T00:10:00Z&resolution=raw`;
    for (const res of [
      await get(`/sensors/301/history?${q}`, { accept: "text/csv" }),
      await get(`/sensors/301/history?${q}&format=csv`),
    ]) {
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/csv/);
      expect(res.headers["x-facility-timezone"]).toBe("Europe/Amsterdam");
      const lines = res.body.trimEnd().split("\n");
      expect(lines[0]).toContain("Europe/Amsterdam");
      expect(lines[0]).toContain("UTC");
      expect(lines[2]).toBe("sensor_id,sensor,time,value,status,label");
      expect(lines.slice(3)).toHaveLength(10);
      // the last cell is the label: empty, 301 has no value table
      expect(lines[3]).toMatch(/^301,[a-z0-9_]+,2024-03-01T00:00:00\.000000Z,[-0-9.]+,ok,$/);
    }
    const agg = await get(`/sensors/301/history?start=${START}&end=${END}&resolution=daily&format=csv`);
    const lines = agg.body.trimEnd().split("\n");
    expect(lines[2]).toBe("sensor_id,sensor,time,min,max,avg,count");
    expect(lines.slice(3).map((l) => l.split(",")[6])).toEqual(["1380", "1440", "1440", "60"]);
    // format=json wins over the Accept header
    const json = await get(`/sensors/301/history?${q}&format=json`, { accept: "text/csv" });
    expect(json.headers["content-type"]).toMatch(/json/);
  });

  it("room history: every sensor of the room, same parameters", async () => {
    const res = await get(`/rooms/2/history?start=${START}&end=${END}&resolution=hourly`);
    expect(res.statusCode).toBe(200);
    const h = res.json();
    expect(h).toMatchObject({ room: { id: 2, name: "Veg Room" }, resolution: "hourly" });
    expect(h.series.map((s: { sensor_id: number }) => s.sensor_id)).toEqual([
      ...Array.from({ length: 15 }, (_, i) => 301 + i), // 311–315: node 3's applied outputs
      921, // the derived sensors of the room
      922,
      923,
    ]);
    const bySensor = new Map(h.series.map((s: { sensor_id: number; points: AggPoint[] }) => [s.sensor_id, s.points]));
    expect((bySensor.get(301) as AggPoint[]).every((p) => p.count === 60)).toBe(true);
    expect((bySensor.get(302) as AggPoint[]).map((p) => p.count)).toEqual(Array(72).fill(6));
    expect(bySensor.get(303)).toEqual([]);
    const csv = await get(`/rooms/2/history?start=${START}&end=2024-03-01T01:00:00Z&resolution=raw&format=csv`);
    expect(csv.body.trimEnd().split("\n").slice(3)).toHaveLength(60 + 6);
    expect((await get("/rooms/99/history")).statusCode).toBe(404);
  });

  it("rejects bad windows and parameters naming them", async () => {
    const rev = await get(`/sensors/301/history?start=${END}&end=${START}`);
    expect(rev.statusCode).toBe(400);
    expect(rev.json().issues[0].path).toBe("start");
    const res = await get("/sensors/301/history?resolution=minutely");
    expect(res.statusCode).toBe(400);
    expect(res.json().issues[0].path).toBe("resolution");
    const noOffset = await get("/sensors/301/history?start=2024-03-01T00:00:00");
    expect(noOffset.json().issues[0].path).toBe("start");
    expect((await get("/sensors/9999/history")).statusCode).toBe(404);
  });
});

describe("live values", () => {
  it("GET /live and /rooms/:id/live: each value with its age and a stale flag", async () => {
    const now = Date.now();
    const key = `${api.prefix}live:values`;
    await api.redis.hset(key, {
      "101": JSON.stringify({ value: 24.5, time: new Date(now - 1_000).toISOString(), name: "dry_bulb_b" }),
      "102": JSON.stringify({ value: 60, time: new Date(now - 120_000).toISOString(), name: "rh_b" }),
      "301": "not json",
    });
    const res = await get("/live");
    expect(res.statusCode).toBe(200);
    const live = res.json();
    expect(live.stale_after_s).toBe(10);
    expect(live.unreadable).toEqual(["301"]);
    const [fresh, old] = live.values;
    expect(fresh).toMatchObject({ sensor_id: 101, value: 24.5, name: "dry_bulb_b", stale: false });
    expect(fresh.age_s).toBeGreaterThanOrEqual(1);
    expect(fresh.age_s).toBeLessThan(10);
    expect(old).toMatchObject({ sensor_id: 102, value: 60, stale: true });
    expect(old.age_s).toBeGreaterThanOrEqual(120);
    const room1 = (await get("/rooms/1/live")).json();
    expect(room1.values.map((v: { sensor_id: number }) => v.sensor_id)).toEqual([101, 102]);
    const room3 = (await get("/rooms/3/live")).json();
    expect(room3.values).toEqual([]);
    expect((await get("/rooms/99/live")).statusCode).toBe(404);
  });

  it("shows a value outside its signal's physical range as status out_of_range; older entries as good readings", async () => {
    const key = `${api.prefix}live:values`;
    const time = new Date().toISOString();
    await api.redis.del(key);
    await api.redis.hset(key, {
      "101": JSON.stringify({ value: 327.67, time, name: "dry_bulb_b", status: "out_of_range" }),
      "102": JSON.stringify({ value: 61.3, time, name: "rh_b", status: null }),
      "103": JSON.stringify({ value: 20.1, time, name: "wet_bulb_b" }),
    });
    const live = (await get("/live")).json();
    expect(live.unreadable).toEqual([]);
    expect(live.values.map((v: { sensor_id: number; status: string | null }) => [v.sensor_id, v.status])).toEqual([
      [101, "out_of_range"],
      [102, null],
      [103, null],
    ]);
  });
});

describe("health and OpenAPI", () => {
  it("GET /health: database, edition, features, stream length, group pending and lag, last reading", async () => {
    const stream = `${api.prefix}can:raw`;
    await api.redis.xgroup("CREATE", stream, "can-worker-group", "0", "MKSTREAM");
    for (let i = 0; i < 5; i++)
      await api.redis.xadd(stream, "*", "ts", new Date().toISOString(), "id", "256", "data", "00", "iface", "vcan0");
    await api.redis.xreadgroup("GROUP", "can-worker-group", "c1", "COUNT", "3", "STREAMS", stream, ">");
    const res = await api.app.inject({ url: "/api/v1/health" });
    expect(res.statusCode).toBe(200);
    const h = res.json();
    expect(h).toMatchObject({
      status: "ok",
      down: [],
      postgres: {
        ok: true,
        edition: inject("edition"),
        timescaledb_version: expect.any(String),
        last_measurement_time: "2024-03-03T23:59:00.000000Z",
      },
      redis: {
        ok: true,
        stream: { key: stream, length: 5 },
        group: { name: "can-worker-group", exists: true, pending: 3, lag: 2, consumers: 1 },
      },
    });
    expect(Object.keys(h.postgres.features)).toEqual(
      expect.arrayContaining(["hypertable", "compression", "continuous_aggregates"]),
    );
  });

  it("serves an OpenAPI document generated from the route schemas", async () => {
    const res = await api.app.inject({ url: "/api/v1/openapi.json" });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths).sort()).toEqual([
      "/api/v1/facility",
      "/api/v1/health",
      "/api/v1/live",
      "/api/v1/measurement",
      "/api/v1/measurements",
      "/api/v1/rooms/{id}/actuator-events",
      "/api/v1/rooms/{id}/history",
      "/api/v1/rooms/{id}/live",
      "/api/v1/rooms/{id}/setpoints",
      "/api/v1/sensors",
      "/api/v1/sensors/{id}",
      "/api/v1/sensors/{id}/history",
    ]);
    const body = doc.paths["/api/v1/measurement"].post.requestBody.content["application/json"].schema;
    expect(Object.keys(body.properties).sort()).toEqual(["sensor_id", "status", "time", "value"]);
    expect(body.required.sort()).toEqual(["sensor_id", "time", "value"]);
    expect(body.additionalProperties).toBe(false);
    expect(Object.keys(doc.paths["/api/v1/measurement"].post.responses)).toEqual(
      expect.arrayContaining(["200", "201", "400", "401", "409", "413", "422"]),
    );
    expect(doc.paths["/api/v1/sensors/{id}/history"].get.responses["200"].content).toHaveProperty("text/csv");
    expect(doc.paths["/api/v1/rooms/{id}/actuator-events"].get.responses["200"].content).toHaveProperty("text/csv");
    // writing setpoints is behind the token, with its 400 naming the field
    expect(doc.paths["/api/v1/rooms/{id}/setpoints"].put.security).toEqual([{ bearer: [] }]);
    expect(Object.keys(doc.paths["/api/v1/rooms/{id}/setpoints"].put.responses)).toEqual(
      expect.arrayContaining(["200", "400", "401", "404"]),
    );
  });
});
