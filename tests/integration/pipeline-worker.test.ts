import type { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import type { DecodeTable } from "../../pipeline/can/table.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { chain } from "../../pipeline/runtime/stage.js";
import { appendEntries, ensureGroup, pendingCount, readGroup } from "../../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../../pipeline/runtime/worker.js";
import { workerStages } from "../../stages/chains.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import {
  asEntry,
  reconcile,
  SIM_ROWS_PER_SECOND,
  siteTable,
  startTestWorker,
  testConfig,
  waitFor,
} from "./pipeline-helpers.js";

// The can-worker runtime on the real stack (in-process workers; the compiled
// entry points are exercised by the demo test and by the fault tests).

let db: TestDatabase;
let redis: Redis;
let table: DecodeTable;
let prefix: string;
const prefixes: string[] = [];

async function simEntries(seconds: number, startIso = "2024-06-01T00:00:00Z") {
  const site = await loadSite(projectPath("ops/site.json"));
  const opts = { table, site, startMs: Date.parse(startIso), speed: 1, iface: "sim0" };
  return Array.from({ length: seconds }, (_, k) => simulatedSecond(opts, k))
    .flat()
    .map(asEntry);
}

const cfg = (extra: Record<string, string> = {}) => testConfig(db.url, prefix, extra);
const keys = () => redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

beforeAll(async () => {
  db = await createTestDatabase();
  redis = createRedis((await import("vitest")).inject("redisUrl"));
  table = await siteTable();
});
afterAll(async () => {
  for (const p of prefixes) {
    const ks = await redis.keys(`${p}*`);
    if (ks.length) await redis.del(...ks);
  }
  await redis.quit();
  await db?.drop();
});
beforeEach(async () => {
  prefix = testPrefix();
  prefixes.push(prefix);
  await db.pool.query("TRUNCATE measurement");
});

describe("can-worker", () => {
  it("simulated frames end to end on the decode pool: every value and time exact, nothing pending", async () => {
    const entries = await simEntries(600); // 9 000 frames, 600 s of rows
    await appendEntries(redis, keys().raw, entries);
    const w = await startTestWorker(cfg({ CEA_DECODE_THREADS: "2", CEA_BATCH_SIZE: "1000" }));
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    const r = await reconcile(db.pool, table, entries);
    expect(r).toEqual({
      expected: 600 * SIM_ROWS_PER_SECOND,
      stored: 600 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    expect(w.handle.stats.batches).toBeGreaterThanOrEqual(9);
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    expect(await redis.xlen(keys().dead)).toBe(0);
  });

  it("one poison frame inside a large batch is dead-lettered with reason and original id; the rest is committed", async () => {
    const good = await simEntries(200); // 3 000 frames
    const poison = [
      { ts: "2024-06-01T00:01:00.000000Z", id: 0x6ff, data: "0102030405060708", iface: "sim0" },
      { ts: "2024-06-01T00:01:00.000000Z", id: 0x101, data: "01", iface: "sim0" },
    ];
    const entries = [...good.slice(0, 1500), poison[0]!, ...good.slice(1500, 2200), poison[1]!, ...good.slice(2200)];
    const ids = await appendEntries(redis, keys().raw, entries);
    const w = await startTestWorker(cfg({ CEA_DECODE_THREADS: "0", CEA_BATCH_SIZE: "5000" }));
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    expect(w.handle.stats.batches).toBe(1);
    const r = await reconcile(db.pool, table, entries);
    expect(r).toMatchObject({
      expected: 200 * SIM_ROWS_PER_SECOND,
      stored: 200 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    const dead = await redis.xrange(keys().dead, "-", "+");
    const asObj = dead.map(([, f]) =>
      Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])),
    );
    expect(asObj).toEqual([
      {
        orig_id: ids[1500],
        reason: "unknown arbitration id 0x6ff",
        deliveries: "1",
        cause: "unknown-id:0x6ff",
        ...poison[0],
        id: String(0x6ff),
      },
      {
        orig_id: ids[2201],
        reason: "data length 1 < 8 bytes of Climate_N1",
        deliveries: "1",
        ...poison[1],
        id: String(0x101),
      },
    ]);
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    expect(await redis.hget(keys().stats("can-worker-1"), "dead_lettered")).toBe("2");
  });

  it("the same entry delivered twice and the same key twice in one batch write nothing new and raise no error", async () => {
    const entries = await simEntries(40); // 600 frames, 40 s of rows
    // first delivery: committed but never acked (the product chain without the ack stage)
    await appendEntries(redis, keys().raw, entries);
    const noAck = await startTestWorker(cfg({ CEA_DECODE_THREADS: "0" }), (d) => {
      const s = workerStages(d);
      return chain(RAW_ENTRIES).pipe(s.decode).pipe(s.resolveSensor).pipe(s.derived).pipe(s.batchCopy);
    });
    try {
      await waitFor("first delivery", () => noAck.handle.stats.entries >= entries.length);
    } finally {
      await noAck.stop();
    }
    expect(noAck.counters("batch-copy").inserted).toBe(40 * SIM_ROWS_PER_SECOND);
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(600);
    // second delivery of the same entries to the same consumer (own pending first), plus every frame
    // appended again twice in a row, so that one batch holds the same key twice
    const twice = entries.flatMap((e) => [e, e]);
    await appendEntries(redis, keys().raw, twice);
    const w = await startTestWorker(cfg({ CEA_DECODE_THREADS: "2", CEA_BATCH_SIZE: "5000" }));
    try {
      await waitFor("redelivery", () => w.handle.stats.entries >= entries.length + twice.length);
    } finally {
      await w.stop();
    }
    expect(w.counters("batch-copy").inserted).toBe(0);
    expect(w.counters("batch-copy").rows).toBe(40 * SIM_ROWS_PER_SECOND * 3);
    expect(w.handle.stats.dead).toBe(0);
    const r = await reconcile(db.pool, table, entries);
    expect(r).toEqual({
      expected: 40 * SIM_ROWS_PER_SECOND,
      stored: 40 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    expect(await redis.xlen(keys().dead)).toBe(0);
  });

  it("two workers in one group: 0 lost, 0 duplicated, both did work", async () => {
    const entries = await simEntries(1000); // 15 000 frames
    await appendEntries(redis, keys().raw, entries);
    const opts = { CEA_DECODE_THREADS: "0", CEA_BATCH_SIZE: "500" };
    const [a, b] = await Promise.all([
      startTestWorker(cfg({ ...opts, CEA_CONSUMER: "w-a" })),
      startTestWorker(cfg({ ...opts, CEA_CONSUMER: "w-b" })),
    ]);
    try {
      await waitFor("all entries", () => a!.handle.stats.entries + b!.handle.stats.entries >= entries.length);
    } finally {
      await Promise.all([a!.stop(), b!.stop()]);
    }
    expect(a!.handle.stats.entries).toBeGreaterThan(0);
    expect(b!.handle.stats.entries).toBeGreaterThan(0);
    expect(a!.handle.stats.entries + b!.handle.stats.entries).toBe(entries.length);
    const r = await reconcile(db.pool, table, entries);
    expect(r).toEqual({
      expected: 1000 * SIM_ROWS_PER_SECOND,
      stored: 1000 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
  });

  it("entries a consumer read and left pending are claimed by another (XPENDING IDLE + XCLAIM) and committed", async () => {
    const entries = await simEntries(100); // 1 500 frames
    await appendEntries(redis, keys().raw, entries);
    await ensureGroup(redis, keys().raw, "can-worker-group");
    const taken = await readGroup(redis, keys().raw, "can-worker-group", "gone-away", ">", 400, null);
    expect(taken.ids.length).toBe(400);
    const w = await startTestWorker(
      cfg({ CEA_DECODE_THREADS: "0", CEA_CLAIM_IDLE_MS: "1000", CEA_CONSUMER: "survivor" }),
    );
    try {
      await waitFor("claim", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    expect(w.handle.stats.claimed).toBe(400);
    const r = await reconcile(db.pool, table, entries);
    expect(r).toEqual({
      expected: 100 * SIM_ROWS_PER_SECOND,
      stored: 100 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    expect(await redis.xlen(keys().dead)).toBe(0);
  });
});
