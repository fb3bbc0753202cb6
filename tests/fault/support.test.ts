import { existsSync } from "node:fs";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { writeMeasurements } from "../../db/measurements.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { type PrivatePg, startPrivatePg } from "../support/private-pg.js";
import { type PrivateRedis, startPrivateRedis } from "../support/private-redis.js";
import { canonicalTime, groupState, readRawStream, reconcile } from "../support/reconcile.js";

// The fault tests' own instruments, checked before they are trusted: private
// instances that really stop, crash and come back with their data, and a
// reconciliation that really finds a lost and an unexpected row.

async function count(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement");
    return rows[0]!.n;
  } finally {
    await c.end();
  }
}

describe("private PostgreSQL", () => {
  let db: PrivatePg | undefined;
  afterAll(() => db?.cleanup());

  it("has the schema and site, keeps committed rows through kill -9 and a fast stop, and cleans up", async () => {
    db = await startPrivatePg({ bindir: inject("pgBindir") });
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const { rows } = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM sensor");
      expect(rows[0]!.n).toBe(65 + 9); // the nodes' sensors (with the applied outputs) and the derived ones
      await c.query("BEGIN");
      await writeMeasurements(c, [{ time: "2026-03-01T00:00:00.000001Z", sensor_id: 101, value: 1.5 }]);
      await c.query("COMMIT");
    } finally {
      await c.end();
    }
    await db.kill9();
    expect(db.running()).toBe(false);
    await expect(count(db.url)).rejects.toThrow();
    await db.start();
    expect(await count(db.url)).toBe(1);
    await db.stop({ mode: "fast" });
    expect(db.running()).toBe(false);
    await db.start();
    expect(await count(db.url)).toBe(1);
    const dir = db.dataDir;
    await db.cleanup();
    expect(existsSync(dir)).toBe(false);
  });
});

describe("private Redis", () => {
  let r: PrivateRedis | undefined;
  let client: Redis | undefined;
  afterAll(async () => {
    client?.disconnect();
    await r?.cleanup();
  });

  it("keeps every write through kill -9 (AOF, fsync always) and SIGTERM, on the same port", async () => {
    r = await startPrivateRedis();
    client = new Redis(r.url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
    client.on("error", () => undefined);
    await client.xadd("s", "*", "n", "1");
    await r.kill9();
    expect(r.running()).toBe(false);
    await r.start();
    expect(await client.xlen("s")).toBe(1);
    await client.xadd("s", "*", "n", "2");
    await r.restart();
    expect(await client.xlen("s")).toBe(2);
    const dir = r.dir;
    client.disconnect();
    await r.cleanup();
    expect(existsSync(dir)).toBe(false);
  });
});

describe("reconcile", () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefix = testPrefix();
  beforeAll(async () => {
    db = await createTestDatabase();
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await db?.drop();
  });

  it("normalizes instants to UTC microseconds", () => {
    expect(canonicalTime("2026-03-01T12:00:00.5Z")).toBe("2026-03-01T12:00:00.500000Z");
    expect(canonicalTime("2026-03-01T13:00:00.123456+01:00")).toBe("2026-03-01T12:00:00.123456Z");
    expect(canonicalTime("2026-03-01T12:00:00Z")).toBe("2026-03-01T12:00:00.000000Z");
    expect(() => canonicalTime("2026-03-01 12:00")).toThrow();
  });

  it("finds exactly one lost, one unexpected and one wrong value in a hand-made case", async () => {
    const expected = [
      { sensor_id: 101, time: "2026-03-01T12:00:00.000001Z", value: 20.25 },
      { sensor_id: 102, time: "2026-03-01T12:00:00.000001Z", value: 18.5 }, // will be lost
      { sensor_id: 101, time: "2026-03-01T12:00:01.000001Z", value: 0.1 + 0.2 },
      { sensor_id: 103, time: "2026-03-01T12:00:01.000001Z", value: 400 },
    ];
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await writeMeasurements(c, [
        expected[0]!,
        expected[2]!,
        { ...expected[3]!, value: 401 }, // wrong value
        { sensor_id: 104, time: "2026-03-01T12:00:00.000001Z", value: 1 }, // unexpected
      ]);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
    const r = await reconcile(db.pool, expected);
    expect(r).toMatchObject({
      expected: 4,
      stored: 4,
      lost: 1,
      unexpected: 1,
      duplicated: 0,
      valueMismatches: 1,
      sentTwice: 0,
    });
    expect(r.samples.lost).toEqual([{ sensor_id: 102, time: "2026-03-01T12:00:00.000001Z", value: 18.5 }]);
    expect(r.samples.unexpected).toEqual([{ sensor_id: 104, time: "2026-03-01T12:00:00.000001Z", stored: 1 }]);
    expect(r.samples.mismatches).toEqual([
      { sensor_id: 103, time: "2026-03-01T12:00:01.000001Z", value: 400, stored: 401 },
    ]);
    // the same expectation given twice counts as sent twice, not as a second expected key
    const again = await reconcile(db.pool, [...expected, expected[0]!]);
    expect(again.sentTwice).toBe(1);
    expect(again.expected).toBe(4);
  });

  it("reads the raw stream back in pages and reports pending and undelivered entries", async () => {
    const stream = `${prefix}can:raw`;
    for (let i = 0; i < 25; i++)
      await redis.xadd(stream, "*", "ts", "2026-03-01T12:00:00.000001Z", "id", "257", "data", "00", "iface", "can0");
    const frames = await readRawStream(redis, stream, 7);
    expect(frames.length).toBe(25);
    expect(new Set(frames.map((f) => f.entryId)).size).toBe(25);
    expect(frames[0]).toMatchObject({ id: 257, data: "00", iface: "can0" });
    expect(await groupState(redis, stream, "g")).toMatchObject({ exists: false, streamLength: 25 });
    await redis.xgroup("CREATE", stream, "g", "0");
    const read = (await redis.xreadgroup("GROUP", "g", "c1", "COUNT", 10, "STREAMS", stream, ">")) as [
      string,
      [string, string[]][],
    ][];
    const ids = read[0]![1].map(([id]) => id);
    expect(await groupState(redis, stream, "g")).toMatchObject({ exists: true, pending: 10, lag: 15, entriesRead: 10 });
    await redis.xack(stream, "g", ...ids);
    expect(await groupState(redis, stream, "g")).toMatchObject({ pending: 0, lag: 15 });
  });
});
