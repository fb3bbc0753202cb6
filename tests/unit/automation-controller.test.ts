import { describe, expect, it } from "vitest";
import { siteSchema } from "../../db/site.js";
import {
  type ActuatorState,
  type ControlInputs,
  controlPlan,
  type Decision,
  decide,
  periodAt,
  type Reading,
  type Setpoint,
  setpointInForce,
} from "../../pipeline/automation/controller.js";
import { airVpd } from "../../pipeline/runtime/psychro.js";

// The decision function on a small site: one room with a heater, a cooling fan
// (conflicts with the heater: opposite directions of one quantity), a
// humidifier and a dehumidifier; lights on 06:00–18:00 in Amsterdam.

const site = siteSchema.parse({
  facility: { id: 1, name: "F", timezone: "Europe/Amsterdam" },
  rooms: [
    { id: 1, name: "Flower", schedule: { lights_on: "06:00", lights_off: "18:00" } },
    { id: 2, name: "Night owl", schedule: { lights_on: "20:00", lights_off: "04:00" } },
  ],
  devices: [
    {
      id: 1,
      name: "n1",
      type: "climate_node",
      node_id: 1,
      room_id: 1,
      sensors: [{ id: 1, name: "t", unit: "°C", channel: 0, signal: "C.t", kind: "air_temperature" }],
    },
  ],
  actuators: [
    {
      id: "heater",
      room_id: 1,
      device_id: 1,
      quantity: "air_temperature",
      direction: "raise",
      command: "Cmd.heater",
      hysteresis: 0.5,
      min_on_s: 120,
      min_off_s: 60,
    },
    {
      id: "fan",
      room_id: 1,
      device_id: 1,
      quantity: "air_temperature",
      direction: "lower",
      command: "Cmd.fan",
      hysteresis: 0.5,
      min_on_s: 0,
      min_off_s: 0,
    },
    {
      id: "humidifier",
      room_id: 1,
      device_id: 1,
      quantity: "relative_humidity",
      direction: "raise",
      command: "Cmd.hum",
      hysteresis: 2,
      min_on_s: 0,
      min_off_s: 0,
    },
    {
      id: "dehumidifier",
      room_id: 1,
      device_id: 1,
      quantity: "relative_humidity",
      direction: "lower",
      command: "Cmd.dehum",
      hysteresis: 2,
      min_on_s: 0,
      min_off_s: 0,
    },
  ],
});
const plan = controlPlan(site);
const settings = { staleMs: 60_000 };
// 2026-06-15 12:00 local (10:00 UTC): day
const NOON = Date.parse("2026-06-15T10:00:00Z");

const sp = (quantity: Setpoint["quantity"], target: number, extra: Partial<Setpoint> = {}): Setpoint => ({
  setpoint_id: 1,
  room_id: 1,
  quantity,
  period: "any",
  target,
  tolerance: 2,
  effectiveFromMs: 0,
  ...extra,
});
const SETPOINTS = [sp("air_temperature", 24), { ...sp("relative_humidity", 60), setpoint_id: 2 }];

function inputs(nowMs: number, temp: number | Reading[], rh: number | Reading[] = 60): ControlInputs {
  const r = (v: number | Reading[], sensor: string): Reading[] =>
    typeof v === "number" ? [{ sensor, value: v, timeMs: nowMs - 1_000, status: null }] : v;
  return {
    nowMs,
    readings: new Map([
      [
        1,
        new Map([
          ["air_temperature", r(temp, "t")],
          ["relative_humidity", r(rh, "rh")],
        ]),
      ],
    ]),
    setpoints: SETPOINTS,
    outage: null,
  };
}
const by = (ds: Decision[], id: string) => ds.find((d) => d.actuator === id)!;

/** Run a sequence of (time, temperature) steps, returning every decision per step. */
function run(steps: [number, number][], start: Map<string, ActuatorState> = new Map()) {
  let state = start;
  const out: Decision[][] = [];
  for (const [t, temp] of steps) {
    const r = decide(plan, state, inputs(t, temp), settings);
    state = r.state;
    out.push(r.decisions);
  }
  return { out, state };
}

describe("controller: hysteresis", () => {
  it("switches a heater on below target - hysteresis, keeps it inside, off at the target", () => {
    const t = (s: number) => NOON + s * 1000;
    const { out } = run([
      [t(0), 23.6], // inside hysteresis: stays off
      [t(10), 23.4], // below 23.5: on
      [t(200), 23.8], // inside: stays on
      [t(300), 24.0], // target reached: off
      [t(400), 23.7], // inside: stays off
    ]);
    expect(out.map((ds) => by(ds, "heater").state)).toEqual([false, true, true, false, false]);
    expect(out.map((ds) => by(ds, "heater").action)).toEqual(["keep", "on", "keep", "off", "keep"]);
    expect(by(out[1]!, "heater")).toMatchObject({
      record: true,
      value: 23.4,
      setpoint: 24,
      band: 2,
      setpoint_id: 1,
      reason: "23.4 vs target 24: below target - 0.5",
    });
    // only changes are recorded while nothing is held
    expect(out.map((ds) => by(ds, "heater").record)).toEqual([false, true, false, true, false]);
  });

  it("a lowering actuator mirrors it: on above target + hysteresis, off at or below the target", () => {
    const t = (s: number) => NOON + s * 1000;
    const { out } = run([
      [t(0), 24.4],
      [t(1), 24.6],
      [t(2), 24.2],
      [t(3), 24.0],
    ]);
    expect(out.map((ds) => by(ds, "fan").state)).toEqual([false, true, true, false]);
  });

  it("takes the mean of the room's good sensors", () => {
    const now = NOON;
    const r = decide(
      plan,
      new Map(),
      inputs(now, [
        { sensor: "a", value: 23.0, timeMs: now - 500, status: null },
        { sensor: "b", value: 23.8, timeMs: now - 500, status: null },
      ]),
      settings,
    );
    expect(by(r.decisions, "heater")).toMatchObject({ value: 23.4, state: true });
  });
});

describe("controller: minimum on and off times", () => {
  it("holds a heater on for min_on_s and records the hold once, with its reason", () => {
    const t = (s: number) => NOON + s * 1000;
    const { out } = run([
      [t(0), 23.0], // on
      [t(30), 24.5], // wants off: held (120 s on)
      [t(60), 24.6], // still held: not recorded again
      [t(121), 24.6], // off
    ]);
    expect(out.map((ds) => by(ds, "heater").state)).toEqual([true, true, true, false]);
    expect(by(out[1]!, "heater")).toMatchObject({ action: "hold", record: true });
    expect(by(out[1]!, "heater").reason).toBe("24.5 vs target 24: target reached; held by minimum on-time (90 s left)");
    expect(by(out[2]!, "heater")).toMatchObject({ action: "hold", record: false });
    expect(by(out[3]!, "heater")).toMatchObject({ action: "off", record: true });
  });

  it("holds it off for min_off_s after it switched off", () => {
    const t = (s: number) => NOON + s * 1000;
    const { out } = run([
      [t(0), 23.0],
      [t(130), 24.1], // off
      [t(150), 23.0], // wants on: held by min off (60 s)
      [t(191), 23.0], // on
    ]);
    expect(out.map((ds) => by(ds, "heater").state)).toEqual([true, false, false, true]);
    expect(by(out[2]!, "heater").reason).toMatch(/held by minimum off-time \(40 s left\)$/);
  });

  it("never switches an actuator more often than its minimum times allow, whatever the input", () => {
    // a noisy input around the thresholds for an hour, one decision a second
    let state = new Map<string, ActuatorState>();
    const switches: number[] = [];
    let last: boolean | undefined;
    for (let s = 0; s < 3600; s++) {
      const temp = 24 + 1.2 * Math.sin(s / 7) + 0.4 * Math.sin(s * 1.7);
      const r = decide(plan, state, inputs(NOON + s * 1000, temp), settings);
      state = r.state;
      const h = by(r.decisions, "heater").state;
      if (last !== undefined && h !== last) switches.push(s);
      last = h;
    }
    expect(switches.length).toBeGreaterThan(4);
    for (let i = 1; i < switches.length; i++) {
      const gap = switches[i]! - switches[i - 1]!;
      // an on period lasts at least 120 s, an off period at least 60 s
      expect(gap).toBeGreaterThanOrEqual(i % 2 === 1 ? 120 : 60);
    }
  });
});

describe("controller: conflicts", () => {
  it("never runs the heater and the fan together: the fan is held while the heater is held on", () => {
    const t = (s: number) => NOON + s * 1000;
    const { out } = run([
      [t(0), 23.0], // heater on
      [t(10), 25.0], // heater wants off but min on holds it; fan wants on: conflict
      [t(121), 25.0], // heater off, fan may go on... but only one on per room per cycle is irrelevant here
    ]);
    expect(by(out[1]!, "fan")).toMatchObject({ action: "hold", state: false, record: true });
    expect(by(out[1]!, "fan").reason).toBe("25 vs target 24: above target + 0.5; conflict with heater");
    expect(by(out[2]!, "heater").state).toBe(false);
    expect(by(out[2]!, "fan").state).toBe(true);
    for (const ds of out) expect(by(ds, "heater").state && by(ds, "fan").state).toBe(false);
  });

  it("derives conflicts from opposite directions of one quantity and adds the site's own", () => {
    const withList = siteSchema.parse({
      ...site,
      actuators: site.actuators.map((a) => (a.id === "humidifier" ? { ...a, conflicts: ["fan"] } : a)),
    });
    const c = controlPlan(withList).conflicts;
    expect([...c.get("heater")!]).toEqual(["fan"]);
    expect([...c.get("humidifier")!].sort()).toEqual(["dehumidifier", "fan"]);
    expect([...c.get("fan")!].sort()).toEqual(["heater", "humidifier"]);
  });

  it("an explicit conflict holds an actuator of another quantity", () => {
    const withList = siteSchema.parse({
      ...site,
      actuators: site.actuators.map((a) => (a.id === "humidifier" ? { ...a, conflicts: ["fan"] } : a)),
    });
    const p = controlPlan(withList);
    const r1 = decide(p, new Map(), inputs(NOON, 25, 60), settings); // fan on
    const r2 = decide(p, r1.state, inputs(NOON + 1000, 25, 50), settings); // humidifier wants on
    expect(by(r2.decisions, "humidifier")).toMatchObject({ action: "hold", state: false });
    expect(by(r2.decisions, "humidifier").reason).toMatch(/conflict with fan$/);
  });
});

describe("controller: only good, fresh readings count", () => {
  it("a reading with a bad status does not count; with none good left the actuator goes safe", () => {
    const now = NOON;
    const r1 = decide(
      plan,
      new Map(),
      inputs(now, [
        { sensor: "a", value: 10, timeMs: now - 500, status: "out_of_range" },
        { sensor: "b", value: 24.2, timeMs: now - 500, status: null },
      ]),
      settings,
    );
    expect(by(r1.decisions, "heater")).toMatchObject({ value: 24.2, state: false, failsafe: false });
    const r2 = decide(
      plan,
      new Map([["heater", { on: true, sinceMs: now - 10_000, lastReasonKey: null }]]),
      inputs(now, [{ sensor: "a", value: 10, timeMs: now - 500, status: "out_of_range" }]),
      settings,
    );
    // the fail-safe is not held by the minimum on-time
    expect(by(r2.decisions, "heater")).toMatchObject({
      action: "safe",
      state: false,
      failsafe: true,
      record: true,
      reason: "fail-safe: bad status out_of_range (a)",
    });
  });

  it("stale data puts the actuator in its safe state, says how stale, and records it once", () => {
    const now = NOON;
    const old = (t: number): Reading[] => [{ sensor: "t", value: 20, timeMs: t - 95_000, status: null }];
    const r1 = decide(
      plan,
      new Map([["heater", { on: true, sinceMs: now - 10_000, lastReasonKey: null }]]),
      inputs(now, old(now)),
      settings,
    );
    expect(by(r1.decisions, "heater")).toMatchObject({
      action: "safe",
      state: false,
      failsafe: true,
      record: true,
      reason: "fail-safe: data stale 95 s",
    });
    const r2 = decide(plan, r1.state, inputs(now + 1000, old(now)), settings);
    expect(by(r2.decisions, "heater")).toMatchObject({ action: "safe", failsafe: true, record: false });
    expect(by(r2.decisions, "heater").reason).toBe("fail-safe: data stale 96 s");
  });

  it("an actuator whose safe state is on goes on", () => {
    const s2 = siteSchema.parse({
      ...site,
      actuators: site.actuators.map((a) => (a.id === "fan" ? { ...a, safe_state: "on" } : a)),
    });
    const r = decide(controlPlan(s2), new Map(), { ...inputs(NOON, 24), outage: "Redis unreachable" }, settings);
    expect(by(r.decisions, "fan")).toMatchObject({
      state: true,
      action: "safe",
      reason: "fail-safe: Redis unreachable",
    });
    expect(by(r.decisions, "heater")).toMatchObject({ state: false, action: "safe" });
  });

  it("an outage puts everything in its safe state", () => {
    const r1 = decide(plan, new Map(), inputs(NOON, 20, 40), settings);
    expect(r1.decisions.filter((d) => d.state).map((d) => d.actuator)).toEqual(["heater"]);
    const r2 = decide(plan, r1.state, { ...inputs(NOON + 1000, 20, 40), outage: "PostgreSQL unreachable" }, settings);
    expect(r2.decisions.every((d) => !d.state && d.action === "safe" && d.failsafe)).toBe(true);
    expect(by(r2.decisions, "heater").reason).toBe("fail-safe: PostgreSQL unreachable");
  });

  it("no setpoint: safe state, not a fail-safe alert", () => {
    const r = decide(plan, new Map(), { ...inputs(NOON, 20), setpoints: [] }, settings);
    expect(by(r.decisions, "heater")).toMatchObject({
      state: false,
      action: "safe",
      failsafe: false,
      reason: "no day setpoint for air_temperature",
    });
  });
});

describe("controller: recovery", () => {
  it("resumes control without a burst: one actuator of a room switches on per decision", () => {
    const now = NOON;
    const stale: ControlInputs = {
      ...inputs(now, 20, 40),
      readings: new Map([[1, new Map([["air_temperature", []]])]]),
    };
    const r1 = decide(plan, new Map(), stale, settings);
    expect(r1.decisions.every((d) => !d.state)).toBe(true);
    // data is back: heater and humidifier both want on
    const r2 = decide(plan, r1.state, inputs(now + 1000, 20, 40), settings);
    const r3 = decide(plan, r2.state, inputs(now + 2000, 20, 40), settings);
    expect(r2.decisions.filter((d) => d.changed).map((d) => d.actuator)).toEqual(["heater"]);
    expect(by(r2.decisions, "humidifier").reason).toMatch(/another actuator of the room switched on now$/);
    expect(r3.decisions.filter((d) => d.changed).map((d) => d.actuator)).toEqual(["humidifier"]);
  });
});

describe("controller: setpoints and day/night", () => {
  it("the latest setpoint in force wins per room and quantity; a future one does not count yet", () => {
    const rows: Setpoint[] = [
      sp("air_temperature", 22, { setpoint_id: 1, effectiveFromMs: NOON - 3_600_000 }),
      sp("air_temperature", 25, { setpoint_id: 2, effectiveFromMs: NOON - 60_000 }),
      sp("air_temperature", 30, { setpoint_id: 3, effectiveFromMs: NOON + 60_000 }),
      sp("air_temperature", 10, { setpoint_id: 4, room_id: 2, effectiveFromMs: NOON }),
      sp("co2", 900, { setpoint_id: 5, effectiveFromMs: NOON }),
    ];
    expect(setpointInForce(rows, 1, "air_temperature", "day", NOON)?.setpoint_id).toBe(2);
    expect(setpointInForce(rows, 1, "air_temperature", "day", NOON + 60_000)?.setpoint_id).toBe(3);
    expect(setpointInForce(rows, 1, "relative_humidity", "day", NOON)).toBeNull();
  });

  it("day and night setpoints follow the lights-on window; a newer 'any' row overrides both", () => {
    const rows: Setpoint[] = [
      sp("air_temperature", 26, { setpoint_id: 1, period: "day", effectiveFromMs: 1000 }),
      sp("air_temperature", 20, { setpoint_id: 2, period: "night", effectiveFromMs: 1000 }),
    ];
    const at = (iso: string) => Date.parse(iso);
    // Amsterdam in June is UTC+2: 05:59 local is 03:59Z
    expect(
      setpointInForce(rows, 1, "air_temperature", periodAt(plan, 1, at("2026-06-15T03:59:00Z")), 2e12)?.target,
    ).toBe(20);
    expect(
      setpointInForce(rows, 1, "air_temperature", periodAt(plan, 1, at("2026-06-15T04:00:00Z")), 2e12)?.target,
    ).toBe(26);
    expect(periodAt(plan, 1, at("2026-06-15T15:59:00Z"))).toBe("day");
    expect(periodAt(plan, 1, at("2026-06-15T16:00:00Z"))).toBe("night");
    const newer = [...rows, sp("air_temperature", 23, { setpoint_id: 3, period: "any", effectiveFromMs: 2000 })];
    expect(setpointInForce(newer, 1, "air_temperature", "night", 2e12)?.target).toBe(23);
  });

  it("uses the facility's wall clock across DST changes (spring forward and fall back)", () => {
    const at = (iso: string) => Date.parse(iso);
    // winter (UTC+1): 06:00 local = 05:00Z
    expect(periodAt(plan, 1, at("2026-03-28T04:59:00Z"))).toBe("night");
    expect(periodAt(plan, 1, at("2026-03-28T05:00:00Z"))).toBe("day");
    // the day after spring forward (29 March 2026, UTC+2): 06:00 local = 04:00Z
    expect(periodAt(plan, 1, at("2026-03-29T03:59:00Z"))).toBe("night");
    expect(periodAt(plan, 1, at("2026-03-29T04:00:00Z"))).toBe("day");
    expect(periodAt(plan, 1, at("2026-03-29T15:59:00Z"))).toBe("day");
    expect(periodAt(plan, 1, at("2026-03-29T16:00:00Z"))).toBe("night");
    // fall back (25 October 2026, back to UTC+1): 18:00 local = 17:00Z
    expect(periodAt(plan, 1, at("2026-10-25T16:59:00Z"))).toBe("day");
    expect(periodAt(plan, 1, at("2026-10-25T17:00:00Z"))).toBe("night");
  });

  it("a window across midnight; a room without a schedule is always day", () => {
    const at = (iso: string) => Date.parse(iso);
    // room 2: lights 20:00–04:00 local (June, UTC+2)
    expect(periodAt(plan, 2, at("2026-06-15T17:59:00Z"))).toBe("night");
    expect(periodAt(plan, 2, at("2026-06-15T18:00:00Z"))).toBe("day");
    expect(periodAt(plan, 2, at("2026-06-16T01:59:00Z"))).toBe("day");
    expect(periodAt(plan, 2, at("2026-06-16T02:00:00Z"))).toBe("night");
    expect(periodAt(plan, 99, at("2026-06-16T02:00:00Z"))).toBe("day");
  });

  it("is deterministic: the same state and inputs give the same decisions", () => {
    const a = decide(plan, new Map(), inputs(NOON, 23, 50), settings);
    const b = decide(plan, new Map(), inputs(NOON, 23, 50), settings);
    expect(a).toEqual(b);
  });
});

describe("controller: air VPD", () => {
  const vpdSite = siteSchema.parse({
    ...site,
    actuators: [
      {
        id: "dehum_vpd",
        room_id: 1,
        device_id: 1,
        quantity: "air_vpd",
        direction: "raise",
        command: "Cmd.dehum",
        hysteresis: 0.05,
        min_on_s: 0,
        min_off_s: 0,
      },
    ],
  });
  const p = controlPlan(vpdSite);
  const vpdSp = [{ ...sp("air_vpd", 1.2), tolerance: 0.2 }];
  const at = (kinds: Record<string, Reading[]>): ControlInputs => ({
    nowMs: NOON,
    readings: new Map([[1, new Map(Object.entries(kinds))]]),
    setpoints: vpdSp,
    outage: null,
  });
  const r = (sensor: string, value: number, status: string | null = null): Reading[] => [
    { sensor, value, timeMs: NOON - 1000, status },
  ];

  it("uses the room's air_vpd sensors when it has them", () => {
    const d = decide(p, new Map(), at({ air_vpd: r("vpd_b", 0.9) }), settings).decisions[0]!;
    expect(d).toMatchObject({ value: 0.9, state: true, action: "on" });
  });

  it("without air_vpd sensors, computes it from temperature and humidity with the psychrometrics module", () => {
    const d = decide(p, new Map(), at({ air_temperature: r("t", 25), relative_humidity: r("rh", 70) }), settings)
      .decisions[0]!;
    expect(d.value).toBeCloseTo(airVpd(25, 70), 10);
    // 25 °C at 70 %: about 0.95 kPa, below 1.2 - 0.05
    expect(d).toMatchObject({ state: true, action: "on" });
    const bad = decide(
      p,
      new Map(),
      at({ air_temperature: r("t", 25), relative_humidity: r("rh", 70, "out_of_range") }),
      settings,
    ).decisions[0]!;
    expect(bad).toMatchObject({ action: "safe", failsafe: true, reason: "fail-safe: bad status out_of_range (rh)" });
  });
});
