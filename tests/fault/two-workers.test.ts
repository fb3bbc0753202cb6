import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, pipelineEnv, spawnService } from "../support/procs.js";
import { expectedRowsOf, groupState, readRawStream, reconcile, waitDrained } from "../support/reconcile.js";

// Two workers share the group; one is killed for good while it holds entries
// it read and never acknowledged. The survivor claims them (XAUTOCLAIM once
// they have been idle for CEA_CLAIM_IDLE_MS) and the table ends up complete.

const GROUP = "can-worker-group";

describe("two workers, one killed for good", () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefix = testPrefix();
  const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

  beforeAll(async () => {
    db = await createTestDatabase();
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(async () => {
    await killAll();
    const left = await redis.keys(`${prefix}*`);
    if (left.length) await redis.del(...left);
    redis.disconnect();
    await db?.drop();
  });

  it("the survivor claims the dead one's pending entries: 0 lost, 0 duplicated", async () => {
    const env = (extra: Record<string, string | number>) =>
      pipelineEnv({ databaseUrl: db.url, redisUrl: inject("redisUrl"), prefix, extra });
    await redis.xgroup("CREATE", keys.raw, GROUP, "0", "MKSTREAM");
    const scanner = spawnService(
      "can-scanner",
      env({
        CEA_CAN_SOURCE: "simulator",
        CEA_SIM_START: "2026-03-01T00:00:00Z",
        CEA_SIM_SPEED: 600,
        CEA_SIM_DURATION_S: 1_200,
      }),
    );
    expect(await scanner.waitExit(60_000)).toEqual({ code: 0, signal: null });
    const frames = await readRawStream(redis, keys.raw);

    const common = { CEA_BATCH_SIZE: 400, CEA_CLAIM_IDLE_MS: 1_000 };
    const doomed = spawnService(
      "can-worker",
      env({ ...common, CEA_CONSUMER: "w-doomed", CEA_FAULT_KILL_MID_BATCH: 2 }),
    );
    const survivor = spawnService("can-worker", env({ ...common, CEA_CONSUMER: "w-survivor" }));
    expect(await doomed.waitExit(60_000)).toEqual({ code: null, signal: "SIGKILL" });
    const consumers = async () => {
      const list = (await redis.xinfo("CONSUMERS", keys.raw, GROUP)) as unknown[][];
      const out: Record<string, number> = {};
      for (const c of list) {
        const f = new Map<string, unknown>();
        for (let i = 0; i + 1 < c.length; i += 2) f.set(String(c[i]), c[i + 1]);
        out[String(f.get("name"))] = Number(f.get("pending"));
      }
      return out;
    };
    // it died holding entries it read and never acknowledged; they have been idle
    // for less than CEA_CLAIM_IDLE_MS, so nobody has claimed them yet
    const atDeath = await consumers();
    expect(atDeath["w-doomed"]).toBeGreaterThan(0);

    await waitDrained(redis, keys.raw, GROUP, 120_000, [survivor]);
    expect(await survivor.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(await consumers()).toMatchObject({ "w-doomed": 0, "w-survivor": 0 });
    const r = await reconcile(db.pool, await expectedRowsOf(frames));
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    expect(r.stored).toBe(r.expected);
    expect(await groupState(redis, keys.raw, GROUP)).toMatchObject({ pending: 0, undelivered: false });
    expect(await redis.xlen(keys.dead)).toBe(0);
  }, 240_000);
});
