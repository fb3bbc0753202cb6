import type { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { chain } from "../../pipeline/runtime/stage.js";
import { appendEntries, pendingCount } from "../../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../../pipeline/runtime/worker.js";
import { workerStages } from "../../stages/chains.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { startTestWorker, testConfig, waitFor } from "./pipeline-helpers.js";

// The derived stage in the product's worker chain, on the real stack, with the
// facility's site file (ops/site.json: the Flower Room's derived sensors 911
// air VPD, 912 leaf VPD with leaf offset −2 °C, 913 dew point, from node 1's
// dry bulb 101 and rh 103, both in the Climate_N1 frame 0x101).
//
// Hand-computed values (FAO-56 eq. 11; e° from FAO-56 Annex 2 Table 2.3):
//   25 °C, 60 %: e°(25) = 3.168, ea = 1.9008 → air 1.2672, leaf e°(23) 2.809 − 1.9008 = 0.9082, dew point 16.70 °C
//   20 °C, 50 %: e°(20) = 2.338, ea = 1.169  → air 1.169,  leaf e°(18) 2.064 − 1.169 = 0.895,   dew point 9.27 °C

const AIR = 911;
const LEAF = 912;
const DEW = 913;

/** A Climate_N1 payload: dry bulb, wet bulb, rh, dew point, int16/uint16 little-endian × 0.01. */
function climate(t: number, rh: number): string {
  const b = Buffer.alloc(8);
  b.writeInt16LE(Math.round(t * 100), 0);
  b.writeInt16LE(Math.round((t - 3) * 100), 2);
  b.writeUInt16LE(Math.round(rh * 100), 4);
  b.writeInt16LE(Math.round((t - 8) * 100), 6);
  return b.toString("hex");
}

const frame = (sec: number, t: number, rh: number, src?: "replay" | "simulator") => ({
  ts: `2024-06-01T10:00:${String(sec).padStart(2, "0")}.000000Z`,
  id: 0x101,
  data: climate(t, rh),
  iface: "can0",
  ...(src ? { src } : {}),
});

let db: TestDatabase;
let redis: Redis;
let prefix: string;
const prefixes: string[] = [];
const keys = () => redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

interface Stored {
  sensor: number;
  sec: number;
  value: number;
  status: string | null;
}

async function derivedRows(): Promise<Stored[]> {
  const { rows } = await db.pool.query<Stored>(
    `SELECT sensor_id AS sensor, extract(second FROM time)::int AS sec, value, status FROM measurement
     WHERE sensor_id = ANY($1::int[]) ORDER BY time, sensor_id`,
    [[AIR, LEAF, DEW]],
  );
  return rows;
}

function near(got: Stored[], sensor: number, sec: number, want: number, tol: number) {
  const r = got.find((x) => x.sensor === sensor && x.sec === sec);
  expect(r, `sensor ${sensor} at second ${sec}`).toBeDefined();
  expect(Math.abs(r!.value - want), `sensor ${sensor} at second ${sec}: ${r!.value} vs ${want}`).toBeLessThan(tol);
}

beforeAll(async () => {
  db = await createTestDatabase();
  redis = createRedis(inject("redisUrl"));
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

describe("derived stage on the worker chain", () => {
  it("the site sync made the derived sensors, with their kinds, on a virtual device of their room", async () => {
    const { rows } = await db.pool.query(
      `SELECT s.sensor_id, s.kind, s.unit, d.device_type, d.node_id, d.room_id FROM sensor s JOIN device d USING (device_id)
       WHERE s.sensor_id = ANY($1::int[]) ORDER BY s.sensor_id`,
      [[AIR, LEAF, DEW]],
    );
    expect(rows).toEqual([
      { sensor_id: AIR, kind: "air_vpd", unit: "kPa", device_type: "derived", node_id: null, room_id: 1 },
      { sensor_id: LEAF, kind: "leaf_vpd", unit: "kPa", device_type: "derived", node_id: null, room_id: 1 },
      { sensor_id: DEW, kind: "dew_point", unit: "°C", device_type: "derived", node_id: null, room_id: 1 },
    ]);
  });

  it("frames → one row per derived sensor per input time with the hand-computed values; out_of_range input makes none", async () => {
    await appendEntries(redis, keys().raw, [
      frame(0, 25, 60),
      frame(1, 20, 50),
      frame(2, 22, 100.5), // rh above the CAN database's max 100: out_of_range
      frame(3, 25, 60),
    ]);
    const w = await startTestWorker(testConfig(db.url, prefix));
    try {
      await waitFor("all acknowledged", async () => {
        return w.handle.stats.entries >= 4 && (await pendingCount(redis, keys().raw, "can-worker-group")) === 0;
      });
    } finally {
      await w.stop();
    }
    const got = await derivedRows();
    expect(got.map((r) => [r.sec, r.sensor, r.status])).toEqual(
      [0, 1, 3].flatMap((s) => [AIR, LEAF, DEW].map((id) => [s, id, null])),
    );
    near(got, AIR, 0, 1.2672, 0.0005);
    near(got, LEAF, 0, 0.9082, 0.001);
    near(got, DEW, 0, 16.7, 0.01);
    near(got, AIR, 1, 1.169, 0.0005);
    near(got, LEAF, 1, 0.895, 0.001);
    near(got, DEW, 1, 9.27, 0.01);
    // the out_of_range rh itself is stored as such; nothing derived from it
    const { rows } = await db.pool.query(
      "SELECT status FROM measurement WHERE sensor_id = 103 AND extract(second FROM time) = 2",
    );
    expect(rows).toEqual([{ status: "out_of_range" }]);
    expect(w.counters("derived")).toMatchObject({ derived: 3, rows: 9, outOfRange: 1 });
  });

  it("replayed and simulated inputs keep their provenance in the derived rows", async () => {
    await appendEntries(redis, keys().raw, [frame(10, 25, 60, "replay"), frame(11, 25, 60, "simulator")]);
    const w = await startTestWorker(testConfig(db.url, prefix));
    try {
      await waitFor("all acknowledged", async () => {
        return w.handle.stats.entries >= 2 && (await pendingCount(redis, keys().raw, "can-worker-group")) === 0;
      });
    } finally {
      await w.stop();
    }
    const got = await derivedRows();
    expect(got.map((r) => [r.sec, r.sensor, r.status])).toEqual([
      ...[AIR, LEAF, DEW].map((id) => [10, id, "replayed"]),
      ...[AIR, LEAF, DEW].map((id) => [11, id, "simulated"]),
    ]);
    near(got, AIR, 10, 1.2672, 0.0005);
  });

  it("a redelivered batch (committed, never acknowledged) writes nothing new: one value per room per input time", async () => {
    const entries = Array.from({ length: 20 }, (_, s) => frame(20 + s, 18 + s / 4, 40 + s));
    await appendEntries(redis, keys().raw, entries);
    // first delivery: committed but never acknowledged (the product chain without its ack stage)
    const noAck = await startTestWorker(testConfig(db.url, prefix, { CEA_CONSUMER: "w1" }), (d) => {
      const s = workerStages(d);
      return chain(RAW_ENTRIES).pipe(s.decode).pipe(s.resolveSensor).pipe(s.derived).pipe(s.batchCopy);
    });
    try {
      await waitFor("first delivery", () => noAck.handle.stats.entries >= entries.length);
    } finally {
      await noAck.stop();
    }
    const first = await derivedRows();
    expect(first).toHaveLength(20 * 3);
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(20);
    // the same entries again: claimed by another consumer, processed by the full chain
    const again = await startTestWorker(testConfig(db.url, prefix, { CEA_CONSUMER: "w2", CEA_CLAIM_IDLE_MS: "1" }));
    try {
      await waitFor(
        "redelivery acknowledged",
        async () => (await pendingCount(redis, keys().raw, "can-worker-group")) === 0,
      );
    } finally {
      await again.stop();
    }
    // derived again on every delivery (a claim may hand an entry over more than once), stored once
    expect(again.counters("derived").derived).toBeGreaterThanOrEqual(20);
    expect(again.counters("batch-copy")).toMatchObject({ inserted: 0 });
    expect(await derivedRows()).toEqual(first);
    const { rows } = await db.pool.query(
      "SELECT count(*)::int AS n, count(DISTINCT (sensor_id, time))::int AS keys FROM measurement",
    );
    expect(rows).toEqual([{ n: 20 * 7, keys: 20 * 7 }]); // 4 signals of Climate_N1 + 3 derived, once each
  });
});
