import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { actuatorConflicts, parseSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable, commandProblems, encodeCommand } from "../../pipeline/can/commands.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";

// The actuators and schedules of the site file, and their command messages in
// the CAN database.

const FILE = "ops/site.json";
const text = () => readFileSync(projectPath(FILE), "utf8");
// biome-ignore lint/suspicious/noExplicitAny: a site file mutated freely, to be refused by the schema
type Json = any;
const mutate = (f: (j: Json) => void) => {
  const j = JSON.parse(text());
  f(j);
  return JSON.stringify(j);
};
const candb = () => loadCanDb(projectPath("ops/cea.kcd"));

describe("site file: actuators and schedules", () => {
  it("ops/site.json has the rooms' schedules and actuators, each with its conflicts", () => {
    const site = parseSite(text(), FILE);
    expect(site.rooms.find((r) => r.id === 1)?.schedule).toEqual({ lights_on: "06:00", lights_off: "18:00" });
    expect(site.actuators.length).toBeGreaterThanOrEqual(5);
    const c = actuatorConflicts(site);
    expect([...c.get("flower_heater")!]).toEqual(["flower_cooling_fan"]);
    expect([...c.get("flower_humidifier")!]).toEqual(["flower_dehumidifier"]);
    // explicit: venting wastes the CO2
    expect([...c.get("flower_cooling_fan")!].sort()).toEqual(["flower_co2_valve", "flower_heater"]);
  });

  it.each([
    [
      "an actuator in an unknown room",
      (j: Json) => (j.actuators[0].room_id = 77),
      /actuators\.0\.room_id: no room with id 77/,
    ],
    [
      "an actuator on a device of another room",
      (j: Json) => (j.actuators[0].device_id = 3),
      /actuators\.0\.device_id: device 3 is in room 2, not 1/,
    ],
    [
      "an unknown device",
      (j: Json) => (j.actuators[0].device_id = 99),
      /actuators\.0\.device_id: no device with id 99/,
    ],
    [
      "a conflict with an unknown actuator",
      (j: Json) => (j.actuators[0].conflicts = ["boiler"]),
      /actuators\.0\.conflicts\.0: no actuator with id boiler/,
    ],
    [
      "two actuators on one command signal",
      (j: Json) => (j.actuators[1].command = j.actuators[0].command),
      /actuators\.1\.command: duplicate command signal Cmd_N1\.heater/,
    ],
    [
      "a quantity the controller does not know",
      (j: Json) => (j.actuators[0].quantity = "par"),
      /actuators\.0\.quantity: /,
    ],
    [
      "conflicting actuators that are both on in their safe state",
      (j: Json) => {
        j.actuators[0].safe_state = "on";
        j.actuators[1].safe_state = "on";
      },
      /actuators\.0\.safe_state: conflicts with flower_cooling_fan, whose safe state is also on/,
    ],
    [
      "a schedule time that is not HH:MM",
      (j: Json) => (j.rooms[0].schedule.lights_on = "6am"),
      /rooms\.0\.schedule\.lights_on: expected "HH:MM"/,
    ],
    ["a missing hysteresis", (j: Json) => delete j.actuators[2].hysteresis, /actuators\.2\.hysteresis: /],
  ])("rejects %s, naming the path", (_what, f, message) => {
    const t = mutate(f);
    expect(() => parseSite(t, FILE)).toThrow(ConfigError);
    expect(() => parseSite(t, FILE)).toThrow(message);
  });

  it("every actuator's command is a signal of a command message with seq and watchdog_s", () => {
    const site = parseSite(text(), FILE);
    expect(commandProblems(candb(), site, FILE)).toEqual([]);
    const bad = parseSite(
      mutate((j) => {
        j.actuators[0].command = "Cmd_N1.boiler";
        j.actuators[1].command = "Cmd_N9.heater";
        j.actuators[2].command = "Climate_N1.dry_bulb_x";
      }),
      FILE,
    );
    const problems = commandProblems(candb(), bad, FILE);
    expect(problems).toEqual([
      expect.stringMatching(/^ops\/site.json: actuators\.0\.command: "Cmd_N1\.boiler": Cmd_N1 has no signal boiler/),
      expect.stringMatching(/^ops\/site.json: actuators\.1\.command: "Cmd_N9\.heater": no message Cmd_N9/),
      expect.stringMatching(/actuators\.2\.command: "Climate_N1\.dry_bulb_x": Climate_N1 has no signal dry_bulb_x/),
      expect.stringMatching(/actuators\.2\.command: .*lacks the signal seq/),
      expect.stringMatching(/actuators\.2\.command: .*lacks the signal watchdog_s/),
    ]);
    expect(() => buildCommandTable(candb(), bad, FILE)).toThrow(/site file and CAN database disagree/);
  });

  it("encodes a node's command frame with every output, seq and watchdog", () => {
    const site = parseSite(text(), FILE);
    const db = candb();
    const table = buildCommandTable(db, site, FILE);
    const cm = table.messages.get("Cmd_N1")!;
    expect([...cm.outputs.keys()].sort()).toEqual([
      "flower_co2_valve",
      "flower_cooling_fan",
      "flower_dehumidifier",
      "flower_heater",
      "flower_humidifier",
    ]);
    const f = encodeCommand(
      cm,
      new Map([
        ["flower_heater", true],
        ["flower_dehumidifier", true],
      ]),
      300,
      30,
    );
    expect(f).toMatchObject({ message: "Cmd_N1", id: 0x501, ext: false, fd: false });
    // bits 0 (heater) and 3 (dehumidifier); seq 300 & 0xff = 44; watchdog 30 little-endian
    expect(f.data).toBe("092C1E00");
    const m = db.messages.find((x) => x.name === "Cmd_N1")!;
    expect(m.signals.map((s) => s.name)).toContain("watchdog_s");
  });
});
