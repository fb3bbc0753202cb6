import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SENSOR_KINDS } from "../../db/kinds.js";
import { loadMigrations, migrate } from "../../db/migrations.js";
import { parseSite, sensorsWithoutKind, syncSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { cycleIntervals } from "../../pipeline/can/intervals.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

// Sensor kinds (quantity and unit), expected reporting intervals and room bands:
// the schema's vocabulary equals db/kinds.ts, the site file carries them, the
// sync stores them, and a database from before the sensor_kind migration gets kinds.

const siteText = () => readFileSync(projectPath("ops/site.json"), "utf8");
const siteJson = () => JSON.parse(siteText()) as Record<string, unknown>;

describe("sensor kinds in the schema and the site file", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  it("the schema's sensor_kind rows are db/kinds.ts, row for row", async () => {
    const { rows } = await db.pool.query("SELECT kind, quantity, unit, description FROM sensor_kind ORDER BY kind");
    const expected = Object.entries(SENSOR_KINDS)
      .map(([kind, k]) => ({ kind, ...k }))
      .sort((a, b) => (a.kind < b.kind ? -1 : 1));
    expect(rows).toEqual(expected);
  });

  it("every sensor of the facility's site file has a kind whose unit is its unit, and an interval from the CAN database", async () => {
    const site = parseSite(siteText(), "site.json");
    expect(sensorsWithoutKind(site)).toEqual([]);
    const { rows } = await db.pool.query<{ name: string; kind: string; unit: string; expected_interval_s: number }>(
      "SELECT s.name, s.kind, s.unit, s.expected_interval_s FROM sensor s ORDER BY s.sensor_id",
    );
    expect(rows).toHaveLength(65 + 9); // the nodes' sensors (with the applied outputs) and the rooms' derived ones
    for (const r of rows) {
      expect(SENSOR_KINDS[r.kind as keyof typeof SENSOR_KINDS]?.unit, r.name).toBe(r.unit);
      // every message of ops/cea.kcd has interval="1000"
      expect(r.expected_interval_s, r.name).toBe(1);
    }
    const byKind = await db.pool.query<{ kind: string; n: number }>(
      "SELECT kind, count(*)::int AS n FROM sensor GROUP BY kind ORDER BY kind",
    );
    expect(byKind.rows.find((r) => r.kind === "air_temperature")?.n).toBe(5);
    expect(byKind.rows.find((r) => r.kind === "co2")?.n).toBe(5);
  });

  it("the CAN database's cycle time is the default interval; the site file's interval_s wins", () => {
    const site = parseSite(siteText(), "site.json");
    const kcd = loadCanDb(projectPath("ops/cea.kcd"));
    const intervals = cycleIntervals(kcd, site);
    expect(intervals.size).toBe(65); // the nodes' sensors (derived ones have no CAN message)
    expect(intervals.get(101)).toBe(1);
    const slow = structuredClone(kcd);
    for (const m of slow.messages) if (m.name === "Air_N1") m.cycleTimeMs = 30_000;
    delete slow.messages.find((m) => m.name === "Climate_N1")!.cycleTimeMs;
    const again = cycleIntervals(slow, site);
    expect(again.get(105)).toBe(30); // co2_b on Air_N1
    expect(again.has(101)).toBe(false); // dry_bulb_b: Climate_N1 gives none now
  });

  const refusal = (json: unknown): Error => {
    try {
      parseSite(JSON.stringify(json), "site.json");
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return e as Error;
    }
    throw new Error("the site file was accepted");
  };
  type Json = { devices: { sensors: Record<string, unknown>[] }[]; rooms: Record<string, unknown>[] };

  it("a kind the platform does not know is refused, naming the file and path", () => {
    const bad = siteJson() as Json;
    bad.devices[0]!.sensors[1]!.kind = "temperature";
    expect(refusal(bad).message).toMatch(/site\.json: devices\.0\.sensors\.1\.kind: .*air_temperature/);
  });

  it("a unit that is not its kind's, and two bands of one kind in a room, are refused", () => {
    const bad = siteJson() as Json;
    bad.devices[0]!.sensors[0]!.unit = "°F";
    bad.rooms[0]!.bands = [
      { kind: "air_temperature", min: 10, for_s: 60 },
      { kind: "air_temperature", max: 30, for_s: 60 },
    ];
    const msg = refusal(bad).message;
    expect(msg).toContain('site.json: devices.0.sensors.0.unit: kind air_temperature is measured in "°C", not "°F"');
    expect(msg).toContain("site.json: rooms.0.bands.1.kind: duplicate band kind air_temperature");
  });

  it("a band without limits, or upside down, is refused", () => {
    const bad = siteJson() as Json;
    bad.rooms[0]!.bands = [
      { kind: "co2", for_s: 60 },
      { kind: "air_temperature", min: 30, max: 20, for_s: 60 },
    ];
    const msg = refusal(bad).message;
    expect(msg).toContain("site.json: rooms.0.bands.0.min: a band needs min, max or both");
    expect(msg).toContain("site.json: rooms.0.bands.1.max: must be above min");
  });

  it("bands are synced as the file has them: changed, added and removed", async () => {
    const json = siteJson() as { rooms: { bands?: unknown[] }[] };
    const c = await db.pool.connect();
    const bands = async () =>
      (
        await c.query(
          "SELECT room_id, kind, min_value, max_value, for_s FROM room_band WHERE room_id = 1 ORDER BY kind",
        )
      ).rows;
    try {
      expect((await bands()).map((b) => b.kind)).toEqual(["air_temperature", "co2", "relative_humidity"]);
      json.rooms[0]!.bands = [{ kind: "air_vpd", min: 0.8, max: 1.4, for_s: 1200 }];
      await syncSite(c, parseSite(JSON.stringify(json), "site.json"));
      expect(await bands()).toEqual([{ room_id: 1, kind: "air_vpd", min_value: 0.8, max_value: 1.4, for_s: 1200 }]);
    } finally {
      c.release();
    }
  });

  it("a sensor the site file gives no kind keeps the one the database has; its interval follows the file", async () => {
    const json = siteJson() as { devices: { sensors: Record<string, unknown>[] }[] };
    delete json.devices[0]!.sensors[0]!.kind;
    json.devices[0]!.sensors[0]!.interval_s = 5;
    const site = parseSite(JSON.stringify(json), "site.json");
    expect(sensorsWithoutKind(site)).toEqual(["dry_bulb_b"]);
    const c = await db.pool.connect();
    try {
      await syncSite(c, site);
    } finally {
      c.release();
    }
    const { rows } = await db.pool.query("SELECT kind, expected_interval_s FROM sensor WHERE sensor_id = 101");
    expect(rows).toEqual([{ kind: "air_temperature", expected_interval_s: 5 }]);
  });
});

describe("the sensor_kind migration on a database synced before kinds existed", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
  });
  afterAll(() => db?.drop());

  it("gives the legacy-named sensors their kinds", async () => {
    const all = await loadMigrations();
    const kinds = all.findIndex((m) => m.name === "sensor_kind");
    expect(kinds).toBeGreaterThan(0);
    await migrate(db.pool, all.slice(0, kinds));
    // the site as it was synced then: no kind or interval columns yet
    const site = parseSite(siteText(), "site.json");
    await db.pool.query("INSERT INTO facility (facility_id, name) VALUES (1, 'f')");
    await db.pool.query("INSERT INTO room (room_id, facility_id, name) VALUES (1, 1, 'r')");
    await db.pool.query(
      "INSERT INTO device (device_id, room_id, name, device_type, node_id) VALUES (1, 1, 'd', 'n', 1)",
    );
    // the actuator nodes' applied outputs (kind state) came later, with their kind from the site file
    const sensors = site.devices.flatMap((d) => d.sensors).filter((s) => s.kind !== "state");
    for (const [i, s] of sensors.entries())
      await db.pool.query("INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES ($1, 1, $2, $3, $4)", [
        s.id,
        s.name,
        s.unit,
        i,
      ]);
    await db.pool.query(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES (999, 1, 'mystery', '', 99)",
    );
    await migrate(db.pool, all);
    const { rows } = await db.pool.query<{ sensor_id: number; kind: string | null }>(
      "SELECT sensor_id, kind FROM sensor ORDER BY sensor_id",
    );
    const want = new Map(sensors.map((s) => [s.id, s.kind ?? null]));
    want.set(999, null);
    expect(new Map(rows.map((r) => [r.sensor_id, r.kind]))).toEqual(want);
  });
});
