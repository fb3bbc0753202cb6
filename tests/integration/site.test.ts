import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSite, syncSite } from "../../db/site.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

const siteText = () => readFile(projectPath("ops/site.json"), "utf8");

describe("site file", () => {
  it("describes the facility: five nodes, 65 sensors (15 of them the actuator nodes' applied outputs), legacy names", async () => {
    const site = parseSite(await siteText(), "ops/site.json");
    expect(site.facility.name).toBe("CEA Facility");
    const rooms = new Map(site.rooms.map((r) => [r.id, r]));
    const placement = site.devices.map((d) => {
      const room = rooms.get(d.room_id)!;
      return [d.node_id, room.name, room.racks.find((k) => k.id === d.rack_id)?.name];
    });
    expect(placement).toEqual([
      [1, "Flower Room", "back"],
      [2, "Flower Room", "front"],
      [3, "Veg Room", "main"],
      [4, "Lab", "main"],
      [5, "Outside", "main"],
    ]);
    const names = site.devices.flatMap((d) => d.sensors.map((s) => s.name));
    expect(names).toHaveLength(65);
    expect(names).toEqual(expect.arrayContaining(["dry_bulb_b", "co2_f", "rh_v"]));
  });

  it.each([
    ["not JSON", (s: string) => s.slice(0, -3), /ops\/site.json: not valid JSON/],
    [
      "a sensor without a unit",
      (s: string) => {
        const j = JSON.parse(s);
        delete j.devices[2].sensors[4].unit;
        return JSON.stringify(j);
      },
      /ops\/site.json: devices\.2\.sensors\.4\.unit: /,
    ],
    [
      "a duplicate sensor name",
      (s: string) => {
        const j = JSON.parse(s);
        j.devices[1].sensors[0].name = "dry_bulb_b";
        return JSON.stringify(j);
      },
      /ops\/site.json: devices\.1\.sensors\.0\.name: duplicate sensor name dry_bulb_b/,
    ],
    [
      "a device in an unknown room",
      (s: string) => {
        const j = JSON.parse(s);
        j.devices[0].room_id = 77;
        return JSON.stringify(j);
      },
      /devices\.0\.room_id: no room with id 77/,
    ],
    [
      "an unknown field",
      (s: string) => {
        const j = JSON.parse(s);
        j.rooms[0].colour = "red";
        return JSON.stringify(j);
      },
      /rooms\.0: Unrecognized key: "colour"/,
    ],
    [
      "derived sensors of an unknown room",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[0].room_id = 99;
        return JSON.stringify(j);
      },
      /derived\.0\.room_id: no room with id 99/,
    ],
    [
      "a derived input of another kind",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[0].humidity_sensor = 105;
        return JSON.stringify(j);
      },
      /derived\.0\.humidity_sensor: sensor 105 is of kind co2, not relative_humidity/,
    ],
    [
      "a derived input in another room",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[1].temperature_sensor = 101;
        return JSON.stringify(j);
      },
      /derived\.1\.temperature_sensor: sensor 101 is in room 1, not 2/,
    ],
    [
      "a derived input that is no sensor",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[2].temperature_sensor = 4242;
        return JSON.stringify(j);
      },
      /derived\.2\.temperature_sensor: no sensor with id 4242/,
    ],
    [
      "a derived sensor id a node's sensor has",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[0].sensors[0].id = 101;
        return JSON.stringify(j);
      },
      /derived\.0\.sensors\.0\.id: duplicate sensor id 101/,
    ],
    [
      "a derived kind that is not air_vpd, leaf_vpd or dew_point",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[0].sensors[0].kind = "co2";
        return JSON.stringify(j);
      },
      /derived\.0\.sensors\.0\.kind: /,
    ],
    [
      "a leaf VPD without a leaf temperature offset",
      (s: string) => {
        const j = JSON.parse(s);
        delete j.derived[0].leaf_offset_c;
        return JSON.stringify(j);
      },
      /derived\.0\.leaf_offset_c: a leaf_vpd sensor needs leaf_offset_c/,
    ],
    [
      "a virtual device id a node has",
      (s: string) => {
        const j = JSON.parse(s);
        j.derived[0].device.id = 1;
        return JSON.stringify(j);
      },
      /derived\.0\.device\.id: duplicate device id 1/,
    ],
  ])("rejects %s naming the file and the path", async (_what, mutate, message) => {
    const text = mutate(await siteText());
    expect(() => parseSite(text, "ops/site.json")).toThrow(ConfigError);
    expect(() => parseSite(text, "ops/site.json")).toThrow(message);
  });
});

describe("site sync", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ empty: true });
    const { applySchema } = await import("../../db/schema.js");
    await applySchema(db.pool);
  });
  afterAll(() => db?.drop());

  const snapshot = async () =>
    (
      await db.pool.query(
        `SELECT s.sensor_id, s.name, d.device_id, d.node_id, r.room_id, r.name AS room, k.name AS rack
         FROM sensor s JOIN device d USING (device_id) JOIN room r USING (room_id) LEFT JOIN rack k USING (rack_id)
         ORDER BY s.sensor_id`,
      )
    ).rows;

  it("gives the same ids every run and creates nothing the file does not name", async () => {
    const site = parseSite(await siteText(), "site.json");
    const c = await db.pool.connect();
    try {
      await syncSite(c, site);
      const first = await snapshot();
      await syncSite(c, site);
      expect(await snapshot()).toEqual(first);
      expect(first).toHaveLength(65 + 9); // the nodes' sensors (with the applied outputs) and the derived ones
      const counts = await c.query(
        "SELECT (SELECT count(*) FROM room)::int AS rooms, (SELECT count(*) FROM device)::int AS devices, (SELECT count(*) FROM facility)::int AS f",
      );
      // five nodes and the virtual devices of the three rooms with derived sensors
      expect(counts.rows[0]).toEqual({ rooms: 4, devices: 5 + 3, f: 1 });
    } finally {
      c.release();
    }
  });

  it("keeps a renamed sensor's history", async () => {
    const site = parseSite(await siteText(), "site.json");
    await db.pool.query("INSERT INTO measurement (time, sensor_id, value) VALUES ('2026-01-01T00:00:00Z', 101, 20)");
    site.devices[0]!.sensors[0]!.name = "air_temp_b";
    const c = await db.pool.connect();
    try {
      await syncSite(c, site);
    } finally {
      c.release();
    }
    const { rows } = await db.pool.query(
      "SELECT s.name, m.value FROM measurement m JOIN sensor s USING (sensor_id) WHERE m.sensor_id = 101",
    );
    expect(rows).toEqual([{ name: "air_temp_b", value: 20 }]);
  });
});
