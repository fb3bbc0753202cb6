import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { testPrefix } from "../support/db.js";
import { type PrivatePg, startPrivatePg } from "../support/private-pg.js";
import { killAll, pipelineEnv, spawnService, waitUntil } from "../support/procs.js";
import { expectedRowsOf, groupState, readRawStream, reconcile, stats, waitDrained } from "../support/reconcile.js";

// PostgreSQL goes away under load (a private cluster this test stops and
// starts; Redis is the shared one, under a prefix of this test's own). While it
// is down the scanner keeps appending, the worker acknowledges nothing and
// dead-letters nothing; when it is back every reading arrives.

const GROUP = "can-worker-group";

describe("PostgreSQL stopped under load", () => {
  let pgs: PrivatePg | undefined;
  let redis: Redis;
  let pool: pg.Pool | undefined;
  const prefix = testPrefix();
  const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

  beforeAll(async () => {
    pgs = await startPrivatePg({ bindir: inject("pgBindir") });
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(async () => {
    await killAll();
    await pool?.end();
    const left = await redis.keys(`${prefix}*`);
    if (left.length) await redis.del(...left);
    redis.disconnect();
    await pgs?.cleanup();
  });

  it("acknowledges and dead-letters nothing while it is down, and loses nothing (stop, then kill -9)", async () => {
    const db = pgs!;
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // a failed query while the cluster is down must not crash the test process
    pool.on("error", () => undefined);
    const env = pipelineEnv({
      databaseUrl: db.url,
      redisUrl: inject("redisUrl"),
      prefix,
      extra: {
        CEA_CAN_SOURCE: "simulator",
        CEA_SIM_START: "2026-03-01T00:00:00Z",
        // 60 simulated seconds per second: 3 000 readings/s for 30 s, outage included
        CEA_SIM_SPEED: 60,
        CEA_SIM_DURATION_S: 1_800,
        CEA_BATCH_SIZE: 1_000,
        // keep acknowledged entries so the whole run can be read back at the end
        CEA_STREAM_TRIM_ACKED: 1_000_000,
      },
    });
    await redis.xgroup("CREATE", keys.raw, GROUP, "0", "MKSTREAM");
    const worker = spawnService("can-worker", env);
    const scanner = spawnService("can-scanner", env);
    const rows = async () =>
      (await pool!.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement")).rows[0]!.n;
    await waitUntil("first rows committed", async () => ((await rows()) > 500 ? true : undefined), 60_000, 200);

    await db.stop({ mode: "fast" });
    const acked = (s: { entriesRead: number | null; pending: number }) => (s.entriesRead ?? Number.NaN) - s.pending;
    // an XACK for a COMMIT that completed just before the stop may still be on its way:
    // wait until the health key says the writer is failing, then the count must hold still
    await waitUntil(
      "the worker to report the outage",
      async () => {
        const h = JSON.parse((await redis.get(keys.health("can-worker-1"))) ?? "{}") as {
          problems?: Record<string, string>;
        };
        return h.problems?.["batch-copy"] ? true : undefined;
      },
      30_000,
    );
    const down0 = await groupState(redis, keys.raw, GROUP);
    const appended0 = (await stats(redis, keys.stats("can-scanner"))).appended ?? 0;
    const ackedDuring: number[] = [];
    const deadline = Date.now() + 6_000;
    while (Date.now() < deadline) {
      ackedDuring.push(acked(await groupState(redis, keys.raw, GROUP)));
      await new Promise((r) => setTimeout(r, 100));
    }
    const down1 = await groupState(redis, keys.raw, GROUP);
    const appended1 = (await stats(redis, keys.stats("can-scanner"))).appended ?? 0;
    expect(Number.isFinite(acked(down0))).toBe(true);
    expect(new Set(ackedDuring)).toEqual(new Set([acked(down0)]));
    expect(appended1).toBeGreaterThan(appended0); // the scanner never waits on the database
    expect(down1.pending + (down1.undelivered ? 1 : 0)).toBeGreaterThan(0);
    expect(await redis.xlen(keys.dead)).toBe(0);
    expect(worker.exit, worker.tail(40)).toBeUndefined();

    await db.start();
    // a second outage, this time a crash: kill -9 of the server in the middle of batches
    const n1 = await rows();
    await waitUntil("rows after the restart", async () => ((await rows()) > n1 + 500 ? true : undefined), 60_000, 200);
    await db.kill9();
    await waitUntil(
      "the worker to report the crash",
      async () => {
        const h = JSON.parse((await redis.get(keys.health("can-worker-1"))) ?? "{}") as {
          problems?: Record<string, string>;
        };
        return h.problems?.["batch-copy"] ? true : undefined;
      },
      30_000,
    );
    expect(await redis.xlen(keys.dead)).toBe(0);
    expect(worker.exit, worker.tail(40)).toBeUndefined();
    await db.start();
    expect(await scanner.waitExit(90_000)).toEqual({ code: 0, signal: null });
    await waitDrained(redis, keys.raw, GROUP, 120_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });

    const frames = await readRawStream(redis, keys.raw);
    const st = await stats(redis, keys.stats("can-scanner"));
    expect(frames.length).toBe(st.appended);
    expect(st.dropped_hard_limit ?? 0).toBe(0);
    expect(st.dropped_buffer ?? 0).toBe(0);
    const r = await reconcile(pool, await expectedRowsOf(frames));
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    expect(r.expected).toBeGreaterThan(1_800 * (50 + 3 * 3) - 1); // 50 signals and 9 derived sensors a second
    expect(await redis.xlen(keys.dead)).toBe(0);
  }, 300_000);
});
