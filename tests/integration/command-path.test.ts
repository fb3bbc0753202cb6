import type { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { insertSetpoints } from "../../db/queries/automation.js";
import { loadSite, type Site } from "../../db/site.js";
import { registerAutomationMetrics } from "../../pipeline/automation/metrics.js";
import { AutomationService } from "../../pipeline/automation/service.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable, type CommandTable, encodeCommand } from "../../pipeline/can/commands.js";
import type { CanFrame, OutgoingFrame } from "../../pipeline/can/frame.js";
import type { CanDb } from "../../pipeline/can/model.js";
import { simulatorSource } from "../../pipeline/can/simulator.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { Health } from "../../pipeline/runtime/health.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { createRegistry } from "../../pipeline/runtime/metrics.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { type ScannerHandle, type SourceEnvelope, startScanner } from "../../pipeline/runtime/scanner.js";
import { chain, use } from "../../pipeline/runtime/stage.js";
import { CAN_FRAMES, frameChunks } from "../../stages/can-ingest.js";
import { CMD_GROUP, CommandTransmitter, commandStatusStage } from "../../stages/command-transmit.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { type Api, startApi } from "./api-harness.js";

// The command path on the real Redis and PostgreSQL: automation-service
// appends to can:cmd, can-scanner's command transmitter (a component of the
// scanner runtime, with the chain's command-status stage) sends each frame
// through the frame source's send side to the simulator's actuator nodes,
// matches their Status frames, retries, and publishes the outcome on
// can:cmd:ack, which automation-service records in actuator_events and turns
// into an alert when a node does not answer.

const ACK_MS = 150;
const RETRIES = 3;

interface Bus {
  scanner: ScannerHandle;
  tx: CommandTransmitter;
  /** Frames written on the bus. */
  sent: OutgoingFrame[];
  /** When true the nodes hear nothing (a node unplugged or dead). */
  silent: { on: boolean };
}

async function waitFor<T>(what: string, f: () => Promise<T | null | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("command path: can:cmd → transmitter → simulated nodes → Status → outcome", () => {
  let api: Api;
  let site: Site;
  let candb: CanDb;
  let commands: CommandTable;
  let redis: Redis;
  let pool: pg.Pool;
  let keys: ReturnType<typeof redisKeys>;
  const log = createLogger("command-path", "silent");
  const buses: Bus[] = [];

  async function startBus(consumer = "can-scanner-1", health?: Health): Promise<Bus> {
    const { table } = await loadDecodeTable({
      siteFile: projectPath("ops/site.json"),
      canDbFile: projectPath("ops/cea.kcd"),
    });
    const source = simulatorSource({ table, site, candb, startMs: Date.now(), speed: 1, iface: "sim0", pollMs: 20 });
    const sent: OutgoingFrame[] = [];
    const silent = { on: false };
    const tx = new CommandTransmitter({
      redis,
      keys,
      candb,
      source: {
        name: source.name,
        transmit: async (f) => {
          sent.push(f);
          if (!silent.on) await source.transmit(f);
        },
      },
      consumer,
      ackMs: ACK_MS,
      retries: RETRIES,
    });
    const scanner = await startScanner({
      log,
      source: frameChunks(source),
      components: [tx],
      ...(health ? { health } : {}),
      chain: chain<CanFrame[], SourceEnvelope>(CAN_FRAMES).pipe(use(commandStatusStage(tx), {})),
    });
    const bus = { scanner, tx, sent, silent };
    buses.push(bus);
    return bus;
  }

  const outcomes = async () =>
    (await redis.xrange(keys.cmdAck, "-", "+")).map(([id, f]) => {
      const m: Record<string, string> = { id };
      for (let i = 0; i + 1 < f.length; i += 2) m[f[i]!] = f[i + 1]!;
      return m;
    });

  beforeAll(async () => {
    api = await startApi({ CEA_ALERT_EVAL_MS: "1000" });
    site = await loadSite(projectPath("ops/site.json"));
    candb = loadCanDb(projectPath("ops/cea.kcd"));
    commands = buildCommandTable(candb, site, "ops/site.json");
    keys = redisKeys(api.config);
    redis = createRedis(api.config.CEA_REDIS_URL, undefined, "command-path");
    pool = new pg.Pool({ connectionString: api.db.urlAs("automation"), max: 2 });
    const sp = (room_id: number, target: number) => ({
      room_id,
      quantity: "air_temperature" as const,
      period: "any" as const,
      target,
      tolerance: 2,
      effective_from: new Date(Date.now() - 3_600_000),
      created_by: "test",
    });
    const apiPool = new pg.Pool({ connectionString: api.db.urlAs("api"), max: 1 });
    // far above the room: the heater switches on at the first decision
    await insertSetpoints(apiPool, [sp(1, 40)]);
    await apiPool.end();
  });
  afterAll(async () => {
    for (const b of buses) await b.scanner.stop();
    redis?.disconnect();
    await pool?.end();
    await api?.close();
  });

  const service = () =>
    new AutomationService({
      config: loadConfig({ CEA_AUTOMATION_WATCHDOG_S: "30", CEA_AUTOMATION_STALE_S: "60" }),
      site,
      commands,
      redis,
      db: pool,
      keys,
      log,
      dryRun: false,
    });
  const liveRoom1 = async (t: number) => {
    const time = new Date().toISOString();
    await redis.hset(
      keys.live,
      "101",
      JSON.stringify({ value: t, time, name: "dry_bulb_b", status: null }),
      "201",
      JSON.stringify({ value: t, time, name: "dry_bulb_f", status: null }),
    );
  };
  const heaterRows = async () =>
    (
      await api.db.pool.query<{ action: string; ack_status: string; state: boolean | null; reason: string }>(
        `SELECT action, ack_status, state, reason FROM actuator_events
         WHERE actuator = 'flower_heater' ORDER BY event_id`,
      )
    ).rows;

  it("a command the node answers: one transmission, outcome acked, actuator_events records 'acked' with the applied state", async () => {
    const bus = await startBus();
    const svc = service();
    await liveRoom1(20);
    const decisions = await svc.cycle();
    expect(decisions.find((d) => d.actuator === "flower_heater")).toMatchObject({ action: "on", state: true });
    const acked = await waitFor("the heater command's outcome", async () =>
      (await outcomes()).find((o) => o.message === "Cmd_N1" && o.outcome === "acked"),
    );
    expect(acked).toMatchObject({ tries: "1", safe: "0" });
    expect(JSON.parse(acked.applied!)).toMatchObject({ heater: 1 });
    expect(bus.sent.filter((f) => f.id === 0x501)).toHaveLength(1);
    // the next cycle records it
    await liveRoom1(20);
    await svc.cycle();
    const rows = await heaterRows();
    expect(rows.map((r) => [r.action, r.ack_status, r.state])).toEqual([
      ["on", "sent", true],
      ["ack", "acked", true],
    ]);
    expect(rows[1]!.reason).toMatch(/acknowledged by the node \(seq \d+, 1 try\)/);
    // nothing left pending in either group
    expect(((await redis.xpending(keys.cmd, CMD_GROUP)) as [number])[0]).toBe(0);
    expect(((await redis.xpending(keys.cmdAck, "automation-service")) as [number])[0]).toBe(0);
    await bus.scanner.stop();
  });

  it("a silent node: exactly N+1 transmissions, then 'unacknowledged' and an alert in the health key, the API's health and the alerts hash, cleared when the node acks again", async () => {
    await api.db.pool.query("TRUNCATE actuator_events");
    const bus = await startBus();
    bus.silent.on = true;
    const svc = service();
    await liveRoom1(20);
    const before = (await outcomes()).length;
    // a fresh service: its first frame carries the heater's switch on
    await svc.cycle();
    const un = await waitFor("the unacknowledged outcome", async () =>
      (await outcomes()).slice(before).find((o) => o.message === "Cmd_N1"),
    );
    expect(un).toMatchObject({ outcome: "unacknowledged", tries: String(RETRIES + 1) });
    expect(bus.sent.filter((f) => f.id === 0x501)).toHaveLength(RETRIES + 1);
    await liveRoom1(20);
    await svc.cycle();
    expect(svc.unacknowledged.get("Cmd_N1")).toMatch(/no Status_N1 echoing seq/);
    // what Prometheus scrapes (the CeaCommandUnacknowledged rule reads the gauge)
    const registry = createRegistry("automation-service", { processMetrics: false });
    registerAutomationMetrics(registry, () => svc);
    const scraped = async () => await registry.metrics();
    const text = await scraped();
    // the bus is silent for every node: each command message is unacknowledged
    for (const m of ["Cmd_N1", "Cmd_N3", "Cmd_N4"])
      expect(text).toContain(`cea_automation_command_unacknowledged{message="${m}"} 1`);
    expect(text).toContain('cea_automation_command_outcomes_total{outcome="unacknowledged"} 3');
    const rows = await heaterRows();
    expect(rows.map((r) => [r.action, r.ack_status])).toEqual([
      ["on", "sent"],
      ["ack", "unacknowledged"],
    ]);
    const health = JSON.parse((await redis.get(keys.health("automation-service")))!) as {
      status: string;
      reason: string;
    };
    expect(health.status).toBe("degraded");
    expect(health.reason).toMatch(/command Cmd_N1 unacknowledged/);
    const alertId = "worker_degraded:automation-service";
    const apiAlert = await waitFor("the alert in /api/v1/health", async () => {
      const h = (await api.app.inject({ url: "/api/v1/health" })).json() as {
        alerts: { active: { id: string; summary: string }[] };
      };
      return h.alerts.active.find((a) => a.id === alertId);
    });
    expect(apiAlert.summary).toMatch(/Cmd_N1 unacknowledged/);
    expect(await redis.hget(keys.alerts, alertId)).toMatch(/Cmd_N1 unacknowledged/);

    // the node answers again: the next command is acked and the alert clears
    bus.silent.on = false;
    await liveRoom1(20);
    await svc.cycle(true); // the stop's frame: a change of every output, sent at once
    await waitFor("an acked outcome", async () =>
      (await outcomes()).slice(before).find((o) => o.message === "Cmd_N1" && o.outcome === "acked"),
    );
    await liveRoom1(20);
    await svc.cycle();
    expect(svc.unacknowledged.size).toBe(0);
    expect(await scraped()).toContain('cea_automation_command_unacknowledged{message="Cmd_N1"} 0');
    expect(await scraped()).toMatch(/cea_automation_command_outcomes_total\{outcome="acked"\} [1-9]/);
    expect(JSON.parse((await redis.get(keys.health("automation-service")))!).status).toBe("ok");
    await waitFor("the alert cleared", async () => !(await redis.hexists(keys.alerts, alertId)));
    await bus.scanner.stop();
  });

  it("an entry whose watchdog ran out before it was read is not transmitted (outcome expired)", async () => {
    const bus = await startBus();
    const cm = commands.messages.get("Cmd_N3")!;
    const frame = encodeCommand(cm, new Map([["veg_heater", true]]), 7, 30);
    const old = new Date(Date.now() - 31_000).toISOString();
    const entry = await redis.xadd(
      keys.cmd,
      "*",
      ...["ts", old, "id", String(frame.id), "data", frame.data],
      ...["message", "Cmd_N3", "seq", "7", "watchdog_s", "30", "cmd_id", "test-expired"],
    );
    const o = await waitFor("the expired outcome", async () => (await outcomes()).find((x) => x.cmd_entry === entry));
    expect(o).toMatchObject({ outcome: "expired", tries: "0", cmd_id: "test-expired" });
    expect(bus.sent.filter((f) => f.id === 0x503)).toHaveLength(0);
    expect(bus.tx.stats.expired).toBe(1);
    await bus.scanner.stop();
  });

  it("a restart resumes the scanner's pending entries: read by a scanner that died before their outcome, transmitted and acked by the next", async () => {
    const cm = commands.messages.get("Cmd_N4")!;
    const ids: string[] = [];
    for (const seq of [11, 12]) {
      const frame = encodeCommand(cm, new Map([["lab_heater", seq === 12]]), seq, 30);
      ids.push(
        (await redis.xadd(
          keys.cmd,
          "*",
          ...["ts", new Date().toISOString(), "id", String(frame.id), "data", frame.data],
          ...["message", "Cmd_N4", "seq", String(seq), "watchdog_s", "30", "cmd_id", `test-resume-${seq}`],
        ))!,
      );
    }
    // a scanner that read them and was killed (kill -9) before any outcome: they are its pending entries
    await redis.xgroup("CREATE", keys.cmd, CMD_GROUP, "0", "MKSTREAM").catch(() => undefined);
    await redis.xreadgroup("GROUP", CMD_GROUP, "can-scanner-9", "COUNT", 100, "STREAMS", keys.cmd, ">");
    const pending = (await redis.xpending(keys.cmd, CMD_GROUP, "-", "+", 100, "can-scanner-9")) as unknown[];
    expect(pending.length).toBeGreaterThanOrEqual(2);
    const bus = await startBus("can-scanner-9");
    const got = await waitFor("both outcomes", async () => {
      const mine = (await outcomes()).filter((o) => ids.includes(o.cmd_entry!));
      return mine.length === 2 ? mine : null;
    });
    expect(got.map((o) => [o.seq, o.outcome])).toEqual([
      ["11", "acked"],
      ["12", "acked"],
    ]);
    expect(JSON.parse(got[1]!.applied!)).toMatchObject({ heater: 1 });
    expect(((await redis.xpending(keys.cmd, CMD_GROUP)) as [number])[0]).toBe(0);
    await bus.scanner.stop();
  });
  it("Redis answers an error when the outcome is published (can:cmd:ack of the wrong type): the entry stays pending and the problem is in health; once the key is right the outcome is published and the entry acknowledged", async () => {
    const health = new Health(log);
    const bus = await startBus("can-scanner-1", health);
    await redis.rename(keys.cmdAck, `${keys.cmdAck}:kept`);
    await redis.set(keys.cmdAck, "not a stream");
    const cm = commands.messages.get("Cmd_N3")!;
    const frame = encodeCommand(cm, new Map([["veg_heater", true]]), 21, 30);
    const entry = (await redis.xadd(
      keys.cmd,
      "*",
      ...["ts", new Date().toISOString(), "id", String(frame.id), "data", frame.data],
      ...["message", "Cmd_N3", "seq", "21", "watchdog_s", "30", "cmd_id", "test-wrongtype"],
    ))!;
    await waitFor("the publishing problem in health", async () => (health.degraded ? true : null));
    expect(JSON.stringify(health.report())).toMatch(/WRONGTYPE/);
    const pending = (await redis.xpending(keys.cmd, CMD_GROUP, "-", "+", 100)) as [string][];
    expect(pending.map((p) => p[0])).toContain(entry);
    await redis.del(keys.cmdAck);
    await redis.rename(`${keys.cmdAck}:kept`, keys.cmdAck);
    const o = await waitFor("the outcome after the key is right", async () =>
      (await outcomes()).find((x) => x.cmd_entry === entry),
    );
    expect(o).toMatchObject({ outcome: "acked", cmd_id: "test-wrongtype" });
    expect((await outcomes()).filter((x) => x.cmd_entry === entry)).toHaveLength(1);
    await waitFor("health recovered", async () => (health.degraded ? null : true));
    expect(((await redis.xpending(keys.cmd, CMD_GROUP)) as [number])[0]).toBe(0);
    await bus.scanner.stop();
  });
});
