import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { redactUrl } from "../../pipeline/runtime/stack-env.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

// Every command of the checkout finds the local stack one way when
// CEA_DATABASE_URL / CEA_REDIS_URL are unset: $CEA_STATE_DIR/stack.env, as
// ops/stack.sh wrote it. Here that file points at a database of this test's
// own, so a command that looked elsewhere (the old default 127.0.0.1:5432)
// would fail or write somewhere else.

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function node(script: string, args: string[], env: Record<string, string>): Promise<Run> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CEA_")) base[k] = v;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [projectPath(script), ...args],
      { env: { ...base, ...env }, timeout: 120_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("commands find the local stack through stack.env", () => {
  let db: TestDatabase;
  const state = mkdtempSync(join(tmpdir(), "cea-cmds-"));
  beforeAll(async () => {
    db = await createTestDatabase();
    writeFileSync(
      join(state, "stack.env"),
      `CEA_DATABASE_URL=${db.url}\nCEA_REDIS_URL=${inject("redisUrl")}\nCEA_PG_BINDIR=${inject("pgBindir")}\n`,
    );
  });
  afterAll(async () => {
    await db?.drop();
    rmSync(state, { recursive: true, force: true });
  });
  const env = { CEA_STATE_DIR: state };

  it("legacy-gen, then cea schema verify, then migrate_to_normalized_schema: all on the stack's database", async () => {
    const gen = await node("dist/bench/legacy-gen.js", ["--rows", "300"], env);
    expect(gen.code, gen.stderr).toBe(0);
    expect((await db.pool.query("SELECT count(*)::int AS n FROM can_messages")).rows[0].n).toBeGreaterThan(0);

    const verify = await node("dist/pipeline/cli.js", ["schema", "verify"], env);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toContain("schema OK");

    const migrate = await node(
      "dist/pipeline/migrate_to_normalized_schema.js",
      ["--report", join(state, "report.json")],
      env,
    );
    expect(migrate.code, `${migrate.stdout}\n${migrate.stderr}`).toBe(0);
    const { rows } = await db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM measurement WHERE status = 'migrated'",
    );
    expect(rows[0]!.n).toBeGreaterThan(0);
  });
});

describe("redactUrl", () => {
  it("hides the password of a URL and keeps the rest", () => {
    expect(redactUrl("postgresql://cea_writer:s3cr%40t@db.local:5432/cea?sslmode=require")).toBe(
      "postgresql://cea_writer:***@db.local:5432/cea?sslmode=require",
    );
    expect(redactUrl("redis://:hunter2@127.0.0.1:6379/0")).toBe("redis://:***@127.0.0.1:6379/0");
    expect(redactUrl("redis://127.0.0.1:6379")).toBe("redis://127.0.0.1:6379");
    // an unencoded "@" in the password: everything up to the last "@" is the user information
    expect(redactUrl("postgresql://u:p@ss@host/db")).toBe("postgresql://u:***@host/db");
  });
});
