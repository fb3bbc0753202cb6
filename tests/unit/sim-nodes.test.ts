import { describe, expect, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable, decodeStatus, encodeCommand, statusMessageFor } from "../../pipeline/can/commands.js";
import type { CanFrame } from "../../pipeline/can/frame.js";
import { SimulatedNodes } from "../../pipeline/can/nodes.js";
import { Simulation } from "../../pipeline/can/simulator.js";
import { type SendChannel, sendFrame } from "../../pipeline/can/socketcan.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";

// The simulated actuator nodes (pipeline/can/nodes.ts), found from the CAN
// database and the site file: they apply command frames, echo the seq in their
// Status frame and go to their safe state when commands stop for watchdog_s —
// what a real node does after a crash or kill -9 of automation-service.

const files = { siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") };

describe("simulated actuator nodes", async () => {
  const site = await loadSite(files.siteFile);
  const candb = loadCanDb(files.canDbFile);
  const commands = buildCommandTable(candb, site, "ops/site.json");
  const status = statusMessageFor(candb, "Cmd_N1")!;
  const report = (f: CanFrame) => decodeStatus(status, f.data);

  it("are the command messages of the site's actuators that have a Status pair in the CAN database", () => {
    const nodes = new SimulatedNodes(candb, site, "sim0");
    expect(nodes.nodes.map((n) => `${n.command.name}/${n.status.name}`)).toEqual([
      "Cmd_N1/Status_N1",
      "Cmd_N3/Status_N3",
      "Cmd_N4/Status_N4",
    ]);
    expect(statusMessageFor(candb, "Climate_N1")).toBeNull();
  });

  it("apply a command, echo its seq with the outputs as applied, and go safe (safe = 1) after watchdog_s without commands", () => {
    const nodes = new SimulatedNodes(candb, site, "sim0");
    const t0 = Date.parse("2026-06-15T10:00:00Z");
    const cm = commands.messages.get("Cmd_N1")!;
    const frame = encodeCommand(
      cm,
      new Map([
        ["flower_heater", true],
        ["flower_humidifier", true],
      ]),
      42,
      5,
    );
    const [answer] = nodes.receive({ id: frame.id, ext: frame.ext, data: Buffer.from(frame.data, "hex") }, t0);
    expect(answer!.id).toBe(status.id);
    expect(report(answer!)).toEqual({
      seq: 42,
      safe: false,
      applied: { heater: 1, cooling_fan: 0, humidifier: 1, dehumidifier: 0, co2_valve: 0 },
    });
    expect(nodes.outputs().get("flower_heater")).toBe(true);
    // commands stop (the service was killed): nothing until the watchdog runs out
    expect(nodes.tick(t0 + 5_000)).toEqual([]);
    const [safe] = nodes.tick(t0 + 5_001);
    expect(report(safe!)).toEqual({
      seq: 42,
      safe: true,
      applied: { heater: 0, cooling_fan: 0, humidifier: 0, dehumidifier: 0, co2_valve: 0 },
    });
    expect(nodes.outputs().get("flower_heater")).toBe(false);
    expect(nodes.tick(t0 + 60_000)).toEqual([]); // safe once, until the next command
    expect(nodes.nodes[0]!.watchdogTrips).toBe(1);
  });

  it("in the simulation: Status frames go out on the bus every second, a closed-loop room warms while its heater is on and the node goes safe after the watchdog", async () => {
    const { table } = await loadDecodeTable(files);
    const startMs = Date.parse("2026-06-15T00:00:00Z");
    const sim = new Simulation({ table, site, candb, startMs, speed: 1, iface: "sim0" });
    expect([...sim.models.keys()].sort()).toEqual([1, 2, 3]);
    const room = sim.models.get(1)!;
    const first = sim.next();
    expect(first.filter((f) => f.id === status.id)).toHaveLength(1);
    const t0 = room.climate.t;
    const cm = commands.messages.get("Cmd_N1")!;
    const frame = encodeCommand(cm, new Map([["flower_heater", true]]), 1, 30);
    sim.transmit({ id: frame.id, ext: false, data: Buffer.from(frame.data, "hex") }, sim.timeOf(1));
    expect(report(sim.answers()[0]!)).toMatchObject({ seq: 1, safe: false, applied: { heater: 1 } });
    for (let i = 0; i < 31; i++) sim.next();
    expect(room.climate.t).toBeGreaterThan(t0 + 0.2);
    // more than 30 s after the command: the watchdog puts the heater off and the node says so
    const frames = sim.next();
    const statuses = frames.filter((f) => f.id === status.id).map(report);
    expect(statuses[0]).toMatchObject({ safe: true, applied: { heater: 0 } });
  });

  it("socketcan's send side: classic and FD frames through the channel, a refused frame is an error naming the interface", () => {
    const calls: string[] = [];
    const channel: SendChannel = {
      send: (m) => {
        calls.push(`send ${m.id} ${m.ext} ${m.data.toString("hex")}`);
        return 16;
      },
      sendFD: (m) => {
        calls.push(`sendFD ${m.id} ${m.data.length}`);
        return 72;
      },
    };
    sendFrame(channel, "can0", { id: 0x501, ext: false, fd: false, data: Uint8Array.from([1, 2, 30, 0]) });
    sendFrame(channel, "can0", { id: 0x1234, ext: true, fd: true, data: new Uint8Array(12) });
    expect(calls).toEqual(["send 1281 false 01021e00", "sendFD 4660 12"]);
    const refusing: SendChannel = { send: () => -1, sendFD: () => -1 };
    expect(() => sendFrame(refusing, "can0", { id: 0x501, data: new Uint8Array(4) })).toThrow(
      /can0: the kernel refused the frame 0x501/,
    );
    expect(() => sendFrame(channel, "can0", { id: 0x501, data: new Uint8Array(9) })).toThrow(/at most 8 bytes/);
  });
});
