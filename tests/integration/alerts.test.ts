import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { type Api, closedPort, startApi } from "./api-harness.js";

// The alert conditions as cea-backend evaluates them on the real database and
// Redis, seen by an operator without Prometheus: GET /health lists the silent
// sensors and the active alerts, and the Redis hash `alerts` (which the
// monitors print) holds the same.

interface HealthAlerts {
  evaluated_at: string | null;
  incomplete: string | null;
  active: { id: string; condition: string; severity: string; summary: string; since: string }[];
  silent_sensors: { sensor_id: number; sensor: string; room: string; age_s: number | null; silent_after_s: number }[];
}

async function health(api: Api) {
  return api.app.inject({ url: "/api/v1/health" });
}

/** The alerts of the first evaluation that started after `after`. */
async function evaluatedAfter(api: Api, after: number, timeoutMs = 20_000): Promise<HealthAlerts> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const a = (await health(api)).json().alerts as HealthAlerts;
    if (a.evaluated_at && Date.parse(a.evaluated_at) > after) return a;
    if (Date.now() > deadline) throw new Error(`no alert evaluation after ${new Date(after).toISOString()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("alert conditions on the real database and Redis", () => {
  let api: Api;
  beforeAll(async () => {
    api = await startApi({ CEA_ALERT_EVAL_MS: "1000", CEA_STREAM_WARN_LENGTH: "3", CEA_ROOM_SILENT_S: "60" });
    const db = api.db.pool;
    // Lab (room 3, sensors 401-410) reports once a minute; 405 stopped 20 min ago;
    // its air temperature (401) has been 35 °C, outside its band 15-30, for 40 minutes
    await db.query("UPDATE sensor SET expected_interval_s = 60 WHERE sensor_id BETWEEN 301 AND 410");
    await db.query(
      `INSERT INTO measurement (time, sensor_id, value)
       SELECT now() - make_interval(secs => t), s, CASE WHEN s = 401 THEN 35 ELSE 50 END
       FROM generate_series(401, 410) s, generate_series(1, 2400, 30) t
       WHERE s <> 405 OR t > 1200`,
    );
    // Veg Room (room 2): readings, but every one of them out of range
    await db.query(
      `INSERT INTO measurement (time, sensor_id, value, status)
       SELECT now() - interval '2 seconds', s, 65535, 'out_of_range' FROM generate_series(301, 310) s`,
    );
    const r = api.redis;
    const raw = `${api.prefix}can:raw`;
    for (let i = 0; i < 5; i++) await r.xadd(raw, "*", "ts", new Date().toISOString(), "id", "257", "data", "00");
    await r.xgroup("CREATE", raw, "can-worker-group", "0");
    for (let i = 0; i < 10; i++)
      await r.xadd(`${api.prefix}can:dead`, "*", "orig_id", `1-${i}`, "reason", "unknown id");
    await r.set(
      `${api.prefix}health:can-worker-1`,
      JSON.stringify({
        service: "can-worker",
        consumer: "can-worker-1",
        status: "degraded",
        reason: "batch-copy: 25006 read-only",
      }),
      "EX",
      60,
    );
  });
  afterAll(() => api?.close());

  let first: HealthAlerts;
  it("GET /health lists the silent sensors: the one that stopped and those that never reported", async () => {
    first = await evaluatedAfter(api, Date.now());
    const silent = new Map(first.silent_sensors.map((s) => [s.sensor_id, s]));
    const s405 = silent.get(405);
    expect(s405).toMatchObject({ room: "Lab", silent_after_s: 600 });
    expect(s405!.age_s).toBeGreaterThan(1190);
    expect(s405!.age_s).toBeLessThan(1300);
    // the rest of the Lab reports, and so does the Veg Room (out of range, but not silent)
    for (const id of [401, 402, 403, 404, 406, 407, 408, 409, 410, 301, 310])
      expect(silent.has(id), `${id}`).toBe(false);
    // Flower Room and Outside never reported
    for (const id of [101, 110, 201, 210, 501, 510]) expect(silent.get(id)?.age_s, `${id}`).toBeNull();
    // and the 9 derived sensors: their rows come from the worker, which did not run here
    for (const id of [911, 923, 933]) expect(silent.get(id)?.age_s, `${id}`).toBeNull();
    // and the actuator nodes' applied outputs (111–115, 311–315, 411–415): no Status frame was stored here
    for (const id of [111, 315, 415]) expect(silent.get(id)?.age_s, `${id}`).toBeNull();
    expect(first.silent_sensors).toHaveLength(1 + 30 + 9 + 15);
  });

  it("the active alerts: silent sensor, rooms without a good reading, a room out of its band, backlog, dead letters, a degraded worker", () => {
    const ids = first.active.map((a) => a.id).sort();
    const s405 = first.silent_sensors.find((s) => s.sensor_id === 405)!.sensor;
    expect(ids).toContain(`sensor_silent:${s405}`);
    expect(ids).toEqual(
      expect.arrayContaining([
        "room_no_good_reading:Flower Room",
        "room_no_good_reading:Veg Room",
        "room_no_good_reading:Outside",
        "room_out_of_band:Lab:air_temperature",
        "backlog_high",
        "dead_letters_high",
        "worker_degraded:can-worker-1",
      ]),
    );
    expect(ids).not.toContain("room_no_good_reading:Lab");
    expect(ids.filter((i) => i.startsWith("room_out_of_band"))).toEqual(["room_out_of_band:Lab:air_temperature"]);
    const byId = new Map(first.active.map((a) => [a.id, a]));
    expect(byId.get("backlog_high")!.summary).toMatch(/backlog 5 entries/);
    expect(byId.get("dead_letters_high")!.summary).toMatch(/dead letters per minute/);
    expect(byId.get("worker_degraded:can-worker-1")!.summary).toContain("25006 read-only");
    expect(byId.get("room_out_of_band:Lab:air_temperature")).toMatchObject({ severity: "critical" });
    expect(first.incomplete).toBeNull();
  });

  it("the same alerts are in the Redis hash the monitors read", async () => {
    const h = await api.redis.hgetall(`${api.prefix}alerts`);
    expect(h._evaluated_at).toMatch(/^\d{4}-/);
    expect(h["room_out_of_band:Lab:air_temperature"]).toMatch(
      /^critical\|\d{4}-[^|]+\|Lab: air_temperature outside 15 … 30/,
    );
    expect(h.backlog_high).toMatch(/^warning\|/);
    expect(await api.redis.ttl(`${api.prefix}alerts`)).toBeGreaterThan(0);
  });

  it("conditions clear when they end, and one that goes on keeps its since", async () => {
    const db = api.db.pool;
    await db.query("INSERT INTO measurement (time, sensor_id, value) VALUES (now(), 405, 50), (now(), 401, 24)");
    await api.redis.del(`${api.prefix}health:can-worker-1`);
    const t = Date.now();
    const next = await evaluatedAfter(api, t);
    const ids = next.active.map((a) => a.id);
    const s405 = first.silent_sensors.find((s) => s.sensor_id === 405)!.sensor;
    expect(ids).not.toContain(`sensor_silent:${s405}`);
    expect(ids).not.toContain("room_out_of_band:Lab:air_temperature");
    expect(ids).not.toContain("worker_degraded:can-worker-1");
    const before = first.active.find((a) => a.id === "room_no_good_reading:Outside")!;
    expect(next.active.find((a) => a.id === "room_no_good_reading:Outside")!.since).toBe(before.since);
    expect((await api.redis.hgetall(`${api.prefix}alerts`))["room_out_of_band:Lab:air_temperature"]).toBeUndefined();
  });
});

describe("alert conditions while PostgreSQL is unreachable", () => {
  let api: Api;
  beforeAll(async () => {
    api = await startApi(
      { CEA_ALERT_EVAL_MS: "1000" },
      { databaseUrl: `postgresql://postgres@127.0.0.1:${await closedPort()}/cea` },
    );
  });
  afterAll(() => api?.close());

  it("the evaluation says the database is unreachable and what it could not see; health still answers", async () => {
    const a = await evaluatedAfter(api, Date.now());
    expect(a.active.map((x) => x.condition)).toContain("database_degraded");
    expect(a.incomplete).toMatch(/^database: /);
    const res = await health(api);
    expect(res.statusCode).toBe(503);
    expect(res.json().down).toEqual(["postgres"]);
  });
});

describe("alert conditions while PostgreSQL is read-only", () => {
  let api: Api;
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
    await db.pool.query(`ALTER DATABASE ${db.name} SET default_transaction_read_only = on`);
    api = await startApi({ CEA_ALERT_EVAL_MS: "1000" }, { db });
  });
  afterAll(async () => {
    await api?.close();
    await db?.drop();
  });

  it("a database that refuses every write is degraded, though it answers the reads", async () => {
    const a = await evaluatedAfter(api, Date.now());
    const d = a.active.find((x) => x.condition === "database_degraded");
    expect(d?.summary).toMatch(/read-only/);
    // the reads still work: the silent sensors are still listed
    expect(a.silent_sensors.length).toBe(65 + 9);
    expect(a.incomplete).toBeNull();
  });
});
