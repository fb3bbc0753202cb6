import { afterEach, describe, expect, it } from "vitest";
import { expectedCounts, generateLegacy, type LegacyGenOptions } from "../../bench/legacy-gen.js";
import { runMigration } from "../../db/migrate/migrate.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, measuredBySensor, recordingProgress, tableHash } from "./migration-helpers.js";

const GEN: LegacyGenOptions = { frames: 1500, intervalMs: 60_000, seed: 5 };

describe("legacy migration: installations that named things differently", () => {
  const dbs: TestDatabase[] = [];
  afterEach(async () => {
    for (const d of dbs.splice(0)) await d.drop();
  });

  for (const timeColumn of ["created_at", "time"]) {
    it(`detects a time column named ${timeColumn}`, async () => {
      const db = await createTestDatabase();
      dbs.push(db);
      const client = await connect(db.url);
      try {
        const site = await loadTestSite();
        await generateLegacy(client, site, { ...GEN, timeColumn });
        const before = await tableHash(client, "can_messages");
        const r = await runMigration(client, site, { batch: "6h" }, { progress: recordingProgress() });
        expect(r.source.time_column).toBe(timeColumn);
        expect(r.source.time_indexed).toBe(true);
        expect(r.verification?.ok).toBe(true);
        const exp = expectedCounts(site, { ...GEN, timeColumn });
        expect(await measuredBySensor(client)).toEqual(
          Object.fromEntries(Object.entries(exp.sensors).map(([k, v]) => [k, v.numeric])),
        );
        expect(await tableHash(client, "can_messages")).toEqual(before);
      } finally {
        await client.end();
      }
    });
  }

  it("names a missing column and the columns it found; overrides reach any naming", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const client = await connect(db.url);
    try {
      const site = await loadTestSite();
      await client.query(`CREATE SCHEMA old;
        CREATE TABLE old."Frames" (id bigserial PRIMARY KEY, recv_ts timestamptz, node smallint, payload json);
        INSERT INTO old."Frames" (recv_ts, node, payload) VALUES
          ('2024-03-01T10:00:00.123456Z', 1, '{"dry_bulb_b": 21.5, "rh_b": "55.5"}'),
          ('2024-03-01T10:00:01Z', 2, '{"dry_bulb_f": 22, "rh_f": null}'),
          ('2024-03-02T10:00:00Z', 5, '{"pressure_o": 1001.5}'),
          ('2024-03-02T11:00:00Z', 1, '{"co2_b": "1e999", "vpd_b": 1e400, "par_b": " 7 ", "leaf_temp_b": "NaN", "substrate_temp_b": "1,5"}'),
          ('2024-03-02T12:00:00Z', 1, '[1, 2]'),
          ('2024-03-02T13:00:00Z', 1, NULL)`);
      const progress = recordingProgress();
      await expect(runMigration(client, site, { table: "old.Frames" }, { progress })).rejects.toThrow(
        /no time column \(timestamp, created_at or time\); columns found: id \(bigint\), recv_ts \(timestamp with time zone\), node \(smallint\), payload \(json\)\. Name it with --time-column/,
      );
      await expect(
        runMigration(client, site, { table: "old.Frames", timeColumn: "recv_ts" }, { progress }),
      ).rejects.toThrow(/no node column node_id; columns found: .*Name it with --node-column/);
      const r = await runMigration(
        client,
        site,
        { table: "old.Frames", timeColumn: "recv_ts", nodeColumn: "node", dataColumn: "payload" },
        { progress },
      );
      expect(r.source).toMatchObject({ schema: "old", table: "Frames", type_column: null, time_indexed: false });
      expect(progress.lines.join("\n")).toMatch(/no index on Frames\.recv_ts/);
      expect(r.verification?.ok).toBe(true);
      expect(await measuredBySensor(client)).toEqual({
        dry_bulb_b: 1,
        rh_b: 1,
        dry_bulb_f: 1,
        pressure_o: 1,
        par_b: 1,
      });
      // values no double precision holds, NaN and a comma decimal never abort a batch: counted
      const kinds = Object.fromEntries(r.sensors.map((s) => [s.name, s.kinds]));
      expect(kinds).toMatchObject({
        co2_b: { out_of_range: 1 },
        vpd_b: { out_of_range: 1 },
        par_b: { numeric_string: 1 },
        leaf_temp_b: { non_numeric_string: 1 },
        substrate_temp_b: { non_numeric_string: 1 },
      });
      expect(r.rows_not_object).toBe(2);
      const { rows } = await client.query(
        "SELECT m.time = '2024-03-01T10:00:00.123456Z' AS exact FROM measurement m JOIN sensor s USING (sensor_id) WHERE s.name = 'rh_b' AND m.value = 55.5",
      );
      expect(rows).toEqual([{ exact: true }]);
      expect(r.sensors.find((s) => s.name === "rh_f")?.kinds).toEqual({ null: 1 });
    } finally {
      await client.end();
    }
  });
});
