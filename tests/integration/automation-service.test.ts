import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { insertSetpoints } from "../../db/queries/automation.js";
import { loadSite, type Site } from "../../db/site.js";
import { AutomationService } from "../../pipeline/automation/service.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable } from "../../pipeline/can/commands.js";
import type { CanDb } from "../../pipeline/can/model.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// automation-service's loop against the stack's real Redis and PostgreSQL, on a
// clock of the test's own: live values in Redis, setpoints in PostgreSQL, and
// what comes out: command frames on can:cmd, rows in actuator_events, the
// health key (which cea-backend's alerts, /health and the monitors read) and
// the monitors' actuator hash.

const T0 = Date.parse("2026-06-15T10:00:00Z"); // 12:00 in Amsterdam: day in every room
const SENSORS = {
  // room 1: nodes 1 and 2; room 2: node 3; room 3: node 4
  air_temperature: [101, 201, 301, 401],
  relative_humidity: [103, 203, 303, 403],
  co2: [105, 205, 305, 405],
};

describe("automation-service loop", () => {
  let db: TestDatabase;
  let site: Site;
  let candb: CanDb;
  let redis: Redis;
  let svcRedis: Redis;
  let pool: pg.Pool;
  let keys: ReturnType<typeof redisKeys>;
  let now = T0;
  const log = createLogger("automation-test", "silent");

  const live = async (values: Record<number, number>, opts: { ageS?: number; status?: string | null } = {}) => {
    const fields: string[] = [];
    for (const [id, value] of Object.entries(values))
      fields.push(
        id,
        JSON.stringify({
          value,
          time: new Date(now - (opts.ageS ?? 1) * 1000).toISOString(),
          name: `s${id}`,
          status: opts.status ?? null,
        }),
      );
    await redis.hset(keys.live, ...fields);
  };
  /** Every room's sensors at one temperature, humidity and CO2. */
  const climate = (t: number, rh: number, co2: number, opts: { ageS?: number; status?: string | null } = {}) =>
    live(
      Object.fromEntries([
        ...SENSORS.air_temperature.map((id) => [id, t]),
        ...SENSORS.relative_humidity.map((id) => [id, rh]),
        ...SENSORS.co2.map((id) => [id, co2]),
      ]),
      opts,
    );
  const service = (dryRun = false, dbPool: pg.Pool = pool, r: Redis = svcRedis) =>
    new AutomationService({
      config: loadConfig({}),
      site,
      commands: buildCommandTable(candb, site, "ops/site.json"),
      redis: r,
      db: dbPool,
      keys,
      log,
      dryRun,
      clock: () => now,
    });
  const events = async () =>
    (
      await db.pool.query(
        "SELECT actuator, action, state, value, setpoint, band, setpoint_id::int AS setpoint_id, reason, dry_run, command_id, ack_status, room_id FROM actuator_events ORDER BY event_id",
      )
    ).rows;
  const health = async () => JSON.parse((await redis.get(keys.health("automation-service"))) ?? "null");

  beforeAll(async () => {
    db = await createTestDatabase();
    site = await loadSite(projectPath("ops/site.json"));
    candb = loadCanDb(projectPath("ops/cea.kcd"));
    redis = new Redis(inject("redisUrl"));
    svcRedis = createRedis(inject("redisUrl"), log, "automation-test");
    pool = new pg.Pool({ connectionString: db.urlAs("automation"), max: 2 });
    pool.on("error", () => undefined);
    // day setpoints for every controlled room: 24 °C ± 2, 60 % ± 8, CO2 900 ± 150
    const api = new pg.Pool({ connectionString: db.urlAs("api"), max: 1 });
    for (const room_id of [1, 2, 3])
      await insertSetpoints(api, [
        {
          room_id,
          quantity: "air_temperature",
          period: "any",
          target: 24,
          tolerance: 2,
          effective_from: new Date(T0 - 86_400_000),
          created_by: "test",
        },
        {
          room_id,
          quantity: "relative_humidity",
          period: "any",
          target: 60,
          tolerance: 8,
          effective_from: new Date(T0 - 86_400_000),
          created_by: "test",
        },
        {
          room_id,
          quantity: "co2",
          period: "any",
          target: 900,
          tolerance: 150,
          effective_from: new Date(T0 - 86_400_000),
          created_by: "test",
        },
      ]);
    await api.end();
  });
  beforeEach(async () => {
    keys = redisKeys({ ...loadConfig({}), CEA_REDIS_PREFIX: testPrefix() });
    now = T0;
    await db.pool.query("DELETE FROM actuator_events");
  });
  afterAll(async () => {
    redis?.disconnect();
    svcRedis?.disconnect();
    await pool?.end();
    await db?.drop();
  });

  it("switches on what the room needs, records each decision with its reason and sends the node's command frame", async () => {
    await climate(21, 60, 900);
    const svc = service();
    await svc.cycle();
    const rows = await events();
    // one heater per room switches on (the lab has only a heater)
    expect(rows.filter((r) => r.action === "on").map((r) => r.actuator)).toEqual([
      "flower_heater",
      "veg_heater",
      "lab_heater",
    ]);
    const heater = rows.find((r) => r.actuator === "flower_heater");
    expect(heater).toMatchObject({
      room_id: 1,
      state: true,
      value: 21,
      setpoint: 24,
      band: 2,
      dry_run: false,
      ack_status: "sent",
      reason: "21 vs target 24: below target - 0.5",
    });
    const cmds = await redis.xrange(keys.cmd, "-", "+");
    const byMessage = new Map(cmds.map(([, f]) => [f[f.indexOf("message") + 1], f]));
    expect([...byMessage.keys()].sort()).toEqual(["Cmd_N1", "Cmd_N3", "Cmd_N4"]);
    const n1 = byMessage.get("Cmd_N1")!;
    const field = (k: string) => n1[n1.indexOf(k) + 1];
    expect(field("id")).toBe(String(0x501));
    // heater bit set, seq 0, watchdog 30 s
    expect(field("data")).toBe("01001E00");
    expect(field("cmd_id")).toBe(heater.command_id);
    expect(await health()).toMatchObject({ service: "automation-service", status: "ok", reason: null });
    const monitor = await redis.hgetall(keys.automation);
    expect(JSON.parse(monitor.flower_heater!)).toMatchObject({ room: "Flower Room", state: "on", action: "on" });

    // nothing changes: no event, and no frame until a third of the watchdog has passed
    now += 1_000;
    await climate(22, 60, 900);
    await svc.cycle();
    expect(await events()).toHaveLength(rows.length);
    expect(await redis.xlen(keys.cmd)).toBe(3);
    now += 10_000;
    await climate(22, 60, 900);
    await svc.cycle();
    expect(await redis.xlen(keys.cmd)).toBe(6);
  });

  it("applies a setpoint change at the next decision, without a restart", async () => {
    await climate(24.2, 60, 900);
    const svc = service();
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(false);
    const api = new pg.Pool({ connectionString: db.urlAs("api"), max: 1 });
    const [sp] = await insertSetpoints(api, [
      {
        room_id: 1,
        quantity: "air_temperature",
        period: "day",
        target: 27,
        tolerance: 1,
        effective_from: new Date(now),
        created_by: "test",
      },
    ]);
    await api.end();
    now += 1_000;
    await climate(24.2, 60, 900);
    await svc.cycle();
    const on = (await events()).find((r) => r.actuator === "flower_heater" && r.action === "on");
    expect(on).toMatchObject({ setpoint: 27, band: 1, setpoint_id: sp!.setpoint_id });
    await db.pool.query("DELETE FROM actuator_events");
    await db.pool.query("DELETE FROM setpoints WHERE setpoint_id = $1", [sp!.setpoint_id]);
  });

  it("stale data: safe state within one decision, the event says how stale, health degraded naming the room", async () => {
    await climate(21, 60, 900);
    const svc = service();
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(true);
    now += 95_000; // the readings are now 96 s old
    await svc.cycle();
    const safe = (await events()).filter((r) => r.action === "safe" && r.actuator === "flower_heater");
    expect(safe).toEqual([expect.objectContaining({ state: false, reason: "fail-safe: data stale 96 s" })]);
    const h = await health();
    expect(h.status).toBe("degraded");
    expect(h.reason).toContain("Flower Room: flower_heater: fail-safe: data stale 96 s");
    // the heater's command frame turned it off
    const last = (await redis.xrange(keys.cmd, "-", "+")).filter(([, f]) => f.includes("Cmd_N1")).at(-1)!;
    expect(last[1][last[1].indexOf("data") + 1]).toBe("00011E00");
    // fresh data again: health ok at once; the heater waits out its minimum off-time (no burst), then resumes
    now += 1_000;
    await climate(21, 60, 900);
    await svc.cycle();
    expect((await health()).status).toBe("ok");
    expect(svc.lastDecisions.find((d) => d.actuator === "flower_heater")).toMatchObject({
      action: "hold",
      state: false,
    });
    now += 120_000;
    await climate(21, 60, 900);
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(true);
  });

  it("bad status: a reading out_of_range does not count; with none good the actuator goes safe", async () => {
    await climate(21, 60, 900);
    const svc = service();
    await svc.cycle();
    now += 1_000;
    await climate(21, 60, 900, { status: "out_of_range" });
    await svc.cycle();
    const safe = (await events()).find((r) => r.actuator === "flower_heater" && r.action === "safe");
    expect(safe?.reason).toBe("fail-safe: bad status out_of_range (dry_bulb_b), out_of_range (dry_bulb_f)");
    expect(svc.state.get("flower_heater")?.on).toBe(false);
    expect((await health()).reason).toContain("bad status");
  });

  it("a Redis error reply (a live key of the wrong type) is an outage named as an error, not as unreachability", async () => {
    await climate(21, 60, 900);
    const svc = service();
    await svc.cycle();
    now += 1_000;
    await redis.del(keys.live);
    await redis.set(keys.live, "not a hash");
    await svc.cycle();
    const safe = (await events()).find((r) => r.actuator === "flower_heater" && r.action === "safe");
    expect(safe?.reason).toMatch(/^fail-safe: Redis error: WRONGTYPE/);
    expect(svc.state.get("flower_heater")?.on).toBe(false);
    expect((await health()).reason).toContain("Redis error: WRONGTYPE");
    await redis.del(keys.live);
  });

  it("--dry-run decides and records (dry_run = true) but sends nothing", async () => {
    await climate(21, 60, 900);
    const svc = service(true);
    await svc.cycle();
    const rows = await events();
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((r) => r.dry_run && r.ack_status === "not_sent" && r.command_id === null)).toBe(true);
    expect(await redis.exists(keys.cmd)).toBe(0);
  });

  it("stop: a last decision puts every actuator in its safe state and sends it", async () => {
    await climate(21, 40, 600);
    const svc = service();
    await svc.cycle();
    now += 1_000;
    await svc.cycle();
    expect([...svc.state.values()].some((s) => s.on)).toBe(true);
    await svc.stop();
    expect([...svc.state.values()].every((s) => !s.on)).toBe(true);
    const stops = (await events()).filter((r) => r.reason === "fail-safe: service stopping");
    expect(stops.map((r) => r.actuator).sort()).toEqual(site.actuators.map((a) => a.id).sort());
    expect(stops.filter((r) => r.state).length).toBe(0);
    const frames = await redis.xrange(keys.cmd, "-", "+");
    for (const m of ["Cmd_N1", "Cmd_N3", "Cmd_N4"]) {
      const last = frames.filter(([, f]) => f.includes(m)).at(-1)![1];
      // every output bit off
      expect((Number.parseInt(last[last.indexOf("data") + 1]!.slice(0, 2), 16) & 0x1f) === 0).toBe(true);
    }
  });
});
