import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateLegacy, type LegacyGenOptions } from "../../bench/legacy-gen.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, tableHash } from "./migration-helpers.js";

const run = promisify(execFile);
const ENTRY = projectPath("dist/pipeline/migrate_to_normalized_schema.js");
const GEN: LegacyGenOptions = { frames: 2500, intervalMs: 60_000, seed: 9 };

interface Exit {
  code: number;
  stdout: string;
  stderr: string;
}

describe("migrate_to_normalized_schema as a process", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let dir: string;
  const cli = async (...args: string[]): Promise<Exit> => {
    try {
      const r = await run(process.execPath, [ENTRY, ...args], {
        env: { ...process.env, CEA_DATABASE_URL: db.url, CEA_STATE_DIR: dir },
        maxBuffer: 16 * 1024 * 1024,
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  };

  beforeAll(async () => {
    if (!existsSync(ENTRY)) throw new Error(`${ENTRY} missing: run npx tsc -p . first`);
    db = await createTestDatabase();
    client = await connect(db.url);
    await generateLegacy(client, await loadTestSite(), GEN);
    dir = await mkdtemp(join(tmpdir(), "cea-migr-cli-"));
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("--dry-run prints the plan and writes nothing", async () => {
    const before = await tableHash(client, "can_messages");
    const r = await cli("--dry-run", "--batch", "3h");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/DRY RUN/);
    expect(r.stdout).toMatch(/node 1 -> node-1 \(climate_node\) Flower Room\/back: [\d,]+ rows; message_types: air/);
    expect(r.stdout).toMatch(/batches of 3h: 3 in range/);
    expect(r.stdout).toMatch(/dry_bulb_b\s+rows\s+[\d,]+/);
    const { rows } = await client.query(
      "SELECT (SELECT count(*)::int FROM measurement) AS m, (SELECT count(*)::int FROM migration_checkpoint) AS cp",
    );
    expect(rows[0]).toEqual({ m: 0, cp: 0 });
    expect(await tableHash(client, "can_messages")).toEqual(before);
  });

  it("migrates and verifies (exit 0, report written); --verify-only exits non-zero after a row is deleted", async () => {
    const ok = await cli("--batch", "3h");
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/verification: OK/);
    expect(ok.stderr).toMatch(/100\.0% .* legacy rows/);
    const report = JSON.parse(await readFile(join(dir, "migration-report.json"), "utf8"));
    expect(report.verification.ok).toBe(true);
    expect(await readFile(join(dir, "migration-report.txt"), "utf8")).toMatch(/verification: OK/);

    const { rows } = await client.query<{ name: string; day: string }>(
      `DELETE FROM measurement m USING sensor s
       WHERE s.sensor_id = m.sensor_id AND (m.sensor_id, m.time) = (SELECT sensor_id, time FROM measurement WHERE sensor_id = 203 ORDER BY time LIMIT 1 OFFSET 100)
       RETURNING s.name, to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day`,
    );
    expect(rows).toHaveLength(1);
    const bad = await cli("--verify-only", "--report", join(dir, "after-delete.json"));
    expect(bad.code).toBe(2);
    expect(bad.stdout).toMatch(/verification: MISMATCH/);
    expect(bad.stdout).toContain(`${rows[0]!.name} ${rows[0]!.day}: count legacy`);
    const again = JSON.parse(await readFile(join(dir, "after-delete.json"), "utf8"));
    expect(again.verification.mismatches).toHaveLength(1);
    expect(again.verification.mismatches[0].sensor).toBe("rh_f");
  });

  it("a bad option stops with a message and a non-zero exit", async () => {
    const r = await cli("--batch", "fortnight");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--batch: expected <n>s, <n>m, <n>h or <n>d/);
  });
});
