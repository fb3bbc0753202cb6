import { readFile } from "node:fs/promises";
import type pg from "pg";
import { z } from "zod";
import { ConfigError } from "../pipeline/runtime/errors.js";
import { SENSOR_KIND_NAMES, SENSOR_KINDS } from "./kinds.js";
import { retryCatalogRace } from "./migrations.js";
import { refreshAggregate } from "./schema.js";

// The site file: the only source of facility metadata. Ids are explicit so that
// every sync gives the same ids and a renamed sensor keeps its history.
const id = z.number().int().positive();
const name = z.string().trim().min(1);

/** An IANA time zone name this runtime knows ("Europe/Amsterdam", "UTC"). */
function knownZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const sensorSchema = z.strictObject({
  id,
  name: z.string().regex(/^[a-z][a-z0-9_]*$/, "lower-case letters, digits and _ only"),
  unit: z.string(),
  data_type: z.enum(["float", "integer", "boolean"]).default("float"),
  channel: z.number().int().min(0),
  /** Added to the decoded value before it is stored (stored = decoded + offset). */
  calibration_offset: z.number().finite().default(0),
  /** The CAN database signal that carries it, "Message.Signal" (names as the CAN database spells them). */
  signal: z
    .string()
    .refine((v) => v.indexOf(".") > 0 && v.lastIndexOf(".") < v.length - 1, 'expected "Message.Signal"'),
  /** What it measures (db/kinds.ts); its unit must be the kind's. Dashboards and the API select by it. */
  kind: z.enum(SENSOR_KIND_NAMES).optional(),
  /** Expected seconds between readings; default: its CAN message's cycle time, else CEA_SENSOR_INTERVAL_S. */
  interval_s: z.number().positive().max(86_400).optional(),
  /** Its key in the legacy can_messages data when that is not its name (a name another sensor has, or not a valid name). */
  legacy_key: z.string().min(1).optional(),
});

/** The band a room's readings of one kind should stay in; all of them outside it for `for_s` seconds is an alert. */
export const bandSchema = z
  .strictObject({
    kind: z.enum(SENSOR_KIND_NAMES),
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    for_s: z
      .number()
      .int()
      .positive()
      .max(7 * 86_400),
  })
  .superRefine((b, ctx) => {
    if (b.min === undefined && b.max === undefined)
      ctx.addIssue({ code: "custom", path: ["min"], message: "a band needs min, max or both" });
    if (b.min !== undefined && b.max !== undefined && !(b.min < b.max))
      ctx.addIssue({ code: "custom", path: ["max"], message: "must be above min" });
  });

/** The quantities the automation service controls: named like the sensor kinds it reads (setpoints.quantity). */
export const CONTROLLED_QUANTITIES = ["air_temperature", "relative_humidity", "air_vpd", "co2"] as const;
export const controlledQuantitySchema = z.enum(CONTROLLED_QUANTITIES);
export type ControlledQuantity = z.infer<typeof controlledQuantitySchema>;

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected "HH:MM" (24-hour clock)');
const signalName = z
  .string()
  .refine((v) => v.indexOf(".") > 0 && v.lastIndexOf(".") < v.length - 1, 'expected "Message.Signal"');

/**
 * A room's lights-on window in the facility's local time; it selects the day or
 * night setpoints. lights_off before lights_on is a window across midnight. A
 * room without a schedule is always "day".
 */
export const scheduleSchema = z
  .strictObject({ lights_on: hhmm, lights_off: hhmm })
  .refine((s) => s.lights_on !== s.lights_off, { path: ["lights_off"], message: "must differ from lights_on" });

/**
 * An on/off output that serves one quantity of one room in one direction. Its
 * command is one signal of the node's command message in the CAN database (the
 * message also carries seq and watchdog_s). It switches on below target -
 * hysteresis (raise) or above target + hysteresis (lower) and off again past
 * the other side of the target; min_on_s / min_off_s hold it in a state.
 */
export const actuatorSchema = z
  .strictObject({
    id: z.string().regex(/^[a-z][a-z0-9_]*$/, "lower-case letters, digits and _ only"),
    room_id: id,
    device_id: id,
    quantity: controlledQuantitySchema,
    direction: z.enum(["raise", "lower"]),
    command: signalName,
    /** The output's state when the service cannot decide (stale data, outage, shutdown) and the node's watchdog state. */
    safe_state: z.enum(["off", "on"]).default("off"),
    min_on_s: z.number().int().min(0).max(86_400).default(60),
    min_off_s: z.number().int().min(0).max(86_400).default(60),
    /** In the quantity's unit, on each side of the target; a setpoint band must be wider. */
    hysteresis: z.number().positive().finite(),
    /** Actuators that must never run together with this one (besides the opposite direction of its quantity). */
    conflicts: z.array(z.string()).default([]),
    /** The targets this actuator can hold (e.g. CO2 enrichment up to 1500 ppm); setpoints outside are refused. */
    target_min: z.number().finite().optional(),
    target_max: z.number().finite().optional(),
  })
  .refine((a) => a.target_min === undefined || a.target_max === undefined || a.target_min < a.target_max, {
    path: ["target_max"],
    message: "must be above target_min",
  });
export type SiteActuator = z.infer<typeof actuatorSchema>;

export const deviceSchema = z.strictObject({
  id,
  name,
  type: name,
  node_id: z.number().int().min(0),
  room_id: id,
  rack_id: id.optional(),
  ip_address: z.union([z.ipv4(), z.ipv6()]).optional(),
  serial_number: name.optional(),
  sensors: z.array(sensorSchema).min(1),
});

// ---------------------------------------------------------------- derived sensors
// Grower metrics computed from a room's air temperature and relative humidity
// by stages/derived.ts (pipeline/runtime/psychro.ts): per room, the two input
// sensors, the derived sensors (kind air_vpd, leaf_vpd, dew_point) and the leaf
// temperature offset. They belong to a virtual device of the room (no CAN node,
// device_type "derived"), which `cea site sync` creates with them.

export const DERIVED_KINDS = ["air_vpd", "leaf_vpd", "dew_point"] as const;
export type DerivedKind = (typeof DERIVED_KINDS)[number];

export const derivedRoomSchema = z.strictObject({
  room_id: id,
  /** The virtual device of the room that holds the derived sensors (not a CAN node). */
  device: z.strictObject({ id, name }),
  /** Sensor id of the room's dry-bulb air temperature (kind air_temperature). */
  temperature_sensor: id,
  /** Sensor id of the room's relative humidity (kind relative_humidity). */
  humidity_sensor: id,
  /** Leaf minus air temperature, °C (usually −1…−3); required for a leaf_vpd sensor. */
  leaf_offset_c: z.number().finite().min(-20).max(20).optional(),
  sensors: z
    .array(
      z.strictObject({
        id,
        name: z.string().regex(/^[a-z][a-z0-9_]*$/, "lower-case letters, digits and _ only"),
        kind: z.enum(DERIVED_KINDS),
      }),
    )
    .min(1),
});
export type DerivedRoom = z.infer<typeof derivedRoomSchema>;

type Issue = { code: "custom"; path: (string | number)[]; message: string };

/** The references of the derived section: rooms, input sensors and their kinds, ids and names unique site-wide. */
function checkDerived(
  site: { rooms: { id: number }[]; devices: SiteDevice[]; derived: DerivedRoom[] },
  addIssue: (i: Issue) => void,
): void {
  const issue = (path: (string | number)[], message: string) => addIssue({ code: "custom", path, message });
  const rooms = new Set(site.rooms.map((r) => r.id));
  const sensorIds = new Map<number, { kind?: string | undefined; room: number }>();
  const sensorNames = new Set<string>();
  for (const d of site.devices)
    for (const s of d.sensors) {
      sensorIds.set(s.id, { kind: s.kind, room: d.room_id });
      sensorNames.add(s.name);
    }
  const deviceIds = new Set(site.devices.map((d) => d.id));
  const deviceNames = new Set(site.devices.map((d) => d.name));
  const seenRooms = new Set<number>();
  site.derived.forEach((g, i) => {
    const at = (...p: (string | number)[]) => ["derived", i, ...p];
    if (!rooms.has(g.room_id)) issue(at("room_id"), `no room with id ${g.room_id}`);
    if (seenRooms.has(g.room_id)) issue(at("room_id"), `room ${g.room_id} already has derived sensors`);
    seenRooms.add(g.room_id);
    if (deviceIds.has(g.device.id)) issue(at("device", "id"), `duplicate device id ${g.device.id}`);
    if (deviceNames.has(g.device.name)) issue(at("device", "name"), `duplicate device name ${g.device.name}`);
    deviceIds.add(g.device.id);
    deviceNames.add(g.device.name);
    const input = (field: "temperature_sensor" | "humidity_sensor", kind: string) => {
      const s = sensorIds.get(g[field]);
      if (!s) issue(at(field), `no sensor with id ${g[field]} on a device of the site file`);
      // a sensor the file gives no kind keeps the database's: only another kind is refused
      else if (s.kind !== undefined && s.kind !== kind)
        issue(at(field), `sensor ${g[field]} is of kind ${s.kind}, not ${kind}`);
      else if (s.room !== g.room_id) issue(at(field), `sensor ${g[field]} is in room ${s.room}, not ${g.room_id}`);
    };
    input("temperature_sensor", "air_temperature");
    input("humidity_sensor", "relative_humidity");
    const kinds = new Set<string>();
    g.sensors.forEach((s, j) => {
      if (sensorIds.has(s.id)) issue(at("sensors", j, "id"), `duplicate sensor id ${s.id}`);
      if (sensorNames.has(s.name)) issue(at("sensors", j, "name"), `duplicate sensor name ${s.name}`);
      if (kinds.has(s.kind)) issue(at("sensors", j, "kind"), `duplicate derived kind ${s.kind} in room ${g.room_id}`);
      sensorIds.set(s.id, { kind: s.kind, room: g.room_id });
      sensorNames.add(s.name);
      kinds.add(s.kind);
      if (s.kind === "leaf_vpd" && g.leaf_offset_c === undefined)
        issue(at("leaf_offset_c"), "a leaf_vpd sensor needs leaf_offset_c (leaf minus air temperature, °C)");
    });
  });
}

export const siteSchema = z
  .strictObject({
    facility: z.strictObject({
      id,
      name,
      /** The facility's IANA time zone: the days of measurement_daily are its local days. */
      timezone: z
        .string()
        .default("UTC")
        .refine(knownZone, { message: 'not a known IANA time zone (e.g. "Europe/Amsterdam")' }),
    }),
    zones: z.array(z.strictObject({ id, name })).default([]),
    rooms: z
      .array(
        z.strictObject({
          id,
          name,
          zone_id: id.optional(),
          target_vpd: z.number().positive().optional(),
          target_temp: z.number().finite().optional(),
          racks: z.array(z.strictObject({ id, name })).default([]),
          bands: z.array(bandSchema).default([]),
          schedule: scheduleSchema.optional(),
        }),
      )
      .min(1),
    devices: z.array(deviceSchema).min(1),
    actuators: z.array(actuatorSchema).default([]),
    /** Derived sensors per room (block above). */
    derived: z.array(derivedRoomSchema).default([]),
  })
  .superRefine((site, ctx) => {
    checkDerived(site, (i) => ctx.addIssue(i));
    const unique = <T>(items: T[], key: (t: T) => unknown, path: (i: number) => (string | number)[], what: string) => {
      const seen = new Map<unknown, number>();
      items.forEach((item, i) => {
        const k = key(item);
        const first = seen.get(k);
        if (first !== undefined)
          ctx.addIssue({ code: "custom", path: path(i), message: `duplicate ${what} ${String(k)}` });
        else seen.set(k, i);
      });
    };
    const zoneIds = new Set(site.zones.map((z) => z.id));
    unique(
      site.zones,
      (z) => z.id,
      (i) => ["zones", i, "id"],
      "zone id",
    );
    unique(
      site.rooms,
      (r) => r.id,
      (i) => ["rooms", i, "id"],
      "room id",
    );
    unique(
      site.rooms,
      (r) => r.name,
      (i) => ["rooms", i, "name"],
      "room name",
    );
    const racks = site.rooms.flatMap((r, ri) => r.racks.map((k, ki) => ({ ...k, room: r.id, ri, ki })));
    unique(
      racks,
      (k) => k.id,
      (i) => ["rooms", racks[i]!.ri, "racks", racks[i]!.ki, "id"],
      "rack id",
    );
    site.rooms.forEach((r, i) => {
      unique(
        r.bands,
        (b) => b.kind,
        (j) => ["rooms", i, "bands", j, "kind"],
        "band kind",
      );
      if (r.zone_id !== undefined && !zoneIds.has(r.zone_id))
        ctx.addIssue({ code: "custom", path: ["rooms", i, "zone_id"], message: `no zone with id ${r.zone_id}` });
    });
    const roomIds = new Set(site.rooms.map((r) => r.id));
    unique(
      site.devices,
      (d) => d.id,
      (i) => ["devices", i, "id"],
      "device id",
    );
    unique(
      site.devices,
      (d) => d.name,
      (i) => ["devices", i, "name"],
      "device name",
    );
    unique(
      site.devices,
      (d) => d.node_id,
      (i) => ["devices", i, "node_id"],
      "node_id",
    );
    site.devices.forEach((d, i) => {
      if (!roomIds.has(d.room_id))
        ctx.addIssue({ code: "custom", path: ["devices", i, "room_id"], message: `no room with id ${d.room_id}` });
      if (d.rack_id !== undefined && !racks.some((k) => k.id === d.rack_id && k.room === d.room_id))
        ctx.addIssue({
          code: "custom",
          path: ["devices", i, "rack_id"],
          message: `no rack with id ${d.rack_id} in room ${d.room_id}`,
        });
      unique(
        d.sensors,
        (s) => s.channel,
        (j) => ["devices", i, "sensors", j, "channel"],
        "channel",
      );
    });
    const sensors = site.devices.flatMap((d, di) => d.sensors.map((s, si) => ({ ...s, di, si })));
    const at = (i: number) => ["devices", sensors[i]!.di, "sensors", sensors[i]!.si];
    sensors.forEach((s, i) => {
      if (s.kind !== undefined && SENSOR_KINDS[s.kind].unit !== s.unit)
        ctx.addIssue({
          code: "custom",
          path: [...at(i), "unit"],
          message: `kind ${s.kind} is measured in "${SENSOR_KINDS[s.kind].unit}", not "${s.unit}"`,
        });
    });
    unique(
      sensors,
      (s) => s.id,
      (i) => [...at(i), "id"],
      "sensor id",
    );
    unique(
      sensors,
      (s) => s.name,
      (i) => [...at(i), "name"],
      "sensor name",
    );
    unique(
      sensors,
      (s) => s.signal,
      (i) => [...at(i), "signal"],
      "signal",
    );
    unique(
      site.actuators,
      (a) => a.id,
      (i) => ["actuators", i, "id"],
      "actuator id",
    );
    unique(
      site.actuators,
      (a) => a.command,
      (i) => ["actuators", i, "command"],
      "command signal",
    );
    const actuatorIds = new Set(site.actuators.map((a) => a.id));
    const sensorSignals = new Set(sensors.map((s) => s.signal));
    site.actuators.forEach((a, i) => {
      const device = site.devices.find((d) => d.id === a.device_id);
      if (!roomIds.has(a.room_id))
        ctx.addIssue({ code: "custom", path: ["actuators", i, "room_id"], message: `no room with id ${a.room_id}` });
      if (!device)
        ctx.addIssue({
          code: "custom",
          path: ["actuators", i, "device_id"],
          message: `no device with id ${a.device_id}`,
        });
      else if (device.room_id !== a.room_id)
        ctx.addIssue({
          code: "custom",
          path: ["actuators", i, "device_id"],
          message: `device ${a.device_id} is in room ${device.room_id}, not ${a.room_id}`,
        });
      if (sensorSignals.has(a.command))
        ctx.addIssue({
          code: "custom",
          path: ["actuators", i, "command"],
          message: `${a.command} is a sensor's signal`,
        });
      for (const c of actuatorConflicts(site).get(a.id) ?? [])
        if (a.safe_state === "on" && site.actuators.find((b) => b.id === c)?.safe_state === "on")
          ctx.addIssue({
            code: "custom",
            path: ["actuators", i, "safe_state"],
            message: `conflicts with ${c}, whose safe state is also on`,
          });
      a.conflicts.forEach((c, j) => {
        if (c === a.id)
          ctx.addIssue({
            code: "custom",
            path: ["actuators", i, "conflicts", j],
            message: "an actuator cannot conflict with itself",
          });
        else if (!actuatorIds.has(c))
          ctx.addIssue({ code: "custom", path: ["actuators", i, "conflicts", j], message: `no actuator with id ${c}` });
      });
    });
  });

export type Site = z.infer<typeof siteSchema>;
export type SiteSensor = z.infer<typeof sensorSchema>;
export type SiteDevice = z.infer<typeof deviceSchema>;
export type SiteRoom = Site["rooms"][number];

/**
 * The actuators that must never be on together with each actuator: the
 * opposite direction of the same quantity in the same room, and the explicit
 * conflicts of either side.
 */
export function actuatorConflicts(site: Pick<Site, "actuators">): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>(site.actuators.map((a) => [a.id, new Set<string>()]));
  const link = (a: string, b: string) => {
    out.get(a)?.add(b);
    out.get(b)?.add(a);
  };
  for (const a of site.actuators) {
    for (const c of a.conflicts) link(a.id, c);
    for (const b of site.actuators)
      if (b.id !== a.id && b.room_id === a.room_id && b.quantity === a.quantity && b.direction !== a.direction)
        link(a.id, b.id);
  }
  return out;
}

/** Format zod issues as "file: path.to.field: message" lines. */
export function describeIssues(file: string, issues: readonly z.core.$ZodIssue[]): string {
  return issues.map((i) => `${file}: ${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`).join("\n");
}

export function parseSite(text: string, file: string): Site {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON: ${(err as Error).message}`);
  }
  const parsed = siteSchema.safeParse(json);
  if (!parsed.success) throw new ConfigError(`invalid site file\n${describeIssues(file, parsed.error.issues)}`);
  return parsed.data;
}

export async function loadSite(file: string): Promise<Site> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError(`${file}: cannot read site file: ${(err as Error).message}`);
  }
  return parseSite(text, file);
}

export interface SyncReport {
  facility: number;
  /** The zone of the daily aggregate's days, and whether this sync changed it (the aggregate was rebuilt). */
  daily_timezone: { zone: string; changed: boolean };
  zones: number;
  rooms: number;
  racks: number;
  devices: number;
  sensors: number;
  /** Derived sensors (on the rooms' virtual devices), not counted in `sensors`. */
  derived_sensors: number;
  /** Sensors in the database that the site file no longer names (kept: they have history). */
  unlisted_sensors: string[];
}

/** Sensors without a kind: they appear in no panel, API selection or alert that goes by kind. */
export function sensorsWithoutKind(site: Site): string[] {
  return site.devices.flatMap((d) => d.sensors.filter((s) => s.kind === undefined).map((s) => s.name));
}

export interface SyncOptions {
  /**
   * Expected reporting interval in seconds by sensor id when the site file
   * gives none: its CAN message's cycle time (pipeline/can/intervals.ts).
   */
  defaultIntervalS?: ReadonlyMap<number, number>;
}

/**
 * Upsert the site into the metadata tables by id, in one transaction. Never
 * creates anything the file does not name and never deletes (history stays).
 * The daily aggregate follows the facility's time zone: a new zone rebuilds it
 * in the same transaction (cea_set_daily_timezone); on the Community edition
 * its continuous aggregate is then refreshed, after the commit.
 */
export async function syncSite(db: pg.ClientBase, site: Site, opts: SyncOptions = {}): Promise<SyncReport> {
  // a zone change re-creates a continuous aggregate, which can meet the job scheduler (isCatalogRace)
  return retryCatalogRace(() => syncOnce(db, site, opts));
}

async function syncOnce(db: pg.ClientBase, site: Site, opts: SyncOptions): Promise<SyncReport> {
  const f = site.facility;
  await db.query("BEGIN");
  try {
    await db.query(
      `INSERT INTO facility (facility_id, name, timezone) VALUES ($1, $2, $3)
       ON CONFLICT (facility_id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone`,
      [f.id, f.name, f.timezone],
    );
    const { rows: zone } = await db.query<{ changed: boolean }>("SELECT cea_set_daily_timezone($1) AS changed", [
      f.timezone,
    ]);
    const changed = zone[0]?.changed === true;
    for (const z of site.zones) {
      await db.query(
        `INSERT INTO zone (zone_id, facility_id, name) VALUES ($1, $2, $3)
         ON CONFLICT (zone_id) DO UPDATE SET facility_id = EXCLUDED.facility_id, name = EXCLUDED.name`,
        [z.id, f.id, z.name],
      );
    }
    let racks = 0;
    for (const r of site.rooms) {
      await db.query(
        `INSERT INTO room (room_id, facility_id, zone_id, name, target_vpd, target_temp) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (room_id) DO UPDATE SET facility_id = EXCLUDED.facility_id, zone_id = EXCLUDED.zone_id,
           name = EXCLUDED.name, target_vpd = EXCLUDED.target_vpd, target_temp = EXCLUDED.target_temp`,
        [r.id, f.id, r.zone_id ?? null, r.name, r.target_vpd ?? null, r.target_temp ?? null],
      );
      for (const k of r.racks) {
        racks++;
        await db.query(
          `INSERT INTO rack (rack_id, room_id, name) VALUES ($1, $2, $3)
           ON CONFLICT (rack_id) DO UPDATE SET room_id = EXCLUDED.room_id, name = EXCLUDED.name`,
          [k.id, r.id, k.name],
        );
      }
    }
    let sensors = 0;
    for (const d of site.devices) {
      await db.query(
        `INSERT INTO device (device_id, room_id, rack_id, name, device_type, node_id, ip_address, serial_number)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (device_id) DO UPDATE SET room_id = EXCLUDED.room_id, rack_id = EXCLUDED.rack_id,
           name = EXCLUDED.name, device_type = EXCLUDED.device_type, node_id = EXCLUDED.node_id,
           ip_address = EXCLUDED.ip_address, serial_number = EXCLUDED.serial_number`,
        [d.id, d.room_id, d.rack_id ?? null, d.name, d.type, d.node_id, d.ip_address ?? null, d.serial_number ?? null],
      );
      for (const s of d.sensors) {
        sensors++;
        await db.query(
          `INSERT INTO sensor (sensor_id, device_id, name, unit, data_type, channel, calibration_offset, kind,
             expected_interval_s)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (sensor_id) DO UPDATE SET device_id = EXCLUDED.device_id, name = EXCLUDED.name,
             unit = EXCLUDED.unit, data_type = EXCLUDED.data_type, channel = EXCLUDED.channel,
             calibration_offset = EXCLUDED.calibration_offset,
             kind = coalesce(EXCLUDED.kind, sensor.kind), expected_interval_s = EXCLUDED.expected_interval_s`,
          [
            s.id,
            d.id,
            s.name,
            s.unit,
            s.data_type,
            s.channel,
            s.calibration_offset,
            s.kind ?? null,
            s.interval_s ?? opts.defaultIntervalS?.get(s.id) ?? null,
          ],
        );
      }
    }
    const derivedSensors = await syncDerived(db, site, opts);
    // a room's bands are exactly the file's (they have no history to keep)
    for (const r of site.rooms) {
      await db.query("DELETE FROM room_band WHERE room_id = $1 AND NOT (kind = ANY($2::text[]))", [
        r.id,
        r.bands.map((b) => b.kind),
      ]);
      for (const b of r.bands)
        await db.query(
          `INSERT INTO room_band (room_id, kind, min_value, max_value, for_s) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (room_id, kind) DO UPDATE SET min_value = EXCLUDED.min_value,
             max_value = EXCLUDED.max_value, for_s = EXCLUDED.for_s`,
          [r.id, b.kind, b.min ?? null, b.max ?? null, b.for_s],
        );
    }
    const listed = [
      ...site.devices.flatMap((d) => d.sensors.map((s) => s.id)),
      ...site.derived.flatMap((g) => g.sensors.map((s) => s.id)),
    ];
    const { rows } = await db.query<{ name: string }>(
      "SELECT name FROM sensor WHERE NOT (sensor_id = ANY($1::int[])) ORDER BY sensor_id",
      [listed],
    );
    await db.query("COMMIT");
    // outside the transaction (refresh_continuous_aggregate refuses one); the
    // Apache edition recomputed its table inside it, and this is a no-op there
    if (changed) await refreshAggregate(db, "measurement_daily");
    return {
      facility: 1,
      daily_timezone: { zone: f.timezone, changed },
      zones: site.zones.length,
      rooms: site.rooms.length,
      racks,
      devices: site.devices.length,
      sensors,
      derived_sensors: derivedSensors,
      unlisted_sensors: rows.map((r) => r.name),
    };
  } catch (err) {
    await db.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

/**
 * The derived section: each room's virtual device (no node, type "derived")
 * and its derived sensors, channel = position in the list, unit from the kind,
 * expected interval that of the slower input (a derived value is written per
 * temperature reading that has a partner). Inside syncSite's transaction.
 */
async function syncDerived(db: pg.ClientBase, site: Site, opts: SyncOptions): Promise<number> {
  const interval = new Map<number, number | undefined>();
  for (const d of site.devices)
    for (const s of d.sensors) interval.set(s.id, s.interval_s ?? opts.defaultIntervalS?.get(s.id));
  let n = 0;
  for (const g of site.derived) {
    await db.query(
      `INSERT INTO device (device_id, room_id, rack_id, name, device_type, node_id, ip_address, serial_number)
       VALUES ($1, $2, NULL, $3, 'derived', NULL, NULL, NULL)
       ON CONFLICT (device_id) DO UPDATE SET room_id = EXCLUDED.room_id, rack_id = NULL, name = EXCLUDED.name,
         device_type = EXCLUDED.device_type, node_id = NULL, ip_address = NULL, serial_number = NULL`,
      [g.device.id, g.room_id, g.device.name],
    );
    const inputs = [interval.get(g.temperature_sensor), interval.get(g.humidity_sensor)];
    const expected = inputs.every((v) => v !== undefined) ? Math.max(...(inputs as number[])) : null;
    for (const [channel, s] of g.sensors.entries()) {
      n++;
      await db.query(
        `INSERT INTO sensor (sensor_id, device_id, name, unit, data_type, channel, calibration_offset, kind,
           expected_interval_s)
         VALUES ($1, $2, $3, $4, 'float', $5, 0, $6, $7)
         ON CONFLICT (sensor_id) DO UPDATE SET device_id = EXCLUDED.device_id, name = EXCLUDED.name,
           unit = EXCLUDED.unit, data_type = EXCLUDED.data_type, channel = EXCLUDED.channel,
           calibration_offset = 0, kind = EXCLUDED.kind, expected_interval_s = EXCLUDED.expected_interval_s`,
        [s.id, g.device.id, s.name, SENSOR_KINDS[s.kind].unit, channel, s.kind, expected],
      );
    }
  }
  return n;
}
