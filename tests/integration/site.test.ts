import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSite, syncSite } from "../../db/site.js";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

const siteText = () => readFile(projectPath("ops/site.json"), "utf8");

describe("site file", () => {
  it("describes the facility: five nodes, 50 sensors, legacy names", async () => {
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
    expect(names).toHaveLength(50);
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
      expect(first).toHaveLength(50);
      const counts = await c.query(
        "SELECT (SELECT count(*) FROM room)::int AS rooms, (SELECT count(*) FROM device)::int AS devices, (SELECT count(*) FROM facility)::int AS f",
      );
      expect(counts.rows[0]).toEqual({ rooms: 4, devices: 5, f: 1 });
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
