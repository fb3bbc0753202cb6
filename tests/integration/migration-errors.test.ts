import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateLegacy } from "../../bench/legacy-gen.js";
import { withConflictRetry } from "../../db/migrate/batches.js";
import { runMigration } from "../../db/migrate/migrate.js";
import type { Site } from "../../db/site.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { connect, loadTestSite, recordingProgress } from "./migration-helpers.js";

// What real legacy tables and real operators do to the command: every failure
// is one line naming the cause and what to do (exit 1), never a stack trace;
// odd json and node ids are counted, not fatal; exit statuses mean one thing.

const run = promisify(execFile);
const ENTRY = projectPath("dist/pipeline/migrate_to_normalized_schema.js");

describe("legacy migration: failures, odd data and exit statuses", () => {
  let db: TestDatabase;
  let client: pg.Client;
  let site: Site;
  let dir: string;
  const role = `cea_t_ro_${randomBytes(4).toString("hex")}`;
  const cli = async (env: Record<string, string>, ...args: string[]) => {
    try {
      const r = await run(process.execPath, [ENTRY, ...args], {
        env: { ...process.env, CEA_DATABASE_URL: db.url, CEA_STATE_DIR: dir, ...env },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  };
  const urlWith = (f: (u: URL) => void) => {
    const u = new URL(db.url);
    f(u);
    return u.toString();
  };

  beforeAll(async () => {
    if (!existsSync(ENTRY)) throw new Error(`${ENTRY} missing: run npx tsc -p . first`);
    db = await createTestDatabase();
    client = await connect(db.url);
    site = await loadTestSite();
    // 120 ticks a minute apart: two one-hour windows
    await generateLegacy(client, site, { frames: 600, intervalMs: 60_000, seed: 4 });
    await client.query(`CREATE ROLE ${role} LOGIN; GRANT SELECT ON can_messages TO ${role}`);
    dir = await mkdtemp(join(tmpdir(), "cea-migr-err-"));
  });
  afterAll(async () => {
    await client?.query(`REVOKE ALL ON can_messages FROM ${role}`).catch(() => undefined);
    await client?.end();
    await db?.drop();
    const c = await connect(db.url.replace(/\/[^/]+$/, "/postgres"));
    await c.query(`DROP ROLE IF EXISTS ${role}`).finally(() => c.end());
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const oneLine = (r: { code: number; stderr: string }, re: RegExp) => {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    // progress and warnings may come first; the failure is the last line, alone
    expect(r.stderr.trim().split("\n").at(-1)).toMatch(re);
  };

  it("a failure is one line with cause and remedy, exit 1", async () => {
    oneLine(
      await cli({}, "--dry-run", "--database-url", "postgresql://127.0.0.1:1/cea"),
      /^cannot reach PostgreSQL at 127\.0\.0\.1:1\/cea \(ECONNREFUSED\): start the server or correct the address/,
    );
    oneLine(
      await cli(
        {},
        "--dry-run",
        "--database-url",
        urlWith((u) => (u.pathname = "/no_such_database_x")),
      ),
      /^database "no_such_database_x" does not exist at .*: create it or name an existing database/,
    );
    oneLine(
      await cli(
        {},
        "--dry-run",
        "--database-url",
        urlWith((u) => (u.username = "no_such_role_x")),
      ),
      /^role "no_such_role_x" does not exist .*connect as an existing role/,
    );
    oneLine(
      await cli(
        {},
        "--database-url",
        urlWith((u) => (u.username = role)),
      ),
      new RegExp(
        `^role ${role} lacks the privilege SELECT on table measurement, INSERT on table measurement, .*grant it, or connect as the schema owner`,
      ),
    );
    oneLine(
      await cli({}, "--dry-run", "--legacy-time-zone", "Mars/Olympus"),
      /^--legacy-time-zone: unknown time zone "Mars\/Olympus"; use an IANA name/,
    );
    oneLine(await cli({}, "--frobnicate"), /Unknown option '--frobnicate'.*--help lists the options/);
    oneLine(await cli({}, "--max-batches", "-1"), /--max-batches/);
    oneLine(await cli({}, "--max-batches=-1"), /^--max-batches: /);
    oneLine(
      await cli({}, "--database-url", "not a url"),
      /^--database-url: expected postgresql:\/\/user@host:port\/database/,
    );
  });

  it("a read-only role is told the privilege it lacks on the legacy table, not 'table not found'", async () => {
    await client.query(`REVOKE SELECT ON can_messages FROM ${role}`);
    try {
      oneLine(
        await cli(
          {},
          "--dry-run",
          "--database-url",
          urlWith((u) => (u.username = role)),
        ),
        new RegExp(
          `^role ${role} lacks the SELECT privilege on the legacy table public\\.can_messages: GRANT SELECT ON`,
        ),
      );
    } finally {
      await client.query(`GRANT SELECT ON can_messages TO ${role}`);
    }
  });

  it("a schema without migration 0006 (a checkpoint table of an older command) is told to apply the schema, writing nothing", async () => {
    await client.query("ALTER TABLE migration_checkpoint DROP COLUMN ambiguous");
    try {
      oneLine(
        await cli({}, "--batch", "1h"),
        /^the database's schema lacks migration 0006 \(the table migration_checkpoint is of an older version\): run `cea schema apply` first/,
      );
      const { rows } = await client.query("SELECT count(*)::int AS n FROM measurement");
      expect(rows[0].n).toBe(0);
    } finally {
      await client.query(
        "ALTER TABLE migration_checkpoint ADD COLUMN ambiguous text CHECK (ambiguous IN ('earlier', 'later'))",
      );
    }
  });

  it("stopped by --max-batches exits 1 saying so; the rerun finishes with 0", async () => {
    const stopped = await cli({}, "--batch", "1h", "--max-batches", "1");
    expect(stopped.code).toBe(1);
    expect(stopped.stdout).toMatch(/STOPPED after 1 batch\(es\); 1 remain/);
    expect(stopped.stderr).toMatch(/stopped: 1 batch\(es\) remain; run the same command again to resume/);
    const rest = await cli({}, "--batch", "1h");
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stdout).toMatch(/verification: OK/);
  });

  it("a \\u0000 and a duplicated key in json are counted, a node id beyond integer is an unmapped node", async () => {
    await client.query(`CREATE TABLE weird (id bigserial PRIMARY KEY, "timestamp" timestamptz, node_id bigint, decoded_data json);
      INSERT INTO weird ("timestamp", node_id, decoded_data) VALUES
        ('2024-05-01T00:00:00Z', 1, '{"dry_bulb_b": "a\\u0000b", "rh_b": 50}'),
        ('2024-05-01T00:01:00Z', 1, '{"dry_bulb_b": 1, "dry_bulb_b": 2}'),
        ('2024-05-01T00:02:00Z', 99999999999, '{"dry_bulb_b": 3}')`);
    await expect(runMigration(client, site, { table: "weird" }, { progress: recordingProgress() })).rejects.toThrow(
      /node_id 99999999999: 1 rows/,
    );
    const r = await runMigration(
      client,
      site,
      { table: "weird", skipUnmapped: true },
      { progress: recordingProgress() },
    );
    expect(r.unmapped_nodes).toEqual([{ node_id: 99999999999, rows: 1 }]);
    expect(r.rows_with_nul).toBe(1);
    expect(r.rows_with_duplicate_keys).toBe(1);
    const kinds = Object.fromEntries(r.sensors.map((s) => [s.name, s.kinds]));
    expect(kinds).toEqual({ dry_bulb_b: { non_numeric_string: 1, number: 1 }, rh_b: { number: 1 } });
    expect(r.verification?.ok).toBe(true);
    const { rows } = await client.query(
      "SELECT m.value FROM measurement m JOIN sensor s USING (sensor_id) WHERE s.name = 'dry_bulb_b' AND m.time = '2024-05-01T00:01:00Z'",
    );
    expect(rows).toEqual([{ value: 2 }]);
  });

  it("every node unmapped with --skip-unmapped: says there is nothing to migrate and stops", async () => {
    await client.query(`CREATE TABLE orphans (id bigserial PRIMARY KEY, "timestamp" timestamptz, node_id integer, decoded_data jsonb);
      INSERT INTO orphans ("timestamp", node_id, decoded_data) VALUES ('2024-05-01T00:00:00Z', 77, '{"x": 1}')`);
    oneLine(
      await cli({}, "--table", "orphans", "--skip-unmapped"),
      /^nothing to migrate: every node of the 1 legacy rows is unmapped \(node ids 77\)/,
    );
  });

  it("a batch that loses a deadlock to a concurrent writer is retried", async () => {
    await client.query("CREATE TABLE lockpair (id int PRIMARY KEY); INSERT INTO lockpair VALUES (1), (2)");
    const a = await connect(db.url);
    const b = await connect(db.url);
    try {
      // a detects the deadlock first, so a is the victim
      await a.query("SET deadlock_timeout = '100ms'");
      await b.query("SET deadlock_timeout = '10s'");
      const bPid = (await b.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      let attempts = 0;
      let other: Promise<unknown> | undefined;
      const retries: string[] = [];
      await withConflictRetry(
        3,
        async () => {
          attempts++;
          await a.query("BEGIN");
          try {
            await a.query("UPDATE lockpair SET id = id WHERE id = 1");
            if (attempts === 1) {
              await b.query("BEGIN");
              await b.query("UPDATE lockpair SET id = id WHERE id = 2");
              other = b.query("UPDATE lockpair SET id = id WHERE id = 1").then(() => b.query("COMMIT"));
              // wait until b waits for a's lock
              for (let i = 0; i < 200; i++) {
                const { rows } = await client.query(
                  "SELECT wait_event_type = 'Lock' AS waits FROM pg_stat_activity WHERE pid = $1",
                  [bPid],
                );
                if (rows[0]?.waits) break;
                await new Promise((r) => setTimeout(r, 25));
              }
            }
            await a.query("UPDATE lockpair SET id = id WHERE id = 2");
            await a.query("COMMIT");
          } catch (err) {
            await a.query("ROLLBACK");
            throw err;
          }
        },
        (what) => retries.push(what),
      );
      await other;
      expect(attempts).toBe(2);
      expect(retries).toEqual(["40P01 deadlock detected"]);
    } finally {
      await a.end();
      await b.end();
    }
  });
});
