import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectedCounts, generateLegacy, type LegacyGenOptions } from "../../bench/legacy-gen.js";
import { runMigration } from "../../db/migrate/migrate.js";
import type { Site } from "../../db/site.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, recordingProgress } from "./migration-helpers.js";

// Dense data (5 hours) plus one row in 1999 and one in 2100: the plan follows
// the windows that hold rows, the outliers are reported per node before
// anything is written, and the verification sees any change of content.
const GEN: LegacyGenOptions = { frames: 1500, intervalMs: 60_000, seed: 17 };

describe("legacy migration: sparse history and a verification of content", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let site: Site;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await connect(db.url);
    site = await loadTestSite();
    await generateLegacy(client, site, GEN);
    await client.query(`INSERT INTO can_messages ("timestamp", node_id, message_type, decoded_data) VALUES
      ('1999-03-01T12:00:00Z', 1, 'climate', '{"dry_bulb_b": 21.25}'),
      ('2100-07-01T08:00:00Z', 2, 'climate', '{"dry_bulb_f": 19.5, "rh_f": 61}')`);
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it("--dry-run names the far rows per node as a question, and plans only the windows that hold rows", async () => {
    const progress = recordingProgress();
    const r = await runMigration(client, site, { batch: "1h", dryRun: true }, { progress });
    // 300 ticks a minute apart from 00:00: windows 00:00 .. 04:00, plus the two strays
    expect(r.batches.total).toBe(7);
    expect(r.outliers).toEqual([
      {
        from: "1999-03-01T12:00:00.000Z",
        to: "1999-03-01T13:00:00.000Z",
        bulk: { from: "2024-01-01T00:00:00.000Z", to: "2024-01-01T05:00:00.000Z" },
        nodes: [{ node_id: 1, rows: 1 }],
      },
      {
        from: "2100-07-01T08:00:00.000Z",
        to: "2100-07-01T09:00:00.000Z",
        bulk: { from: "2024-01-01T00:00:00.000Z", to: "2024-01-01T05:00:00.000Z" },
        nodes: [{ node_id: 2, rows: 1 }],
      },
    ]);
    expect(progress.lines.join("\n")).toMatch(
      /1999-03-01 \.\. 1999-03-01: 1 row\(s\); node 1: 1\n.*\n?.*Are these times real\?/,
    );
    const { rows } = await client.query("SELECT count(*)::int AS n FROM measurement");
    expect(rows[0].n).toBe(0);
  });

  it("migrates in as many batches and checkpoints as windows hold rows, and verifies", async () => {
    const progress = recordingProgress();
    const r = await runMigration(client, site, { batch: "1h" }, { progress });
    expect(r.batches).toMatchObject({ total: 7, this_run: 7, remaining: 0 });
    // the bars follow the plan: the rows end at their total, the days verified at theirs
    const legacyRows = expectedCounts(site, GEN).rows + 2;
    const [rowsBar, daysBar] = progress.bars;
    expect(rowsBar).toMatchObject({ label: "legacy rows", total: legacyRows });
    expect(rowsBar!.done.at(-1)).toBe(legacyRows);
    expect(Math.max(...rowsBar!.done)).toBe(legacyRows);
    expect(daysBar).toMatchObject({ label: "days verified", total: 3 });
    expect(daysBar!.done.at(-1)).toBe(3);
    const { rows } = await client.query("SELECT count(*)::int AS n FROM migration_checkpoint");
    expect(rows[0].n).toBe(7);
    expect(r.verification?.ok).toBe(true);
    const { rows: far } = await client.query(
      `SELECT s.name, m.value FROM measurement m JOIN sensor s USING (sensor_id)
       WHERE m.time < '2000-01-01' OR m.time > '2099-01-01' ORDER BY m.time, s.name`,
    );
    expect(far).toEqual([
      { name: "dry_bulb_b", value: 21.25 },
      { name: "dry_bulb_f", value: 19.5 },
      { name: "rh_f", value: 61 },
    ]);
    // the aggregates were brought up to date per range, not over the century between
    expect(r.aggregates?.method).toMatch(/3 separate ranges/);
  });

  // a mid-range row of rh_f: not its day's min or max (by a margin), not its first or last time
  const pick = async () =>
    (
      await client.query<{ sensor_id: number; time: string; value: number }>(
        `SELECT m.sensor_id, to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time, m.value
         FROM measurement m JOIN sensor s USING (sensor_id)
         WHERE s.name = 'rh_f' AND m.time > '2024-01-01T02:00:00Z' AND m.time < '2024-01-01T03:00:00Z'
           AND m.value > (SELECT min(value) + 1 FROM measurement WHERE sensor_id = s.sensor_id AND time < '2025-01-01')
           AND m.value + 1 < (SELECT max(value) FROM measurement WHERE sensor_id = s.sensor_id AND time < '2025-01-01')
         ORDER BY m.time LIMIT 1`,
      )
    ).rows[0]!;
  const verifyOnly = async () => {
    const r = await runMigration(client, site, { verifyOnly: true }, { progress: recordingProgress() });
    expect(r.verification?.ok).toBe(false);
    const m = r.verification!.mismatches;
    expect(m).toHaveLength(1);
    expect(m[0]!.sensor).toBe("rh_f");
    return m[0]!;
  };

  it("fails verify on a mid-range value changed by +0.5, naming the key", async () => {
    const k = await pick();
    await client.query("UPDATE measurement SET value = value + 0.5 WHERE sensor_id = $1 AND time = $2", [
      k.sensor_id,
      k.time,
    ]);
    const m = await verifyOnly();
    expect(m.problems).toEqual(["content checksum differs (a value or a time was changed)"]);
    expect(m.first_differences).toEqual([{ time: k.time, legacy: k.value, stored: k.value + 0.5, status: "migrated" }]);
    await client.query("UPDATE measurement SET value = $3 WHERE sensor_id = $1 AND time = $2", [
      k.sensor_id,
      k.time,
      k.value,
    ]);
    expect(
      (await runMigration(client, site, { verifyOnly: true }, { progress: recordingProgress() })).verification?.ok,
    ).toBe(true);
  });

  it("fails verify on a time moved by 1 µs, naming both keys", async () => {
    const k = await pick();
    await client.query(
      "UPDATE measurement SET time = time + INTERVAL '1 microsecond' WHERE sensor_id = $1 AND time = $2",
      [k.sensor_id, k.time],
    );
    const m = await verifyOnly();
    expect(m.problems).toEqual(["content checksum differs (a value or a time was changed)"]);
    const { rows } = await client.query<{ moved: string }>(
      `SELECT to_char(($1::timestamptz + INTERVAL '1 microsecond') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS moved`,
      [k.time],
    );
    const moved = rows[0]!.moved;
    expect(m.first_differences).toEqual([
      { time: k.time, legacy: k.value, stored: null, status: null },
      { time: moved, legacy: null, stored: k.value, status: "migrated" },
    ]);
    await client.query("UPDATE measurement SET time = $2 WHERE sensor_id = $1 AND time = $3", [
      k.sensor_id,
      k.time,
      moved,
    ]);
  });

  it("fails verify on a live row with an in-range value at a legacy key", async () => {
    const k = await pick();
    await client.query("DELETE FROM measurement WHERE sensor_id = $1 AND time = $2", [k.sensor_id, k.time]);
    await client.query("INSERT INTO measurement (time, sensor_id, value, status) VALUES ($2, $1, $3, NULL)", [
      k.sensor_id,
      k.time,
      k.value + 0.25,
    ]);
    const m = await verifyOnly();
    expect(m.problems).toEqual([
      "1 row(s) not written by the migration (status other than migrated)",
      "content checksum differs (a value or a time was changed)",
    ]);
    expect(m.first_differences).toEqual([{ time: k.time, legacy: k.value, stored: k.value + 0.25, status: null }]);
  });

  it("fails verify on migrated rows whose legacy row was deleted after the migration (a day the plan no longer touches)", async () => {
    await client.query(`DELETE FROM can_messages WHERE "timestamp" = '2100-07-01T08:00:00Z'`);
    const r = await runMigration(client, site, { verifyOnly: true }, { progress: recordingProgress() });
    expect(r.verification?.ok).toBe(false);
    const gone = r.verification!.mismatches.filter((m) => m.day === "2100-07-01");
    expect(gone.map((m) => m.sensor).sort()).toEqual(["dry_bulb_f", "rh_f"]);
    expect(gone[0]!.problems).toEqual([
      expect.stringMatching(
        /^1 migrated row\(s\) \(2100-07-01T08:00:00\.000000Z\.\.2100-07-01T08:00:00\.000000Z\) in a range earlier runs moved, but no legacy row/,
      ),
    ]);
  });
});
