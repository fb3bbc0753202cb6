import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { insertSetpoints } from "../../db/queries/automation.js";
import { actuatorConflicts, loadSite, type Site } from "../../db/site.js";
import { AutomationService } from "../../pipeline/automation/service.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { compileSignal, physicalValue } from "../../pipeline/can/codec.js";
import { buildCommandTable } from "../../pipeline/can/commands.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// A simulated Flower Room in accelerated time, closed through the real
// command stream: the service decides on live values in Redis and setpoints in
// PostgreSQL and appends its command frames to can:cmd; the room's node (here:
// a plant model that reads can:cmd and decodes each frame with the CAN
// database, as a node would) applies the outputs, falls back to the safe state
// when commands stop for the watchdog time, and its sensors report the room's
// climate back as live values. One simulated day, a decision every 30 s:
// outside temperature with a day swing, heat loss through the walls, lights
// heat during the lights-on window, heater / cooling fan, humidifier /
// dehumidifier, CO2 valve with leakage and venting.

const START = Date.parse("2026-06-15T00:00:00+02:00"); // local midnight in Amsterdam
const STEP_S = 30;
const DAY_S = 86_400;
const SETTLE_S = 1_800;

interface Plant {
  t: number;
  rh: number;
  co2: number;
  outputs: Record<string, boolean>;
  lastCommandMs: number;
}

describe("a simulated room through the command stream", () => {
  let db: TestDatabase;
  let site: Site;
  let redis: Redis;
  let svcRedis: Redis;
  let pool: pg.Pool;
  const log = createLogger("automation-room", "silent");

  beforeAll(async () => {
    db = await createTestDatabase();
    site = await loadSite(projectPath("ops/site.json"));
    redis = new Redis(inject("redisUrl"));
    svcRedis = createRedis(inject("redisUrl"), log, "automation-room");
    pool = new pg.Pool({ connectionString: db.urlAs("automation"), max: 2 });
    const api = new pg.Pool({ connectionString: db.urlAs("api"), max: 1 });
    const from = new Date(START - 3_600_000);
    const sp = (
      quantity: "air_temperature" | "relative_humidity" | "co2",
      period: "day" | "night" | "any",
      target: number,
      tolerance: number,
    ) => ({
      room_id: 1,
      quantity,
      period,
      target,
      tolerance,
      effective_from: from,
      created_by: "test",
    });
    await insertSetpoints(api, [
      sp("air_temperature", "day", 25, 2),
      sp("air_temperature", "night", 21, 2),
      sp("relative_humidity", "any", 60, 8),
      sp("co2", "day", 900, 200),
      sp("co2", "night", 500, 200),
    ]);
    await api.end();
  });
  afterAll(async () => {
    redis?.disconnect();
    svcRedis?.disconnect();
    await pool?.end();
    await db?.drop();
  });

  it("holds the room in its bands for a day, within minimum times, never running conflicting actuators together", async () => {
    const keys = redisKeys({ ...loadConfig({}), CEA_REDIS_PREFIX: testPrefix() });
    const candb = loadCanDb(projectPath("ops/cea.kcd"));
    const commands = buildCommandTable(candb, site, "ops/site.json");
    const config = loadConfig({ CEA_AUTOMATION_STALE_S: "60", CEA_AUTOMATION_WATCHDOG_S: "30" });
    let now = START;
    const svc = new AutomationService({
      config,
      site,
      commands,
      redis: svcRedis,
      db: pool,
      keys,
      log,
      dryRun: false,
      clock: () => now,
    });

    // the node of the Flower Room: Cmd_N1 frames, decoded with the CAN database
    const cmd = candb.messages.find((m) => m.name === "Cmd_N1")!;
    const codecs = cmd.signals.map((s) => ({ name: s.name, c: compileSignal(s) }));
    const outputOf = new Map([...commands.messages.get("Cmd_N1")!.outputs].map(([a, sig]) => [sig, a]));
    const actuators = site.actuators.filter((a) => a.room_id === 1);
    const safe = Object.fromEntries(actuators.map((a) => [a.id, a.safe_state === "on"]));
    const plant: Plant = { t: 19, rh: 50, co2: 420, outputs: { ...safe }, lastCommandMs: START };
    let lastId = "0";
    let watchdogTrips = 0;
    const applyCommands = async () => {
      const got = await redis.xread("STREAMS", keys.cmd, lastId);
      for (const [, entries] of got ?? [])
        for (const [id, f] of entries) {
          lastId = id;
          const field = (k: string) => f[f.indexOf(k) + 1]!;
          if (field("message") !== "Cmd_N1") continue;
          const data = Uint8Array.from(Buffer.from(field("data"), "hex"));
          for (const { name, c } of codecs) {
            const a = outputOf.get(name);
            if (a) plant.outputs[a] = physicalValue(data, 0, c) === 1;
          }
          expect(physicalValue(data, 0, codecs.find((x) => x.name === "watchdog_s")!.c)).toBe(30);
          plant.lastCommandMs = Date.parse(field("ts"));
        }
      // the node's watchdog: no command for watchdog_s → safe outputs
      if (now - plant.lastCommandMs > 30_000 && JSON.stringify(plant.outputs) !== JSON.stringify(safe)) {
        watchdogTrips++;
        plant.outputs = { ...safe };
      }
    };
    const physics = (dt: number) => {
      const localH = ((now - START) / 3_600_000) % 24;
      const lights = localH >= 6 && localH < 18;
      const outside = 14 + 6 * Math.sin(((localH - 9) / 24) * 2 * Math.PI);
      const o = plant.outputs;
      plant.t +=
        dt *
        (-(plant.t - outside) / 3_600 +
          (o.flower_heater ? 0.012 : 0) +
          (lights ? 0.002 : 0) -
          (o.flower_cooling_fan ? 0.006 + (plant.t - outside) / 3_600 : 0));
      plant.rh +=
        dt *
        (-(plant.rh - 45) / 3_600 +
          (lights ? 0.008 : 0) + // transpiration
          (o.flower_humidifier ? 0.03 : 0) -
          (o.flower_dehumidifier ? 0.03 : 0));
      plant.co2 +=
        dt *
        (-(plant.co2 - 420) / 7_200 -
          (lights ? 0.05 : 0) + // uptake
          (o.flower_co2_valve ? 1.5 : 0) -
          (o.flower_cooling_fan ? (plant.co2 - 420) / 1_800 : 0));
    };
    const report = async () => {
      const time = new Date(now - 500).toISOString();
      const v = (value: number, name: string) => JSON.stringify({ value, time, name, status: null });
      await redis.hset(
        keys.live,
        "101",
        v(plant.t + 0.05, "dry_bulb_b"),
        "201",
        v(plant.t - 0.05, "dry_bulb_f"),
        "103",
        v(plant.rh, "rh_b"),
        "203",
        v(plant.rh, "rh_f"),
        "105",
        v(plant.co2, "co2_b"),
        "205",
        v(plant.co2, "co2_f"),
      );
    };

    const conflicts = actuatorConflicts(site);
    const switches = new Map<string, number[]>(actuators.map((a) => [a.id, []]));
    let prev: Record<string, boolean> = { ...plant.outputs };
    const outOfBand: string[] = [];
    let together = 0;
    let lastPeriod: string | null = null;
    let settleUntil = START + SETTLE_S * 1000;
    for (let s = 0; s <= DAY_S; s += STEP_S) {
      now = START + s * 1000;
      await report();
      const decisions = await svc.cycle();
      await applyCommands();
      physics(STEP_S);
      // the period of the room (day / night): a change of target needs time to settle
      const period = decisions.find((d) => d.actuator === "flower_heater")!.period;
      if (lastPeriod !== null && period !== lastPeriod) settleUntil = now + SETTLE_S * 1000;
      lastPeriod = period;
      for (const a of actuators) {
        if (plant.outputs[a.id] !== prev[a.id]) switches.get(a.id)!.push(now);
        for (const c of conflicts.get(a.id) ?? []) if (plant.outputs[a.id] && plant.outputs[c]) together++;
      }
      prev = { ...plant.outputs };
      if (now >= settleUntil) {
        const t = period === "day" ? 25 : 21;
        const c = period === "day" ? 900 : 500;
        if (Math.abs(plant.t - t) > 2)
          outOfBand.push(`${new Date(now).toISOString()} ${period} t=${plant.t.toFixed(2)}`);
        if (Math.abs(plant.rh - 60) > 8) outOfBand.push(`${new Date(now).toISOString()} rh=${plant.rh.toFixed(1)}`);
        if (period === "day" && Math.abs(plant.co2 - c) > 200)
          outOfBand.push(`${new Date(now).toISOString()} co2=${plant.co2.toFixed(0)}`);
      }
    }

    expect(outOfBand.slice(0, 10)).toEqual([]);
    expect(together).toBe(0);
    expect(watchdogTrips).toBe(0);
    // every actuator that had work switched, and never faster than its minimum times
    for (const a of actuators) {
      const at = switches.get(a.id)!;
      if (a.id !== "flower_cooling_fan") expect(at.length, a.id).toBeGreaterThan(2);
      for (let i = 1; i < at.length; i++) {
        // switches alternate on (even index) and off (odd): the gap after an on is an on period
        const min = (i % 2 === 1 ? a.min_on_s : a.min_off_s) * 1000;
        expect(at[i]! - at[i - 1]!, `${a.id} switch ${i}`).toBeGreaterThanOrEqual(min);
      }
    }
    // the events tell the story: every switch is a row with its reason
    const { rows } = await db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM actuator_events WHERE room_id = 1 AND action IN ('on', 'off')",
    );
    const total = [...switches.values()].reduce((n, x) => n + x.length, 0);
    expect(rows[0]!.n).toBe(total);
  }, 300_000);
});
