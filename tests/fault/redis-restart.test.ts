import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";
import { type PrivateRedis, startPrivateRedis } from "../support/private-redis.js";
import { killAll, pipelineEnv, spawnService, waitUntil } from "../support/procs.js";
import { expectedRowsOf, groupState, readRawStream, reconcile, stats, waitDrained } from "../support/reconcile.js";

// Redis goes away under load (a private, append-only instance this test kills
// and restarts; PostgreSQL is the shared stack's, in a database of this test's
// own). Scanner and worker reconnect and carry on; a consumer group that has
// vanished is re-created by the worker. Everything the scanner counted as
// appended must reach the table; only frames it counted as dropped may miss.

const GROUP = "can-worker-group";

describe("Redis restarted under load", () => {
  let db: TestDatabase;
  let rs: PrivateRedis | undefined;
  let redis: Redis | undefined;
  const prefix = "f:";
  const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

  beforeAll(async () => {
    db = await createTestDatabase();
    rs = await startPrivateRedis();
  });
  afterAll(async () => {
    await killAll();
    redis?.disconnect();
    await rs?.cleanup();
    await db?.drop();
  });

  const rows = async () =>
    (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement")).rows[0]!.n;

  it("kill -9 and SIGTERM restarts, and a deleted group: both reconnect, nothing appended is lost", async () => {
    const server = rs!;
    // commands wait in the client's queue while the server is down
    redis = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    redis.on("error", () => undefined);
    const env = pipelineEnv({
      databaseUrl: db.url,
      redisUrl: server.url,
      prefix,
      extra: {
        CEA_CAN_SOURCE: "simulator",
        CEA_SIM_START: "2026-03-01T00:00:00Z",
        CEA_SIM_SPEED: 60,
        CEA_SIM_DURATION_S: 1_800,
        CEA_BATCH_SIZE: 1_000,
        CEA_STREAM_TRIM_ACKED: 1_000_000,
      },
    });
    const worker = spawnService("can-worker", env);
    const scanner = spawnService("can-scanner", env);
    await waitUntil("first rows committed", async () => ((await rows()) > 500 ? true : undefined), 60_000, 200);

    // 1: crash; the AOF (fsync always) brings back every acknowledged write
    await server.kill9();
    await new Promise((r) => setTimeout(r, 1_500));
    await server.start();
    const n1 = await rows();
    await waitUntil("rows after the crash", async () => ((await rows()) > n1 + 500 ? true : undefined), 60_000, 200);

    // 2: clean restart (SIGTERM writes the AOF out)
    await server.restart();
    const n2 = await rows();
    await waitUntil("rows after the restart", async () => ((await rows()) > n2 + 500 ? true : undefined), 60_000, 200);

    // 3: the group disappears while Redis is up; the worker must re-create it
    await redis.xgroup("DESTROY", keys.raw, GROUP);
    await waitUntil(
      "the group re-created",
      async () => ((await groupState(redis!, keys.raw, GROUP)).exists ? true : undefined),
      30_000,
    );
    expect(worker.exit, worker.tail(40)).toBeUndefined();

    expect(await scanner.waitExit(120_000)).toEqual({ code: 0, signal: null });
    // a re-created group must start from the beginning of the stream (redelivery is
    // harmless, the key is idempotent): one created at "$" would never deliver the
    // entries appended between the deletion and the re-creation, and they would show as lost
    await waitDrained(redis, keys.raw, GROUP, 180_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });

    const frames = await readRawStream(redis, keys.raw);
    const st = await stats(redis, keys.stats("can-scanner"));
    // an XADD whose reply was lost in the crash may be re-sent: the same frame twice in
    // the stream, harmless (same key). The scanner's count lies between the distinct
    // frames and the entries: nothing it counted is missing from the stream.
    const distinct = new Set(frames.map((f) => `${f.id}|${f.ts}`)).size;
    console.info(`redis-restart: appended=${st.appended} entries=${frames.length} distinct frames=${distinct}`);
    expect(st.appended).toBeGreaterThanOrEqual(distinct);
    expect(st.appended).toBeLessThanOrEqual(frames.length);
    expect(st.dropped_hard_limit ?? 0).toBe(0);
    // 1.5 s of outage at ~1 000 frames/s fits the default in-memory buffer (100 000 frames)
    expect(st.dropped_buffer ?? 0).toBe(0);
    const r = await reconcile(db.pool, await expectedRowsOf(frames));
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    // every sensor once per simulated second, nothing missing from the stream either
    // 65 signals (15 of them the actuator nodes' applied outputs) and 9 derived sensors a second
    expect(r.expected).toBe(1_800 * (65 + 3 * 3));
    expect(await redis.xlen(keys.dead)).toBe(0);
  }, 420_000);
});
