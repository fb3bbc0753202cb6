import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  expectedCounts,
  frameTime,
  generateLegacy,
  kindOf,
  type LegacyGenOptions,
  legacyMessages,
} from "../../bench/legacy-gen.js";
import { type MigrateOptions, runMigration } from "../../db/migrate/migrate.js";
import { writeReport } from "../../db/migrate/report-text.js";
import type { Site } from "../../db/site.js";
import { createTestDatabase, isCommunity, type TestDatabase } from "../support/db.js";
import {
  aggregateMismatches,
  connect,
  loadTestSite,
  measuredBySensor,
  recordingProgress,
  tableHash,
} from "./migration-helpers.js";

// 6 000 frames, one per node per minute: 20 hours of history in 2-hour batches.
const GEN: LegacyGenOptions = { frames: 6000, intervalMs: 60_000, seed: 11 };
const OPTS: MigrateOptions = { batch: "2h" };

describe("legacy migration: migrate, verify, migrate again", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let site: Site;
  let before: { md5: string; rows: number };
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await connect(db.url);
    site = await loadTestSite();
    await generateLegacy(client, site, GEN);
    before = await tableHash(client, "can_messages");
    dir = await mkdtemp(join(tmpdir(), "cea-migr-"));
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("moves every numeric value once (two sessions), counts the other kinds per sensor, and verifies", async () => {
    const exp = expectedCounts(site, GEN);
    expect(before.rows).toBe(exp.rows);
    const sessions: pg.Client[] = [];
    const report = await runMigration(
      client,
      site,
      { ...OPTS, parallel: 2 },
      {
        progress: recordingProgress(),
        connect: async () => {
          const c = await connect(db.url);
          sessions.push(c);
          return c;
        },
      },
    );
    // the second session was opened and ended by the migration
    expect(sessions).toHaveLength(1);
    await expect(sessions[0]!.query("SELECT 1")).rejects.toThrow();

    // rows in measurement, per sensor, against the generator's layout (not the report)
    const measured = await measuredBySensor(client);
    const expectedRows = Object.fromEntries(Object.entries(exp.sensors).map(([k, v]) => [k, v.numeric]));
    expect(Object.keys(expectedRows)).toHaveLength(65);
    expect(measured).toEqual(expectedRows);
    const { rows: st } = await client.query("SELECT DISTINCT status FROM measurement");
    expect(st).toEqual([{ status: "migrated" }]);

    // the report: value kinds and conflicts per sensor, as the layout says
    const byName = Object.fromEntries(report.sensors.map((s) => [s.name, s]));
    for (const [name, e] of Object.entries(exp.sensors)) {
      expect(byName[name]?.kinds, name).toEqual(e.kinds);
      expect(byName[name]?.conflicts, name).toBe(e.conflicts);
      expect(byName[name]?.rows, name).toBe(e.numeric);
    }
    // every non-number kind the generator makes shows up somewhere, counted
    const kinds = new Set(report.sensors.flatMap((s) => Object.keys(s.kinds)));
    for (const k of ["numeric_string", "null", "boolean", "object", "array", "non_numeric_string"])
      expect(kinds).toContain(k);
    expect(report.conflicts.total).toBe(Object.values(exp.sensors).reduce((a, s) => a + s.conflicts, 0));
    expect(report.conflicts.total).toBeGreaterThan(0);
    // the smallest value is kept on a conflict
    for (const c of report.conflicts.samples) expect(c.kept).toBeLessThan(c.also_seen);

    expect(report.this_run.legacy_rows).toBe(exp.rows);
    expect(report.batches.this_run).toBe(report.batches.total);
    expect(report.batches.total).toBe(10); // ticks 0..1199 a minute apart: 20 h in 2 h windows
    expect(report.verification?.ok).toBe(true);
    expect(report.verification?.measurement_rows).toBe(Object.values(exp.sensors).reduce((a, s) => a + s.numeric, 0));

    const { rows: range } = await client.query(
      `SELECT to_char(min(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first,
              to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last FROM measurement`,
    );
    expect(range[0]).toEqual({ first: exp.first, last: exp.last });
    expect(await tableHash(client, "can_messages")).toEqual(before);

    const files = await writeReport(report, join(dir, "report.json"));
    const json = JSON.parse(await readFile(files.json, "utf8"));
    expect(json.verification.ok).toBe(true);
    expect(await readFile(files.text, "utf8")).toMatch(/verification: OK/);
  });

  it("converts numeric strings (trimmed) and keeps the legacy timestamp to the microsecond", async () => {
    const layout = legacyMessages(site, { extraNodes: [] });
    // the first frames whose key 0 is a numeric string, from the layout alone
    const frames = [...Array(2000).keys()].filter((f) => kindOf(f, 0) === "numeric_string").slice(0, 5);
    expect(frames.length).toBe(5);
    for (const f of frames) {
      const tick = Math.floor(f / 5);
      const msgs = layout[f % 5]!;
      const m = msgs[tick % msgs.length]!;
      const key = m.keys[0]!;
      const { rows } = await client.query(
        `SELECT DISTINCT l.decoded_data ->> $1 AS text, jsonb_typeof(l.decoded_data -> $1) AS kind, m.value
         FROM can_messages l JOIN sensor s ON s.name = $1
         JOIN measurement m ON m.sensor_id = s.sensor_id AND m.time = l.timestamp
         WHERE l.node_id = $2 AND l.timestamp = $3::timestamptz`,
        [key, m.node_id, frameTime({ start: "2024-01-01T00:00:00Z", intervalMs: 60_000 }, f, 5)],
      );
      expect(rows.length).toBe(1);
      expect(rows[0].text).toMatch(/^\s*-?\d+\.\d\d\s*$/);
      expect(rows[0].value).toBe(Number(rows[0].text.trim()));
      expect(rows[0].kind).toBe("string");
    }
  });

  it("a second run adds nothing; running every batch again adds nothing either", async () => {
    const count = async () => (await client.query("SELECT count(*)::int AS n FROM measurement")).rows[0].n as number;
    const n = await count();
    const again = await runMigration(client, site, OPTS, { progress: recordingProgress() });
    expect(again.this_run.inserted).toBe(0);
    expect(again.batches.this_run).toBe(0);
    expect(again.batches.before_this_run).toBe(10);
    expect(again.verification?.ok).toBe(true);
    expect(again.totals.inserted).toBe(n);

    const all = await runMigration(
      client,
      site,
      { ...OPTS, ignoreCheckpoint: true },
      { progress: recordingProgress() },
    );
    expect(all.batches.this_run).toBe(10);
    expect(all.this_run.inserted).toBe(0);
    expect(all.this_run.keys_numeric).toBe(n);
    expect(await count()).toBe(n);
    expect(await tableHash(client, "can_messages")).toEqual(before);
  });

  it("leaves the aggregates matching the raw rows (Community: the materialized part)", async () => {
    const agg = await aggregateMismatches(client, isCommunity());
    for (const [view, r] of Object.entries(agg)) {
      expect(r.bad, view).toBe(0);
      expect(r.buckets, view).toBeGreaterThanOrEqual(50);
    }
  });
});
