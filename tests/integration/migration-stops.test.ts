import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectedCounts, generateLegacy, type LegacyGenOptions, UNKNOWN_KEY } from "../../bench/legacy-gen.js";
import { runMigration } from "../../db/migrate/migrate.js";
import { type Site, siteSchema } from "../../db/site.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, measuredBySensor, recordingProgress } from "./migration-helpers.js";

// Node 9 is not in the site file; node 1 carries a key the site file does not name.
const GEN: LegacyGenOptions = { frames: 3000, intervalMs: 60_000, seed: 3, extraNodes: [9], unknownKey: true };

describe("legacy migration: metadata only from the site file", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let site: Site;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await connect(db.url);
    site = await loadTestSite();
    await generateLegacy(client, site, GEN);
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it("stops on an unmapped node and on an unknown key, listing them, writing nothing", async () => {
    const exp = expectedCounts(site, GEN);
    expect(exp.unmappedRows[9]).toBeGreaterThan(0);
    let message = "";
    await runMigration(client, site, { batch: "6h" }, { progress: recordingProgress() }).catch((e: Error) => {
      message = e.message;
      expect(e.name).toBe("ConfigError");
    });
    expect(message).toContain(`node_id 9: ${exp.unmappedRows[9]} rows`);
    expect(message).toContain("--skip-unmapped");
    expect(message).toContain(`node_id 1: "${UNKNOWN_KEY}" in ${exp.unknownKeys[UNKNOWN_KEY]} rows`);
    expect(message).toContain("--skip-unknown-keys");
    // the proposed sensor pastes into the site file and validates
    const line = message.split("\n").find((l) => l.includes(`"name":"${UNKNOWN_KEY}"`));
    expect(line).toBeDefined();
    const proposed = JSON.parse(line!.trim().replace(/,$/, ""));
    const edited = structuredClone(site);
    edited.devices[0]!.sensors.push(proposed);
    expect(siteSchema.safeParse(edited).success).toBe(true);

    const { rows } = await client.query(
      "SELECT (SELECT count(*)::int FROM measurement) AS m, (SELECT count(*)::int FROM migration_checkpoint) AS cp, (SELECT count(*)::int FROM room) AS rooms",
    );
    expect(rows[0]).toEqual({ m: 0, cp: 0, rooms: site.rooms.length });
  });

  it("with --skip-unmapped and --skip-unknown-keys, moves the rest and reports what it left out", async () => {
    const exp = expectedCounts(site, GEN);
    const r = await runMigration(
      client,
      site,
      { batch: "6h", skipUnmapped: true, skipUnknownKeys: true },
      { progress: recordingProgress() },
    );
    expect(r.unmapped_nodes).toEqual([{ node_id: 9, rows: exp.unmappedRows[9] }]);
    expect(r.unknown_keys).toEqual([
      { node_id: 1, key: UNKNOWN_KEY, n: exp.unknownKeys[UNKNOWN_KEY], sensor_of_node: null },
    ]);
    expect(r.nodes.find((n) => n.node_id === 9)).toMatchObject({ mapped: false, device: null });
    expect(r.nodes.find((n) => n.node_id === 1)?.message_types).toHaveProperty("climate");
    expect(r.verification?.ok).toBe(true);
    expect(await measuredBySensor(client)).toEqual(
      Object.fromEntries(Object.entries(exp.sensors).map(([k, v]) => [k, v.numeric])),
    );
    // no room, device or sensor came from the data
    const { rows } = await client.query(
      "SELECT (SELECT count(*)::int FROM room) AS rooms, (SELECT count(*)::int FROM device) AS devices, (SELECT count(*)::int FROM sensor) AS sensors",
    );
    // the site file's: five nodes with 65 sensors, three rooms' virtual devices with 9 derived sensors
    expect(rows[0]).toEqual({ rooms: 4, devices: 5 + 3, sensors: 65 + 9 });
  });
});

describe("legacy migration: proposals for unknown keys that the site file accepts", () => {
  it("proposes own names (legacy_key) for a key another node's sensor has and for a key that is no valid name; pasted, they map", async () => {
    const db = await createTestDatabase();
    const client = await connect(db.url);
    try {
      const site = await loadTestSite();
      await client.query(`CREATE TABLE can_messages (id bigserial PRIMARY KEY, "timestamp" timestamptz, node_id integer, decoded_data jsonb);
        INSERT INTO can_messages ("timestamp", node_id, decoded_data) VALUES
          ('2024-05-01T00:00:00Z', 1, '{"dry_bulb_b": 21, "dry_bulb_f": 22.5, "Leaf Wetness": 3}'),
          ('2024-05-01T00:01:00Z', 2, '{"dry_bulb_f": 23}')`);
      let message = "";
      await runMigration(client, site, {}, { progress: recordingProgress() }).catch((e: Error) => {
        message = e.message;
      });
      expect(message).toContain('node_id 1: "dry_bulb_f" in 1 rows (a sensor of node_id 2, not of this node)');
      const proposed = message
        .split("\n")
        .filter((l) => l.trim().startsWith('{"id"'))
        .map((l) => JSON.parse(l.trim().replace(/,$/, "")));
      expect(proposed.map((p) => [p.name, p.legacy_key]).sort()).toEqual([
        ["dry_bulb_f_n1", "dry_bulb_f"],
        ["leaf_wetness_n1", "Leaf Wetness"],
      ]);
      // what `cea site check` runs: the edited site file validates
      const edited = structuredClone(site);
      edited.devices.find((d) => d.node_id === 1)!.sensors.push(...proposed);
      const checked = siteSchema.safeParse(edited);
      expect(checked.success, JSON.stringify(checked.error?.issues)).toBe(true);
      const r = await runMigration(client, checked.data!, {}, { progress: recordingProgress() });
      expect(r.verification?.ok).toBe(true);
      expect(await measuredBySensor(client)).toEqual({
        dry_bulb_b: 1,
        dry_bulb_f: 1,
        dry_bulb_f_n1: 1,
        leaf_wetness_n1: 1,
      });
    } finally {
      await client.end();
      await db.drop();
    }
  });
});
