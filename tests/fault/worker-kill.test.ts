import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, pipelineEnv, runService, spawnService } from "../support/procs.js";
import { expectedRowsOf, groupState, readRawStream, reconcile, waitDrained } from "../support/reconcile.js";

// kill -9 of the worker in the two windows that matter: after the COPY of a
// batch but before COMMIT (the rows must not appear, the entries stay pending
// and are written by the next run), and after COMMIT but before XACK (the rows
// are there, the entries stay pending, the redelivery writes nothing new).
// Only the worker is killed, so the shared stack is used.

const GROUP = "can-worker-group";
const SIM = { CEA_CAN_SOURCE: "simulator", CEA_SIM_START: "2026-03-01T00:00:00Z", CEA_SIM_SPEED: 600 };

describe("worker killed with -9", () => {
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

  const env = (extra: Record<string, string | number>) =>
    pipelineEnv({ databaseUrl: db.url, redisUrl: inject("redisUrl"), prefix, extra });
  const rows = async () =>
    (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement")).rows[0]!.n;

  it("mid-batch and between COMMIT and XACK, then a restart: 0 lost, 0 duplicated, nothing pending", async () => {
    // the group exists before traffic, as it does once the worker has ever run
    await redis.xgroup("CREATE", keys.raw, GROUP, "0", "MKSTREAM");
    const scanner = spawnService("can-scanner", env({ ...SIM, CEA_SIM_DURATION_S: 600 }));
    expect(await scanner.waitExit(60_000)).toEqual({ code: 0, signal: null });
    const frames = await readRawStream(redis, keys.raw);
    const expected = await expectedRowsOf(frames);
    expect(frames.length).toBeGreaterThan(2_000);

    // 1: dies after the COPY of its 3rd batch, before COMMIT. A single consumer reads
    // the stream in order, so the table must hold exactly the first two batches' entries.
    const w1 = spawnService(
      "can-worker",
      env({ CEA_BATCH_SIZE: 500, CEA_FAULT_KILL_MID_BATCH: 3, CEA_HEALTH_TTL_S: 2 }),
    );
    expect(await w1.waitExit(60_000)).toEqual({ code: null, signal: "SIGKILL" });
    const committed1 = w1.logs.filter((l) => l.msg === "batch committed");
    expect(committed1.length).toBe(2);
    const entries1 = committed1.reduce((s, l) => s + Number(l.entries), 0);
    const r1 = await reconcile(db.pool, await expectedRowsOf(frames.slice(0, entries1)));
    expect(r1).toMatchObject({ lost: 0, unexpected: 0, duplicated: 0, valueMismatches: 0 });
    expect((await groupState(redis, keys.raw, GROUP)).pending).toBeGreaterThan(0); // the 3rd batch

    // 2: same consumer, re-reads its pending entries first; dies after its 2nd COMMIT, before XACK
    const w2 = spawnService(
      "can-worker",
      env({ CEA_BATCH_SIZE: 500, CEA_FAULT_KILL_AFTER_COMMIT: 2, CEA_HEALTH_TTL_S: 2 }),
    );
    expect(await w2.waitExit(60_000)).toEqual({ code: null, signal: "SIGKILL" });
    expect(w2.logs.filter((l) => l.msg === "batch committed").length).toBe(1);
    const rows2 = await rows();
    expect(rows2).toBeGreaterThan(r1.stored);
    const r2 = await reconcile(db.pool, expected);
    expect(r2).toMatchObject({ unexpected: 0, duplicated: 0, valueMismatches: 0 });
    expect((await groupState(redis, keys.raw, GROUP)).pending).toBeGreaterThan(0); // committed, never acknowledged

    // a killed worker's health key expires: --check says unhealthy
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await runService("can-worker", env({ CEA_HEALTH_TTL_S: 2 }), ["--check"])).code).toBe(1);

    // 3: a clean run drains everything, then stops on SIGTERM with exit 0
    const w3 = spawnService("can-worker", env({ CEA_BATCH_SIZE: 500, CEA_HEALTH_TTL_S: 2 }));
    await waitDrained(redis, keys.raw, GROUP, 90_000, [w3]);
    const check = await runService("can-worker", env({}), ["--check"]);
    expect(check.code, check.output).toBe(0);
    expect(await w3.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    const committed3 = w3.logs.filter((l) => l.msg === "batch committed");
    // the batch committed before the kill came back and wrote nothing new
    expect(committed3.some((l) => Number(l.inserted) < Number(l.rows))).toBe(true);
    expect(rows2 + committed3.reduce((s, l) => s + Number(l.inserted), 0)).toBe(await rows());

    const r = await reconcile(db.pool, expected);
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    expect(r.stored).toBe(r.expected);
    expect(await groupState(redis, keys.raw, GROUP)).toMatchObject({ pending: 0, undelivered: false });
    expect(await redis.xlen(keys.dead)).toBe(0);
  }, 240_000);

  it("SIGTERM during start-up still exits 0 (nothing read, nothing acked)", async () => {
    const w = spawnService("can-worker", env({}));
    await w.waitForLog((l) => l.msg === "stage chain", 30_000);
    expect(await w.kill("SIGTERM"), w.tail()).toEqual({ code: 0, signal: null });
  }, 60_000);
});
