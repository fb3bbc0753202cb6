import type { SetpointRow } from "../../db/queries/automation.js";
import type { ControlledQuantity, Site, SiteActuator } from "../../db/site.js";
import { actuatorConflicts } from "../../db/site.js";
import { airVpd } from "../runtime/psychro.js";

// The climate controller as one pure function: the actuators' state, the live
// readings, the setpoints and the time in, decisions with their reasons and the
// next state out. No I/O and no clock of its own, so every rule is a unit test.
//
// Rules, per actuator (in the site file's order):
//  1. An outage of the service's inputs (Redis, PostgreSQL) or a stop puts every
//     actuator in its safe state ("fail-safe: …").
//  2. The room's period (day / night) comes from its lights-on window in the
//     facility's time zone; the setpoint in force is the latest effective one of
//     that period or of "any" for the room and quantity. No setpoint: safe state.
//  3. Only good readings count (status NULL), and only those younger than the
//     stale age; the value is the mean of the room's sensors of the quantity. No
//     good fresh reading: safe state ("fail-safe: data stale 95 s",
//     "fail-safe: bad status out_of_range (co2_b)").
//  4. Hysteresis: a raising actuator switches on below target - hysteresis and off
//     at or above the target; a lowering one on above target + hysteresis and off
//     at or below the target. In between it keeps its state.
//  5. Minimum on / off times hold a wanted switch ("held by minimum on-time, 40 s
//     left"); a fail-safe is not held (safety before wear).
//  6. Conflicting actuators (opposite directions of one quantity in a room, plus
//     the site file's list) are never on together: offs are applied before ons,
//     and an on that meets a conflicting actuator that is on is held
//     ("conflict with flower_heater").
//  7. At most one actuator per room switches on per decision, so that a recovery
//     (or a start) does not switch everything at once.

export interface Reading {
  sensor: string;
  value: number;
  /** Reading time (its frame's receive time), epoch ms. */
  timeMs: number;
  /** NULL = good; anything else ("out_of_range") does not count. */
  status: string | null;
}

/** A stored setpoint as the controller reads it (tolerance: the band on each side of the target). */
export type Setpoint = Pick<SetpointRow, "setpoint_id" | "room_id" | "quantity" | "period" | "target" | "tolerance"> & {
  effectiveFromMs: number;
};

export interface ActuatorState {
  on: boolean;
  /** When it last switched (epoch ms); -Infinity when never (minimum times are met). */
  sinceMs: number;
  /** The reason of the last recorded event without its numbers: a repeat of a hold or fail-safe is not recorded again. */
  lastReasonKey: string | null;
}

export type ControllerState = ReadonlyMap<string, ActuatorState>;

export interface ControlInputs {
  nowMs: number;
  /** The latest reading of every sensor, by room and kind. */
  readings: ReadonlyMap<number, ReadonlyMap<string, readonly Reading[]>>;
  setpoints: readonly Setpoint[];
  /** An outage or a stop that forces every actuator safe ("PostgreSQL unreachable"), or null. */
  outage: string | null;
}

export interface ControlSettings {
  /** A reading older than this does not count (ms). */
  staleMs: number;
}

export type Action = "on" | "off" | "hold" | "safe" | "keep";

export interface Decision {
  actuator: string;
  room_id: number;
  device_id: number;
  quantity: ControlledQuantity;
  action: Action;
  /** The output after this decision (true = on). */
  state: boolean;
  changed: boolean;
  /** Record it in actuator_events (a change, or a hold / fail-safe whose reason is new). */
  record: boolean;
  /** A fail-safe (stale data, bad status, outage): raises an alert. */
  failsafe: boolean;
  value: number | null;
  setpoint: number | null;
  band: number | null;
  setpoint_id: number | null;
  period: "day" | "night";
  reason: string;
}

export interface ControlResult {
  decisions: Decision[];
  state: Map<string, ActuatorState>;
}

/** The facts of the site file the controller needs, computed once. */
export interface ControlPlan {
  actuators: SiteActuator[];
  conflicts: Map<string, Set<string>>;
  rooms: Map<number, { name: string; schedule: { on: number; off: number } | null }>;
  timezone: string;
  localClock: Intl.DateTimeFormat;
}

const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

export function controlPlan(site: Site): ControlPlan {
  return {
    actuators: site.actuators,
    conflicts: actuatorConflicts(site),
    rooms: new Map(
      site.rooms.map((r) => [
        r.id,
        {
          name: r.name,
          schedule: r.schedule ? { on: minutes(r.schedule.lights_on), off: minutes(r.schedule.lights_off) } : null,
        },
      ]),
    ),
    timezone: site.facility.timezone,
    localClock: new Intl.DateTimeFormat("en-GB", {
      timeZone: site.facility.timezone,
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }),
  };
}

/** Minutes since local midnight in the plan's time zone (wall clock, so DST shifts the window with it). */
export function localMinutes(plan: Pick<ControlPlan, "localClock">, nowMs: number): number {
  let h = 0;
  let m = 0;
  for (const p of plan.localClock.formatToParts(nowMs)) {
    if (p.type === "hour") h = Number(p.value);
    else if (p.type === "minute") m = Number(p.value);
  }
  return h * 60 + m;
}

/** Day while the lights are on (a window may cross midnight); a room without a schedule is always day. */
export function periodAt(plan: ControlPlan, roomId: number, nowMs: number): "day" | "night" {
  const s = plan.rooms.get(roomId)?.schedule;
  if (!s) return "day";
  const t = localMinutes(plan, nowMs);
  const lit = s.on < s.off ? t >= s.on && t < s.off : t >= s.on || t < s.off;
  return lit ? "day" : "night";
}

/** The setpoint in force: the latest effective one of the period or of "any". */
export function setpointInForce(
  setpoints: readonly Setpoint[],
  roomId: number,
  quantity: ControlledQuantity,
  period: "day" | "night",
  nowMs: number,
): Setpoint | null {
  let best: Setpoint | null = null;
  for (const s of setpoints) {
    if (s.room_id !== roomId || s.quantity !== quantity || s.effectiveFromMs > nowMs) continue;
    if (s.period !== period && s.period !== "any") continue;
    // equal times: the period's own row wins over "any", then the newer id
    if (
      !best ||
      s.effectiveFromMs > best.effectiveFromMs ||
      (s.effectiveFromMs === best.effectiveFromMs &&
        (s.period !== "any" && best.period === "any"
          ? true
          : s.period === best.period && s.setpoint_id > best.setpoint_id))
    )
      best = s;
  }
  return best;
}

const reasonKey = (reason: string) => reason.replace(/\d+(\.\d+)?/g, "#");

interface Want {
  a: SiteActuator;
  period: "day" | "night";
  sp: Setpoint | null;
  value: number | null;
  /** The state wanted; null = keep. */
  want: boolean | null;
  failsafe: boolean;
  reason: string;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/0$/, "");
}

/** The mean of the room's good fresh readings of a kind, or why there is none ("fail-safe: …"). */
function meanOf(
  inp: ControlInputs,
  roomId: number,
  kind: string,
  s: ControlSettings,
): { value: number } | { failsafe: string } {
  const all = inp.readings.get(roomId)?.get(kind) ?? [];
  const fresh = all.filter((r) => inp.nowMs - r.timeMs <= s.staleMs);
  const good = fresh.filter((r) => r.status === null && Number.isFinite(r.value));
  if (good.length) return { value: good.reduce((t, r) => t + r.value, 0) / good.length };
  const bad = fresh.filter((r) => r.status !== null);
  if (bad.length)
    return { failsafe: `fail-safe: bad status ${bad.map((r) => `${r.status} (${r.sensor})`).join(", ")}` };
  if (all.length) {
    const newest = Math.max(...all.map((r) => r.timeMs));
    return { failsafe: `fail-safe: data stale ${Math.round((inp.nowMs - newest) / 1000)} s` };
  }
  return { failsafe: `fail-safe: no reading of ${kind}` };
}

/**
 * The room's value of a quantity. Air VPD comes from the room's air_vpd
 * sensors; a room without any gets it from its temperature and humidity
 * (pipeline/runtime/psychro.ts, the formula of the derived sensors).
 */
function roomValue(
  inp: ControlInputs,
  roomId: number,
  quantity: ControlledQuantity,
  s: ControlSettings,
): { value: number } | { failsafe: string } {
  if (quantity !== "air_vpd" || (inp.readings.get(roomId)?.get("air_vpd") ?? []).length)
    return meanOf(inp, roomId, quantity, s);
  const t = meanOf(inp, roomId, "air_temperature", s);
  const rh = meanOf(inp, roomId, "relative_humidity", s);
  if ("failsafe" in t) return t;
  if ("failsafe" in rh) return rh;
  return { value: airVpd(t.value, rh.value) };
}

/** What each actuator wants before minimum times, conflicts and staggering. */
function want(plan: ControlPlan, cur: ActuatorState, a: SiteActuator, inp: ControlInputs, s: ControlSettings): Want {
  const period = periodAt(plan, a.room_id, inp.nowMs);
  const safe = a.safe_state === "on";
  const base = { a, period, sp: null, value: null };
  if (inp.outage) return { ...base, want: safe, failsafe: true, reason: `fail-safe: ${inp.outage}` };
  const sp = setpointInForce(inp.setpoints, a.room_id, a.quantity, period, inp.nowMs);
  if (!sp) return { ...base, want: safe, failsafe: false, reason: `no ${period} setpoint for ${a.quantity}` };
  const got = roomValue(inp, a.room_id, a.quantity, s);
  if ("failsafe" in got) return { ...base, sp, want: safe, failsafe: true, reason: got.failsafe };
  const value = got.value;
  const T = sp.target;
  const h = a.hysteresis;
  const vs = `${fmt(value)} vs target ${fmt(T)}`;
  let w: boolean | null = null;
  let reason: string;
  if (a.direction === "raise") {
    if (value < T - h) [w, reason] = [true, `${vs}: below target - ${fmt(h)}`];
    else if (value >= T) [w, reason] = [false, `${vs}: target reached`];
    else reason = `${vs}: inside hysteresis`;
  } else {
    if (value > T + h) [w, reason] = [true, `${vs}: above target + ${fmt(h)}`];
    else if (value <= T) [w, reason] = [false, `${vs}: target reached`];
    else reason = `${vs}: inside hysteresis`;
  }
  if (w === cur.on) w = null;
  return { ...base, sp, value, want: w, failsafe: false, reason };
}

/** One decision for every actuator of the plan. Deterministic: same inputs, same output. */
export function decide(
  plan: ControlPlan,
  state: ControllerState,
  inputs: ControlInputs,
  settings: ControlSettings,
): ControlResult {
  const now = inputs.nowMs;
  const next = new Map<string, ActuatorState>();
  const cur = (id: string): ActuatorState => state.get(id) ?? { on: false, sinceMs: -Infinity, lastReasonKey: null };
  const wants = plan.actuators.map((a) => want(plan, cur(a.id), a, inputs, settings));
  for (const a of plan.actuators) next.set(a.id, { ...cur(a.id) });
  const out = new Map<string, Decision>();
  const emit = (w: Want, action: Action, reason: string) => {
    const before = cur(w.a.id);
    const after = next.get(w.a.id)!;
    const changed = after.on !== before.on;
    const key = `${action}:${reasonKey(reason)}`;
    const record = changed || ((action === "hold" || action === "safe") && key !== before.lastReasonKey);
    if (record) after.lastReasonKey = key;
    else if (action === "keep" && !w.failsafe) after.lastReasonKey = null;
    out.set(w.a.id, {
      actuator: w.a.id,
      room_id: w.a.room_id,
      device_id: w.a.device_id,
      quantity: w.a.quantity,
      action,
      state: after.on,
      changed,
      record,
      failsafe: w.failsafe,
      value: w.value,
      setpoint: w.sp?.target ?? null,
      band: w.sp?.tolerance ?? null,
      setpoint_id: w.sp?.setpoint_id ?? null,
      period: w.period,
      reason,
    });
  };
  const setOn = (id: string, on: boolean) => {
    const n = next.get(id)!;
    if (n.on !== on) {
      n.on = on;
      n.sinceMs = now;
    }
  };
  const heldByMinimum = (w: Want): string | null => {
    const c = cur(w.a.id);
    const min = (c.on ? w.a.min_on_s : w.a.min_off_s) * 1000;
    const left = c.sinceMs + min - now;
    return left > 0 ? `held by minimum ${c.on ? "on" : "off"}-time (${Math.ceil(left / 1000)} s left)` : null;
  };
  // fail-safes and "no setpoint": straight to the safe state, never held
  for (const w of wants) {
    if (w.failsafe || (w.sp === null && w.want !== null)) {
      setOn(w.a.id, w.want ?? cur(w.a.id).on);
      emit(w, "safe", w.reason);
    }
  }
  // offs before ons, so a conflicting pair can change over only in that order
  for (const w of wants) {
    if (out.has(w.a.id) || w.want !== false) continue;
    const held = heldByMinimum(w);
    if (held) emit(w, "hold", `${w.reason}; ${held}`);
    else {
      setOn(w.a.id, false);
      emit(w, "off", w.reason);
    }
  }
  const switchedOn = new Set<number>();
  for (const w of wants) {
    if (out.has(w.a.id) || w.want !== true) continue;
    const held = heldByMinimum(w);
    const blocker = [...(plan.conflicts.get(w.a.id) ?? [])].find((c) => next.get(c)?.on);
    if (held) emit(w, "hold", `${w.reason}; ${held}`);
    else if (blocker) emit(w, "hold", `${w.reason}; conflict with ${blocker}`);
    else if (switchedOn.has(w.a.room_id)) emit(w, "hold", `${w.reason}; another actuator of the room switched on now`);
    else {
      setOn(w.a.id, true);
      switchedOn.add(w.a.room_id);
      emit(w, "on", w.reason);
    }
  }
  for (const w of wants) if (!out.has(w.a.id)) emit(w, "keep", w.reason);
  return { decisions: plan.actuators.map((a) => out.get(a.id)!), state: next };
}
