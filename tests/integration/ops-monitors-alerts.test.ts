import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// The monitors show an operator without Prometheus the same conditions: the
// silent sensors (from the database itself, so without cea-backend too) and the
// active alerts cea-backend evaluated (the Redis hash "alerts"), and say so
// plainly when nothing evaluated them.

const run = promisify(execFile);

async function monitor(script: string, env: Record<string, string>): Promise<string> {
  try {
    const { stdout } = await run("bash", [projectPath(script), "--once", "--sample", "0"], {
      env: { ...process.env, CEA_ENV_FILE: "/nonexistent/cea.env", NO_COLOR: "1", ...env },
      timeout: 50_000,
    });
    return stdout;
  } catch (err) {
    throw new Error(`${script} failed: ${(err as { stdout?: string }).stdout ?? ""}${(err as Error).message}`);
  }
}

/** The lines of one section of a monitor's output. */
function section(out: string, title: string): string[] {
  const lines = out.split("\n");
  const start = lines.indexOf(`-- ${title}`);
  if (start < 0) throw new Error(`no section "${title}" in:\n${out}`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith("-- "));
  return lines.slice(start + 1, end < 0 ? undefined : end).filter((l) => l.trim() !== "");
}

let db: TestDatabase;
let redis: Redis;
let env: Record<string, string>;
const prefix = testPrefix();

beforeAll(async () => {
  db = await createTestDatabase();
  redis = new Redis(inject("redisUrl"));
  env = {
    CEA_DATABASE_URL: db.url,
    CEA_REDIS_URL: inject("redisUrl"),
    CEA_REDIS_PREFIX: prefix,
    CEA_SILENT_INTERVALS: "600",
  };
  // every sensor of the Lab (401-410) read 5 s ago, except 404 and 407, last read 20 minutes ago
  await db.pool.query(
    `INSERT INTO measurement (time, sensor_id, value)
     SELECT now() - CASE WHEN s IN (404, 407) THEN interval '20 minutes' ELSE interval '5 seconds' END, s, 1
     FROM generate_series(401, 410) s`,
  );
});
afterAll(async () => {
  await redis?.del(`${prefix}alerts`);
  redis?.disconnect();
  await db?.drop();
});

describe("monitor_can_db.sh", () => {
  it("lists the silent sensors from the database: stopped ones with their age, those that never reported", async () => {
    const out = await monitor("ops/monitor_can_db.sh", env);
    const lines = section(out, "silent sensors");
    expect(lines[0]).toBe("silent sensors (no reading for 600 expected intervals):");
    const rows = lines.slice(2).map((l) => l.trim().split(/\s{2,}/));
    const byName = new Map(rows.map((r) => [r[1], r]));
    // 1 s cycle x 600 intervals: 20 minutes ago is past it, 5 s ago is not
    expect(byName.get("dew_point_l")).toEqual([
      "Lab",
      "dew_point_l",
      "dew_point",
      expect.stringMatching(/^\d{4}-/),
      expect.stringMatching(/^1[12]\d\d$/),
      "600",
    ]);
    expect(byName.get("par_l")?.[2]).toBe("par");
    expect(byName.has("dry_bulb_l")).toBe(false);
    expect(byName.get("co2_b")?.[3]).toBe("none in 24 h");
    // and the 15 applied outputs of the actuator nodes (no Status frame stored) and the 9 derived sensors
    // (no worker computed them here)
    expect(rows).toHaveLength(2 + 40 + 15 + 9);
  });

  it("says the alert conditions were not evaluated when cea-backend has published none", async () => {
    await redis.del(`${prefix}alerts`);
    const out = await monitor("ops/monitor_can_db.sh", env);
    expect(section(out, "active alerts (cea-backend)")).toEqual([
      `alert conditions not evaluated: no current ${prefix}alerts from cea-backend (is it running?)`,
    ]);
  });
});

describe("monitor_redis_backend.sh", () => {
  it("shows the active alerts cea-backend evaluated, critical and warning, with their since", async () => {
    await redis.hset(
      `${prefix}alerts`,
      "_evaluated_at",
      new Date(Date.now() - 3_000).toISOString(),
      "room_out_of_band:Lab:air_temperature",
      "critical|2026-01-01T00:00:00.000Z|Lab: air_temperature outside 15 … 30 for 1800 s",
      "sensor_silent:par_l",
      "warning|2026-01-01T00:05:00.000Z|sensor par_l (Lab) silent: last reading 20 min ago, expected every 1 s",
    );
    await redis.expire(`${prefix}alerts`, 60);
    const out = await monitor("ops/monitor_redis_backend.sh", env);
    const lines = section(out, "active alerts (cea-backend)");
    expect(lines[0]).toMatch(/^evaluated by cea-backend \d+\.\d s ago$/);
    expect(lines.slice(1)).toEqual([
      "critical Lab: air_temperature outside 15 … 30 for 1800 s (since 2026-01-01T00:00:00.000Z)",
      "warning  sensor par_l (Lab) silent: last reading 20 min ago, expected every 1 s (since 2026-01-01T00:05:00.000Z)",
    ]);
  });

  it("no active alert is said as such", async () => {
    await redis.del(`${prefix}alerts`);
    await redis.hset(`${prefix}alerts`, "_evaluated_at", new Date().toISOString());
    const out = await monitor("ops/monitor_redis_backend.sh", env);
    expect(section(out, "active alerts (cea-backend)").slice(1)).toEqual(["no active alerts"]);
  });
});
