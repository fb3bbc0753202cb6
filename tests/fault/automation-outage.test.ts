import type { Redis } from "ioredis";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createPool } from "../../db/pool.js";
import { insertSetpoints } from "../../db/queries/automation.js";
import { loadSite } from "../../db/site.js";
import { AutomationService } from "../../pipeline/automation/service.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { buildCommandTable } from "../../pipeline/can/commands.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { type PrivatePg, startPrivatePg } from "../support/private-pg.js";
import { type PrivateRedis, startPrivateRedis } from "../support/private-redis.js";
import { waitUntil } from "../support/procs.js";
import { roleUrl } from "../support/roles.js";

// PostgreSQL down and Redis down, each on a private instance this test stops
// and starts: every actuator goes to its safe state with the cause in its
// event, the service says so (health key, log), and control resumes when the
// instance is back. Decisions made while PostgreSQL is down are recorded when
// it returns.

const T0 = Date.parse("2026-06-15T10:00:00Z");
const log = createLogger("automation-fault", "silent");

async function setup(url: string): Promise<void> {
  const api = new pg.Pool({ connectionString: roleUrl(url, "api"), max: 1 });
  try {
    await insertSetpoints(api, [
      {
        room_id: 1,
        quantity: "air_temperature",
        period: "any",
        target: 24,
        tolerance: 2,
        effective_from: new Date(T0 - 3_600_000),
        created_by: "test",
      },
    ]);
  } finally {
    await api.end();
  }
}

async function service(dbUrl: string, redis: Redis, prefix: string, clock: () => number) {
  const site = await loadSite(projectPath("ops/site.json"));
  const pool = createPool(roleUrl(dbUrl, "automation"), {
    max: 2,
    connectTimeoutMs: 1_000,
    queryTimeoutMs: 1_000,
    statementTimeoutMs: 1_000,
  });
  const keys = redisKeys({ ...loadConfig({}), CEA_REDIS_PREFIX: prefix });
  const svc = new AutomationService({
    config: loadConfig({}),
    site,
    commands: buildCommandTable(loadCanDb(projectPath("ops/cea.kcd")), site, "ops/site.json"),
    redis,
    db: pool,
    keys,
    log,
    dryRun: false,
    clock,
  });
  return { svc, pool, keys };
}

const liveTemps = (nowMs: number, t: number): string[] =>
  [101, 201].flatMap((id) => [
    String(id),
    JSON.stringify({ value: t, time: new Date(nowMs - 1000).toISOString(), name: `s${id}`, status: null }),
  ]);

describe("automation-service: outages of its inputs", () => {
  let pgs: PrivatePg | undefined;
  let rds: PrivateRedis | undefined;
  let db: TestDatabase | undefined;
  const closers: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await pgs?.cleanup();
    await rds?.cleanup();
    await db?.drop();
  });

  it("PostgreSQL down: safe state with the cause, decisions kept and recorded when it is back, control resumes", async () => {
    pgs = await startPrivatePg({ bindir: inject("pgBindir") });
    await setup(pgs.url);
    const redis = createRedis(inject("redisUrl"), log, "automation-fault");
    closers.push(() => redis.disconnect());
    let now = T0;
    const prefix = testPrefix();
    const { svc, pool, keys } = await service(pgs.url, redis, prefix, () => now);
    closers.push(() => pool.end());
    closers.push(async () => {
      const left = await redis.keys(`${prefix}*`);
      if (left.length) await redis.del(...left);
    });
    await redis.hset(keys.live, ...liveTemps(now, 21));
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(true);

    await pgs.stop({ mode: "fast" });
    now += 1_000;
    await redis.hset(keys.live, ...liveTemps(now, 21));
    const ds = await svc.cycle();
    expect(ds.every((d) => d.action === "safe" && !d.state && d.failsafe)).toBe(true);
    expect(ds.find((d) => d.actuator === "flower_heater")!.reason).toMatch(/^fail-safe: PostgreSQL unreachable/);
    const health = JSON.parse((await redis.get(keys.health("automation-service")))!);
    expect(health.status).toBe("degraded");
    expect(health.reason).toMatch(/PostgreSQL unreachable/);
    expect(svc.pending.length).toBeGreaterThan(0);
    // the node got its safe command through Redis all the same
    const last = (await redis.xrange(keys.cmd, "-", "+")).filter(([, f]) => f.includes("Cmd_N1")).at(-1)![1];
    expect(last[last.indexOf("data") + 1]!.slice(0, 2)).toBe("00");

    await pgs.start();
    now += 200_000; // past the heater's minimum off-time
    await redis.hset(keys.live, ...liveTemps(now, 21));
    await waitUntil(
      "a cycle that reaches PostgreSQL again",
      async () => {
        await svc.cycle();
        return svc.pending.length === 0 ? true : undefined;
      },
      30_000,
      500,
    );
    expect(svc.state.get("flower_heater")?.on).toBe(true);
    const check = new pg.Pool({ connectionString: pgs.url, max: 1 });
    try {
      const { rows } = await check.query<{ action: string; reason: string }>(
        "SELECT action, reason FROM actuator_events WHERE actuator = 'flower_heater' ORDER BY event_id",
      );
      expect(rows.map((r) => r.action)).toEqual(["on", "safe", "on"]);
      expect(rows[1]!.reason).toMatch(/^fail-safe: PostgreSQL unreachable/);
    } finally {
      await check.end();
    }
    expect(JSON.parse((await redis.get(keys.health("automation-service")))!).status).toBe("ok");
  });

  it("Redis down: safe state recorded (nothing could be sent: the node's watchdog takes over), control resumes", async () => {
    rds = await startPrivateRedis();
    db = await createTestDatabase();
    await setup(db.url);
    const redis = createRedis(rds.url, log, "automation-fault");
    closers.push(() => redis.disconnect());
    let now = T0;
    const { svc, pool, keys } = await service(db.url, redis, testPrefix(), () => now);
    closers.push(() => pool.end());
    await redis.hset(keys.live, ...liveTemps(now, 21));
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(true);

    await rds.stop();
    await waitUntil("the client to notice", async () => (redis.status !== "ready" ? true : undefined), 10_000);
    now += 1_000;
    const ds = await svc.cycle();
    expect(ds.find((d) => d.actuator === "flower_heater")).toMatchObject({
      action: "safe",
      state: false,
      reason: "fail-safe: Redis unreachable",
    });
    const { rows } = await db.pool.query(
      "SELECT action, reason, ack_status FROM actuator_events WHERE actuator = 'flower_heater' ORDER BY event_id",
    );
    expect(rows).toEqual([
      { action: "on", reason: expect.any(String), ack_status: "sent" },
      { action: "safe", reason: "fail-safe: Redis unreachable", ack_status: "not_sent" },
    ]);

    await rds.restart();
    await waitUntil("the client to reconnect", async () => (redis.status === "ready" ? true : undefined), 20_000);
    now += 200_000;
    await redis.hset(keys.live, ...liveTemps(now, 21));
    await svc.cycle();
    expect(svc.state.get("flower_heater")?.on).toBe(true);
    expect(JSON.parse((await redis.get(keys.health("automation-service")))!).status).toBe("ok");
  });
});
