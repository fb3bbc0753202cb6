import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { statusCode } from "../../db/readings.js";
import { loadSite } from "../../db/site.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { chain, noOptions, type StageSpec, use } from "../../pipeline/runtime/stage.js";
import { appendEntries, pendingCount } from "../../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../../pipeline/runtime/worker.js";
import { WRITTEN_BATCH, type WrittenBatch } from "../../stages/batch-copy.js";
import { workerStages } from "../../stages/chains.js";
import { expectedRows } from "../../stages/expected.js";
import { SENSOR_READINGS, type SensorReadings } from "../../stages/resolve-sensor.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { asEntry, siteTable, startTestWorker, testConfig, waitFor } from "./pipeline-helpers.js";

// The stage model on the real stack: a derived stage joins the chain by being
// listed (the runtime is not touched), a stage is replaced by another with the
// same ports, and a chain whose links do not connect is refused at start-up.

const DRY_BULB = 101;
const RH = 103;
const DERIVED = 901; // a sensor this test adds: VPD computed from dry bulb + rh of node 1

const vpdOf = (t: number, rh: number) => 0.6108 * Math.exp((17.27 * t) / (t + 237.3)) * (1 - rh / 100);

/** Sensor readings in, the same readings plus a VPD row per Climate_N1 frame out (into the same batch). */
const derivedVpd: StageSpec<SensorReadings, SensorReadings> = {
  name: "derived-vpd",
  consumes: SENSOR_READINGS,
  emits: SENSOR_READINGS,
  options: noOptions,
  failure: { classify: () => "fatal", describe: String, backoff: { baseMs: 10, maxMs: 10 } },
  create() {
    return {
      process(_batch, input) {
        const rows = input.rows;
        const t = new Map<number, number>();
        const rh = new Map<number, number>();
        const time = new Map<number, number>();
        const n = rows.count; // the loop adds rows: only the resolved ones are read
        for (let r = 0; r < n; r++) {
          if (rows.sensor[r] === DRY_BULB) t.set(rows.entry[r]!, rows.value[r]!);
          if (rows.sensor[r] === RH) rh.set(rows.entry[r]!, rows.value[r]!);
          time.set(rows.entry[r]!, rows.timeUs[r]!);
        }
        for (const [e, temp] of t) {
          const h = rh.get(e);
          if (h !== undefined) rows.push(e, DERIVED, time.get(e)!, vpdOf(temp, h), statusCode(null));
        }
        return input;
      },
    };
  },
};

describe("stage model", () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefixes: string[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
    redis = createRedis(inject("redisUrl"));
    await db.pool.query(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES ($1, 1, 'vpd_calc_b', 'kPa', 90)",
      [DERIVED],
    );
  });
  afterAll(async () => {
    for (const p of prefixes) {
      const ks = await redis.keys(`${p}*`);
      if (ks.length) await redis.del(...ks);
    }
    await redis.quit();
    await db?.drop();
  });

  async function simulated(seconds: number, start: string) {
    const table = await siteTable();
    const site = await loadSite(projectPath("ops/site.json"));
    const opts = { table, site, startMs: Date.parse(start), speed: 1, iface: "sim0" };
    return Array.from({ length: seconds }, (_, k) => simulatedSecond(opts, k))
      .flat()
      .map(asEntry);
  }

  it("an added stage (derived VPD) reaches the writer without any change to the runtime", async () => {
    const table = await siteTable();
    const entries = await simulated(120, "2024-07-01T10:00:00Z");
    const prefix = testPrefix();
    prefixes.push(prefix);
    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    await appendEntries(redis, keys.raw, entries);
    const w = await startTestWorker(
      testConfig(db.url, prefix, { CEA_DECODE_THREADS: "2", CEA_BATCH_SIZE: "500" }),
      (d) => {
        const s = workerStages(d);
        // between resolve-sensor and batch-copy: listed, nothing else changes
        return chain(RAW_ENTRIES)
          .pipe(s.decode)
          .pipe(s.resolveSensor)
          .pipe(use(derivedVpd, {}))
          .pipe(s.batchCopy)
          .pipe(s.ack);
      },
    );
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    // expected: one derived row per Climate_N1 frame, from that frame's own dry bulb and rh
    const want = new Map<string, number>();
    for (const e of entries.filter((x) => x.id === 0x101)) {
      const rows = expectedRows(table, e);
      const t = rows.find((r) => r.sensor_id === DRY_BULB)!.value;
      const h = rows.find((r) => r.sensor_id === RH)!.value;
      want.set(e.ts, vpdOf(t, h));
    }
    const { rows } = await db.pool.query<{ time: string; value: number }>(
      `SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time, value FROM measurement WHERE sensor_id = $1`,
      [DERIVED],
    );
    expect(rows.length).toBe(120);
    expect(new Map(rows.map((r) => [r.time, r.value]))).toEqual(want);
    const total = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement");
    expect(total.rows[0]!.n).toBe(120 * 50 + 120);
    expect(await pendingCount(redis, keys.raw, "can-worker-group")).toBe(0);
  });

  it("a stage replaced by another with the same ports: two batches in a concurrency-2 writer at once, acks in batch order and each after its commit", async () => {
    const entries = await simulated(60, "2024-07-02T10:00:00Z");
    const prefix = testPrefix();
    prefixes.push(prefix);
    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    await appendEntries(redis, keys.raw, entries);
    const events: string[] = [];
    let inside = 0;
    let most = 0;
    let bothInside!: () => void;
    const both = new Promise<void>((r) => {
      bothInside = r;
    });
    const failure = { classify: () => "fatal" as const, describe: String, backoff: { baseMs: 10, maxMs: 10 } };
    // stands in for batch-copy: the first batch waits until the second is inside too (never, with concurrency 1)
    const writer: StageSpec<SensorReadings, WrittenBatch> = {
      name: "test-writer",
      consumes: SENSOR_READINGS,
      emits: WRITTEN_BATCH,
      sequential: true,
      options: noOptions,
      failure,
      create: () => ({
        concurrency: 2,
        async process(batch, input) {
          inside++;
          most = Math.max(most, inside);
          events.push(`in ${batch.seq}`);
          if (inside === 2) bothInside();
          if (batch.seq === 1)
            await Promise.race([
              both,
              new Promise((_, no) => setTimeout(() => no(new Error("alone in the writer")), 20_000)),
            ]);
          events.push(`committed ${batch.seq}`);
          inside--;
          return { rows: input.rows.count, inserted: 0 };
        },
      }),
    };
    const recorder: StageSpec<WrittenBatch, WrittenBatch> = {
      name: "test-recorder",
      consumes: WRITTEN_BATCH,
      emits: WRITTEN_BATCH,
      sequential: true,
      options: noOptions,
      failure,
      create: () => ({
        process(batch, input) {
          events.push(`acked ${batch.seq}`);
          return input;
        },
      }),
    };
    const w = await startTestWorker(
      testConfig(db.url, prefix, { CEA_DECODE_THREADS: "0", CEA_BATCH_SIZE: "100" }),
      (d) => {
        const s = workerStages(d);
        return chain(RAW_ENTRIES)
          .pipe(s.decode)
          .pipe(s.resolveSensor)
          .pipe(use(writer, {}))
          .pipe(use(recorder, {}))
          .pipe(s.ack);
      },
    );
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    expect(most).toBe(2);
    expect(events.slice(0, 2)).toEqual(["in 1", "in 2"]);
    const acked = events.filter((e) => e.startsWith("acked")).map((e) => Number(e.split(" ")[1]));
    expect(acked).toEqual(Array.from({ length: 9 }, (_, i) => i + 1));
    for (const n of acked) expect(events.indexOf(`committed ${n}`)).toBeLessThan(events.indexOf(`acked ${n}`));
    expect(await pendingCount(redis, keys.raw, "can-worker-group")).toBe(0);
    // the replaced writer wrote nothing: the table holds no row of these frames
    expect(
      (await db.pool.query("SELECT count(*)::int AS n FROM measurement WHERE time >= '2024-07-02'")).rows[0].n,
    ).toBe(0);
  });

  it("a wrong chain (the derived stage after the writer) is refused at start-up, naming both ends", async () => {
    const prefix = testPrefix();
    prefixes.push(prefix);
    await expect(
      startTestWorker(testConfig(db.url, prefix), (d) => {
        const s = workerStages(d);
        const stages = [s.decode, s.resolveSensor, s.batchCopy, use(derivedVpd, {}), s.ack];
        return { input: RAW_ENTRIES, stages, pipe: () => never() } as never;
      }),
    ).rejects.toThrow(
      'wrong stage chain: stage "derived-vpd" consumes "sensor-readings" but stage "batch-copy" emits "written-batch"',
    );
    // refused before anything was read: no consumer group was even created
    expect(await redis.exists(`${prefix}can:raw`)).toBe(0);
  });
});

function never(): never {
  throw new Error("not used");
}
