import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { insertSetpoints } from "../../db/queries/automation.js";
import { actuatorConflicts, loadSite, type Site } from "../../db/site.js";
import { AutomationService } from "../../pipeline/automation/service.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable } from "../../pipeline/can/commands.js";
import type { CanFrame } from "../../pipeline/can/frame.js";
import { simulatorSource } from "../../pipeline/can/simulator.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { type SourceEnvelope, startScanner } from "../../pipeline/runtime/scanner.js";
import { chain, use } from "../../pipeline/runtime/stage.js";
import { IngestLedger } from "../../stages/append/ledger.js";
import { CAN_FRAMES, canIngestStage, frameChunks } from "../../stages/can-ingest.js";
import { CommandTransmitter, commandStatusStage } from "../../stages/command-transmit.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// The Flower Room of the product's simulator in accelerated time, closed
// through the real command path: automation-service decides on live values in
// Redis and setpoints in PostgreSQL and appends its command frames to can:cmd;
// can-scanner's command transmitter (a component of the scanner runtime) sends
// them through the simulator's send side to the simulated node of the room
// (pipeline/can/nodes.ts), which applies the outputs, answers with its Status
// frame (matched as the acknowledgement by the chain's command-status stage)
// and falls back to the safe state when commands stop for the watchdog time;
// the closed-loop room model (pipeline/can/room-model.ts: outside temperature
// with a day swing, heat loss through the walls, lights heat during the
// lights-on window, heater / cooling fan, humidifier / dehumidifier, CO2 valve
// with leakage and venting) moves with the outputs the node applied, and the
// nodes' Climate/Air frames reach the live values through can-ingest. One
// simulated day on a virtual clock, a decision every 30 s.

const START = Date.parse("2026-06-15T00:00:00+02:00"); // local midnight in Amsterdam
const STEP_S = 30;
const DAY_S = 86_400;
const SETTLE_S = 1_800;

async function until(what: string, f: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
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
    const clock = () => now;
    const svc = new AutomationService({
      config,
      site,
      commands,
      redis: svcRedis,
      db: pool,
      keys,
      log,
      dryRun: false,
      clock,
    });

    // can-scanner in process: the simulator (on the virtual clock) → command-status → can-ingest (live values),
    // with the command transmitter beside the chain
    const { table } = await loadDecodeTable({
      siteFile: projectPath("ops/site.json"),
      canDbFile: projectPath("ops/cea.kcd"),
    });
    const source = simulatorSource({ table, site, candb, startMs: START, speed: 1, iface: "sim0", clock, pollMs: 1 });
    const sim = source.simulation;
    const tx = new CommandTransmitter({
      redis: svcRedis,
      keys,
      candb,
      source: { name: source.name, transmit: (f) => source.transmit(f) },
      consumer: "can-scanner-1",
      ackMs: 1_000,
      retries: 3,
      clock,
    });
    const ingest = canIngestStage({ redis: svcRedis, keys, table, src: "simulator", ledger: new IngestLedger(log) });
    const scanner = await startScanner({
      log,
      source: frameChunks(source),
      components: [tx],
      chain: chain<CanFrame[], SourceEnvelope>(CAN_FRAMES)
        .pipe(use(commandStatusStage(tx), {}))
        .pipe(use(ingest, { liveEveryMs: 10 })),
    });
    await until("the simulator's first second", () => sim.k >= 1);

    const model = sim.models.get(1)!;
    const node = sim.nodes!.nodes.find((n) => n.command.name === "Cmd_N1")!;
    const actuators = site.actuators.filter((a) => a.room_id === 1);
    const outputs = () => Object.fromEntries(actuators.map((a) => [a.id, sim.nodes!.outputs().get(a.id) === true]));
    const conflicts = actuatorConflicts(site);
    const switches = new Map<string, number[]>(actuators.map((a) => [a.id, []]));
    let prev = outputs();
    const outOfBand: string[] = [];
    let together = 0;
    let lastPeriod: string | null = null;
    let settleUntil = START + SETTLE_S * 1000;
    const liveTime = async () => {
      const v = await redis.hget(keys.live, "101");
      return v ? Date.parse((JSON.parse(v) as { time: string }).time) : 0;
    };
    try {
      for (let s = 0; s <= DAY_S; s += STEP_S) {
        now = START + s * 1000;
        // the simulated bus has reached `now` and can-ingest has put it in the live values
        await until("the simulated second", () => sim.k > s);
        await until("the live values", async () => (await liveTime()) >= now);
        const decisions = await svc.cycle();
        // every frame the service appended is on the bus and answered before time moves on
        await until("the command outcomes", async () => (await redis.xlen(keys.cmdAck)) >= svc.stats.commandsSent);
        const c = model.climate;
        const o = outputs();
        // the period of the room (day / night): a change of target needs time to settle
        const period = decisions.find((d) => d.actuator === "flower_heater")!.period;
        if (lastPeriod !== null && period !== lastPeriod) settleUntil = now + SETTLE_S * 1000;
        lastPeriod = period;
        for (const a of actuators) {
          if (o[a.id] !== prev[a.id]) switches.get(a.id)!.push(now);
          for (const x of conflicts.get(a.id) ?? []) if (o[a.id] && o[x]) together++;
        }
        prev = o;
        if (now >= settleUntil) {
          const t = period === "day" ? 25 : 21;
          const co2 = period === "day" ? 900 : 500;
          if (Math.abs(c.t - t) > 2) outOfBand.push(`${new Date(now).toISOString()} ${period} t=${c.t.toFixed(2)}`);
          if (Math.abs(c.rh - 60) > 8) outOfBand.push(`${new Date(now).toISOString()} rh=${c.rh.toFixed(1)}`);
          if (period === "day" && Math.abs(c.co2 - co2) > 200)
            outOfBand.push(`${new Date(now).toISOString()} co2=${c.co2.toFixed(0)}`);
        }
      }
    } finally {
      await scanner.stop();
    }

    expect(outOfBand.slice(0, 10)).toEqual([]);
    expect(together).toBe(0);
    expect(node.watchdogTrips).toBe(0);
    expect(tx.stats).toMatchObject({ unacknowledged: 0, expired: 0, notTransmitted: 0 });
    expect(tx.stats.acked).toBe(svc.stats.commandsSent);
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
    // the events tell the story: every switch is a row with its reason, and its acknowledgement a row of its own
    await svc.cycle();
    const { rows } = await db.pool.query<{ switches: number; acked: number }>(
      `SELECT count(*) FILTER (WHERE action IN ('on', 'off'))::int AS switches,
              count(*) FILTER (WHERE action = 'ack' AND ack_status = 'acked')::int AS acked
       FROM actuator_events WHERE room_id = 1`,
    );
    const total = [...switches.values()].reduce((n, x) => n + x.length, 0);
    expect(rows[0]!.switches).toBe(total);
    expect(rows[0]!.acked).toBe(total);
  }, 600_000);
});
