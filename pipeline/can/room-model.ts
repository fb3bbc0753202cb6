import type { Site } from "../../db/site.js";

// The closed-loop room: the climate of a room whose actuators the simulated
// nodes drive, integrated one simulated second at a time. Heat is lost to the
// outside through the walls (time constant 1 h), the heater adds 0.012 °C/s,
// the lights 0.002 °C/s while they are on (the room's lights-on schedule), the
// cooling fan removes heat and exchanges air with the outside; humidity relaxes
// towards 45 % (1 h), the plants transpire under the lights, the humidifier and
// dehumidifier move it by 0.03 %/s; CO2 leaks towards the outside's 420 ppm
// (2 h), the plants take it up under the lights, the CO2 valve adds 1.5 ppm/s
// and the fan vents it. Which actuator does what comes from the site file
// (quantity and direction), not from names.

export interface RoomClimate {
  t: number;
  rh: number;
  co2: number;
}

type Role = "heat" | "cool" | "humidify" | "dehumidify" | "co2";

function roleOf(a: Site["actuators"][number]): Role | null {
  if (a.quantity === "air_temperature") return a.direction === "raise" ? "heat" : "cool";
  if (a.quantity === "relative_humidity") return a.direction === "raise" ? "humidify" : "dehumidify";
  // a higher VPD is drier air
  if (a.quantity === "air_vpd") return a.direction === "raise" ? "dehumidify" : "humidify";
  if (a.quantity === "co2" && a.direction === "raise") return "co2";
  return null;
}

/** Minutes after local midnight in the zone of `fmt`. */
function localMinutes(ms: number, fmt: Intl.DateTimeFormat): number {
  const parts = fmt
    .formatToParts(new Date(ms))
    .reduce<Record<string, string>>((o, p) => Object.assign(o, { [p.type]: p.value }), {});
  return Number(parts.hour) * 60 + Number(parts.minute);
}

const hm = (s: string) => Number(s.slice(0, 2)) * 60 + Number(s.slice(3, 5));

export class RoomModel {
  readonly climate: RoomClimate;
  private readonly roles: Map<string, Role>;
  private readonly lightsOn: number | null;
  private readonly lightsOff: number | null;
  /** Built once: a formatter costs far more than a formatting. */
  private readonly local: Intl.DateTimeFormat;

  constructor(
    readonly room: Site["rooms"][number],
    actuators: Site["actuators"],
    zone: string,
    initial: RoomClimate,
  ) {
    this.local = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone,
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
    this.climate = { ...initial };
    this.roles = new Map();
    for (const a of actuators) {
      const r = a.room_id === room.id ? roleOf(a) : null;
      if (r) this.roles.set(a.id, r);
    }
    this.lightsOn = room.schedule ? hm(room.schedule.lights_on) : null;
    this.lightsOff = room.schedule ? hm(room.schedule.lights_off) : null;
  }

  /** Lights on at `ms` (facility-local wall clock; a window may cross midnight; no schedule = always on). */
  lights(ms: number): boolean {
    if (this.lightsOn === null || this.lightsOff === null) return true;
    const m = localMinutes(ms, this.local);
    return this.lightsOn <= this.lightsOff
      ? m >= this.lightsOn && m < this.lightsOff
      : m >= this.lightsOn || m < this.lightsOff;
  }

  /** Advance by `dtS` seconds ending at `ms`, with the outputs as the nodes apply them. */
  step(dtS: number, ms: number, outsideT: number, outputs: ReadonlyMap<string, boolean>): void {
    const on = new Set<Role>();
    for (const [a, r] of this.roles) if (outputs.get(a)) on.add(r);
    const lights = this.lights(ms);
    const c = this.climate;
    const dT =
      -(c.t - outsideT) / 3_600 +
      (on.has("heat") ? 0.012 : 0) +
      (lights ? 0.002 : 0) -
      (on.has("cool") ? 0.006 + (c.t - outsideT) / 3_600 : 0);
    const dRh =
      -(c.rh - 45) / 3_600 + (lights ? 0.008 : 0) + (on.has("humidify") ? 0.03 : 0) - (on.has("dehumidify") ? 0.03 : 0);
    const dCo2 =
      -(c.co2 - 420) / 7_200 -
      (lights ? 0.05 : 0) +
      (on.has("co2") ? 1.5 : 0) -
      (on.has("cool") ? (c.co2 - 420) / 1_800 : 0);
    c.t += dtS * dT;
    c.rh = Math.min(100, Math.max(0, c.rh + dtS * dRh));
    c.co2 = Math.max(0, c.co2 + dtS * dCo2);
  }
}
