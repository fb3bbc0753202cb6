import type { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { queuesAggregates, writeReadings } from "../../db/measurements.js";
import { loadSite } from "../../db/site.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import type { DecodeTable } from "../../pipeline/can/table.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { appendEntries, pendingCount } from "../../pipeline/runtime/stream.js";
import { createTestDatabase, isCommunity, type TestDatabase, testPrefix } from "../support/db.js";
import {
  asEntry,
  readingsOf,
  reconcile,
  SIM_ROWS_PER_SECOND,
  siteTable,
  startTestWorker,
  testConfig,
  waitFor,
} from "./pipeline-helpers.js";

// The can-worker's fast write path (db/measurements.ts writeReadings): binary
// COPY straight into `measurement`, falling back to staging + ON CONFLICT when
// the batch holds a stored key, and the aggregate queue filled from the
// buckets computed while decoding.

let db: TestDatabase;
let redis: Redis;
let table: DecodeTable;
let prefix: string;
const prefixes: string[] = [];

type Entry = ReturnType<typeof asEntry>;

async function simEntries(seconds: number, startIso: string): Promise<Entry[]> {
  const site = await loadSite(projectPath("ops/site.json"));
  const opts = { table, site, startMs: Date.parse(startIso), speed: 1, iface: "sim0" };
  return Array.from({ length: seconds }, (_, k) => simulatedSecond(opts, k))
    .flat()
    .map(asEntry);
}

const decode = (entries: readonly Entry[]) => readingsOf(table, entries);

/** Distinct (sensor, hour) pairs as "sensor|epoch seconds" keys. */
async function queued(): Promise<string[]> {
  const { rows } = await db.pool.query<{ k: string }>(
    "SELECT DISTINCT sensor_id || '|' || extract(epoch FROM bucket)::bigint AS k FROM measurement_agg_pending ORDER BY 1",
  );
  return rows.map((r) => r.k);
}
async function touched(): Promise<string[]> {
  const { rows } = await db.pool.query<{ k: string }>(
    `SELECT DISTINCT sensor_id || '|' || extract(epoch FROM time_bucket(INTERVAL '1 hour', time))::bigint AS k
     FROM measurement ORDER BY 1`,
  );
  return rows.map((r) => r.k);
}

const cfg = (extra: Record<string, string> = {}) => testConfig(db.url, prefix, extra);
const keys = () => redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

beforeAll(async () => {
  db = await createTestDatabase();
  redis = createRedis(inject("redisUrl"));
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
  await db.pool.query("DELETE FROM measurement_agg_pending");
});

describe("fast write path", () => {
  it("asks the edition once: queues buckets on the Apache edition only", async () => {
    expect(await queuesAggregates(db.pool)).toBe(!isCommunity());
  });

  it("a new batch is COPYed directly; one holding a stored key takes the fallback and stores nothing twice", async () => {
    const queue = await queuesAggregates(db.pool);
    const first = await simEntries(600, "2024-03-10T22:55:00Z"); // hours 22 and 23
    const out1 = decode(first);
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      const r1 = await writeReadings(c, out1, queue);
      await c.query("COMMIT");
      expect(r1).toEqual({ inserted: out1.count, fast: true });

      // the last 100 s again (a redelivery) followed by 100 new seconds in hour 01
      const second = [...first.slice(-1_500), ...(await simEntries(100, "2024-03-11T01:05:00Z"))];
      await c.query("BEGIN");
      const r2 = await writeReadings(c, decode(second), queue);
      await c.query("COMMIT");
      expect(r2).toEqual({ inserted: 100 * SIM_ROWS_PER_SECOND, fast: false });
      expect(await reconcile(db.pool, table, [...first, ...second])).toEqual({
        expected: 700 * SIM_ROWS_PER_SECOND,
        stored: 700 * SIM_ROWS_PER_SECOND,
        lost: 0,
        duplicated: 0,
        unexpected: 0,
        wrongValue: 0,
      });
    } finally {
      c.release();
    }
    if (queue) {
      // exactly the touched buckets: those of the direct COPY and those of the fallback's new rows
      expect(await queued()).toEqual(await touched());
      expect((await touched()).length).toBe(SIM_ROWS_PER_SECOND * 3);
    } else {
      expect(await queued()).toEqual([]);
    }
  });

  it("statuses travel with the rows on both paths (simulated, replayed, NULL)", async () => {
    const entries = await simEntries(4, "2024-03-13T00:00:00Z");
    const mixed = entries.map((e, i) => ({
      ...e,
      ...(i % 3 === 0 ? {} : { src: i % 3 === 1 ? "simulator" : "replay" }),
    }));
    const cols = decode(mixed);
    const c = await db.pool.connect();
    try {
      for (const round of [1, 2]) {
        await c.query("BEGIN");
        const r = await writeReadings(c, cols, false);
        await c.query("COMMIT");
        expect(r.fast).toBe(round === 1);
      }
    } finally {
      c.release();
    }
    const { rows } = await db.pool.query<{ status: string | null; n: number }>(
      "SELECT status, count(*)::int AS n FROM measurement GROUP BY 1 ORDER BY 1 NULLS FIRST",
    );
    const want = new Map<string | null, number>();
    for (const e of mixed) {
      const n = decode([e]).count;
      const st = e.src === "simulator" ? "simulated" : e.src === "replay" ? "replayed" : null;
      want.set(st, (want.get(st) ?? 0) + n);
    }
    expect(rows.map((r) => [r.status, r.n])).toEqual([null, "replayed", "simulated"].map((k) => [k, want.get(k)]));
  });

  it("a failed direct COPY of another kind (not a duplicate) is not taken for a redelivery", async () => {
    const entries = await simEntries(10, "2024-03-12T00:00:00Z");
    const bad = decode(entries);
    // the same rows with one against a sensor that does not exist: a foreign-key violation must surface
    bad.sensor[0] = 999_999;
    const c = await db.pool.connect();
    try {
      await c.query("BEGIN");
      await expect(writeReadings(c, bad, false)).rejects.toMatchObject({
        code: "23503",
      });
      await c.query("ROLLBACK");
    } finally {
      c.release();
    }
    expect((await db.pool.query("SELECT count(*)::int AS n FROM measurement")).rows[0].n).toBe(0);
  });
});

describe("can-worker on the fast path", () => {
  it("a redelivered entry inside a batch: fallback, nothing stored twice, queue = touched buckets, hourly = raw", async () => {
    // a scanner that re-sent a chunk after a lost connection: entries 1 000..1 499 appear twice,
    // the copies in later batches that also hold new entries; two batches are written at once
    const entries = await simEntries(400, "2024-05-05T23:57:00Z"); // 6 000 frames, 400 s of rows, two hours
    const resent = [...entries.slice(0, 2_000), ...entries.slice(1_000, 1_500), ...entries.slice(2_000)];
    await appendEntries(redis, keys().raw, resent);
    const w = await startTestWorker(
      cfg({ CEA_DECODE_THREADS: "0", CEA_BATCH_SIZE: "700", CEA_WRITE_CONCURRENCY: "2" }),
    );
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= resent.length);
    } finally {
      await w.stop();
    }
    expect(w.counters("batch-copy").fallbacks).toBeGreaterThanOrEqual(1);
    expect(w.counters("batch-copy").inserted).toBe(400 * SIM_ROWS_PER_SECOND);
    expect(w.counters("batch-copy").rows).toBe(400 * SIM_ROWS_PER_SECOND + decode(entries.slice(1_000, 1_500)).count);
    expect(await reconcile(db.pool, table, entries)).toEqual({
      expected: 400 * SIM_ROWS_PER_SECOND,
      stored: 400 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    expect(await redis.xlen(keys().dead)).toBe(0);

    if (isCommunity()) {
      expect(await queued()).toEqual([]);
      return;
    }
    expect(await queued()).toEqual(await touched());
    expect((await queued()).length).toBe(SIM_ROWS_PER_SECOND * 2);
    await db.pool.query("SELECT cea_refresh_aggregates()");
    // every raw hour has its aggregate row and nothing else is there; avg compared to rounding (summation order)
    const { rows: diff } = await db.pool.query(
      `WITH raw AS (
         SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, sensor_id,
                min(value) AS min_value, max(value) AS max_value, avg(value) AS avg_value, count(*) AS sample_count
         FROM measurement GROUP BY 1, 2)
       SELECT raw.bucket, raw.sensor_id, h.bucket AS h_bucket, h.sensor_id AS h_sensor
       FROM raw FULL JOIN measurement_hourly h ON h.bucket = raw.bucket AND h.sensor_id = raw.sensor_id
       WHERE raw.bucket IS NULL OR h.bucket IS NULL
          OR h.min_value <> raw.min_value OR h.max_value <> raw.max_value OR h.sample_count <> raw.sample_count
          OR abs(h.avg_value - raw.avg_value) > 1e-9 * greatest(1, abs(raw.avg_value))`,
    );
    expect(diff).toEqual([]);
    expect((await db.pool.query("SELECT count(*)::int AS n FROM measurement_hourly")).rows[0].n).toBe(
      SIM_ROWS_PER_SECOND * 2,
    );
  });

  it("a row the database rejects on the binary path: its entry is dead-lettered by splitting, the rest committed", async () => {
    const entries = await simEntries(100, "2024-05-06T10:00:00Z"); // 1 500 frames
    // a sensor removed from the database after the worker loaded its map: the frames carrying it now fail the key
    const victim = 510;
    const { rows: saved } = await db.pool.query("SELECT * FROM sensor WHERE sensor_id = $1", [victim]);
    expect(saved.length).toBe(1);
    const w = await startTestWorker(cfg({ CEA_DECODE_THREADS: "2", CEA_BATCH_SIZE: "5000" }));
    try {
      await db.pool.query("DELETE FROM sensor WHERE sensor_id = $1", [victim]);
      await appendEntries(redis, keys().raw, entries);
      // about a thousand small transactions while splitting: slow on a loaded 2-core machine (~20 s idle)
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length, 120_000);
    } finally {
      await w.stop();
      const cols = Object.keys(saved[0]);
      await db.pool.query(
        `INSERT INTO sensor (${cols.join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")})`,
        cols.map((k) => saved[0][k]),
      );
    }
    const withVictim = entries.filter((e) => hasSensor(e, victim));
    expect(withVictim.length).toBe(100);
    expect(w.handle.stats.dead).toBe(100);
    const r = await reconcile(
      db.pool,
      table,
      entries.filter((e) => !withVictim.includes(e)),
    );
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, wrongValue: 0 });
    const reasons = (await redis.xrange(keys().dead, "-", "+")).map(([, f]) => f[f.indexOf("reason") + 1]);
    expect(reasons.length).toBe(100);
    expect(reasons.every((x) => /rejected by the database: .*foreign key.*\(23503\)/.test(x ?? ""))).toBe(true);
  }, 180_000);
});

function hasSensor(e: Entry, sensor: number): boolean {
  return decode([e]).sensor.includes(sensor);
}
