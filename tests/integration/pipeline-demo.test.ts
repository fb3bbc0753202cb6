import { execFile } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { reconcile, siteTable } from "./pipeline-helpers.js";

// `npm run demo` end to end through the compiled entry points (dist/): the
// scanner on the simulator, the worker, a bounded run (CEA_DEMO_SECONDS), an
// orderly stop that leaves nothing pending. Needs `npx tsc -p .` first.

const run = promisify(execFile);

describe("demo", () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefix = testPrefix();
  const stateDir = `/tmp/cea-demo-test-${process.pid}`;
  beforeAll(async () => {
    db = await createTestDatabase();
    redis = createRedis(inject("redisUrl"));
  });
  afterAll(async () => {
    const ks = await redis.keys(`${prefix}*`);
    if (ks.length) await redis.del(...ks);
    await redis.quit();
    await db?.drop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("runs scanner + worker, shows rows arriving, stops with 0 pending and every frame stored exactly", async () => {
    // the stack as ops/stack.sh describes it, found through CEA_STATE_DIR like
    // every command of the checkout; the URL carries a password (the test
    // cluster trusts local connections and never asks for it) that must not be printed
    const url = new URL(db.url);
    url.password = "demo-s3cret";
    mkdirSync(stateDir, { recursive: true });
    // and, as ops/stack.sh writes them, one URL per service role: the demo runs each service as its role
    writeFileSync(
      join(stateDir, "stack.env"),
      [
        `CEA_DATABASE_URL=${url}`,
        `CEA_REDIS_URL=${inject("redisUrl")}`,
        `CEA_WORKER_DATABASE_URL=${db.urlAs("worker")}`,
        `CEA_API_DATABASE_URL=${db.urlAs("api")}`,
        `CEA_READER_DATABASE_URL=${db.urlAs("reader")}`,
        `CEA_AUTOMATION_DATABASE_URL=${db.urlAs("automation")}`,
        "",
      ].join("\n"),
    );
    const base: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CEA_")) base[k] = v;
    const { stdout } = await run(process.execPath, [projectPath("dist/pipeline/demo.js")], {
      env: {
        ...base,
        CEA_REDIS_PREFIX: prefix,
        // no CEA_CAN_SOURCE: the demo chooses auto (the bus, else the simulator); no such bus here
        CEA_CAN_INTERFACE: "ceanone0",
        CEA_DEMO_SECONDS: "6",
        CEA_STATE_DIR: stateDir,
      },
      timeout: 60_000,
    });
    expect(stdout).toContain(
      `PostgreSQL + TimescaleDB  ${url.protocol}//${url.username}:***@${url.host}${url.pathname}`,
    );
    expect(stdout).not.toContain("demo-s3cret");
    expect(stdout).toMatch(/rows stored since start: [1-9]\d*/);
    expect(stdout).toContain("can-scanner stopped (exit 0)");
    expect(stdout).toContain("can-worker stopped (exit 0)");
    expect(stdout).toContain("final pending entries in can-worker-group: 0");
    // automation-service ran in dry run: its decisions are printed and recorded, nothing was sent
    expect(stdout).toContain("automation-service stopped (exit 0)");
    expect(stdout).toMatch(/^ {4}decision \d\d:\d\d:\d\d \w+ (on|off|hold|safe): .+ \(dry run\)$/m);
    const events = await db.pool.query<{ n: number; dry: number }>(
      "SELECT count(*)::int AS n, count(*) FILTER (WHERE dry_run)::int AS dry FROM actuator_events",
    );
    expect(events.rows[0]!.n).toBeGreaterThan(0);
    expect(events.rows[0]!.dry).toBe(events.rows[0]!.n);
    expect(await redis.exists(`${prefix}can:cmd`)).toBe(0);
    // every frame the scanner appended is stored, exactly (the stream is far below the trim size)
    const entries = (await redis.xrange(`${prefix}can:raw`, "-", "+")).map(([, f]) => {
      const o = Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i]!, f[2 * i + 1]!]));
      return { ts: o.ts!, id: o.id!, data: o.data!, src: o.src };
    });
    expect(new Set(entries.map((e) => e.src))).toEqual(new Set(["simulator"]));
    // at least one full round of the simulated nodes (how many rounds fit in 6 s depends on the machine's load)
    expect(entries.length).toBeGreaterThanOrEqual(15);
    expect(await redis.hget(`${prefix}stats:can-scanner`, "appended")).toBe(String(entries.length));
    const r = await reconcile(db.pool, await siteTable(), entries);
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, wrongValue: 0 });
    expect(r.stored).toBe(r.expected);
    // live values were kept current by the scanner
    expect(await redis.hlen(`${prefix}live:values`)).toBe(65); // with the actuator nodes' applied outputs
  });
});
