import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { addRows, checkChain, entryField, type StageOptions, type StageSpec } from "../../pipeline/runtime/stage.js";
import { appendEntries, pendingCount } from "../../pipeline/runtime/stream.js";
import { expectedRows } from "../../stages/decode.js";
import {
  asEntry,
  siteTable,
  startTestWorker,
  testConfig,
  WORKER_STAGES,
  waitFor,
} from "../integration/pipeline-helpers.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";

// A new stage joins the chain by being listed; the runtime is not touched.

const DRY_BULB = 101;
const RH = 103;
const DERIVED = 901; // a sensor this test adds: VPD computed from dry bulb + rh of node 1

const vpdOf = (t: number, rh: number) => 0.6108 * Math.exp((17.27 * t) / (t + 237.3)) * (1 - rh / 100);

const derivedVpd: StageSpec<{ sensor: number }> = {
  name: "derived-vpd",
  consumes: "measurement-rows",
  emits: "measurement-rows",
  defaults: { sensor: DERIVED },
  failure: { unrecoverable: [], transient: [], backoff: { baseMs: 10, maxMs: 10 }, classify: () => "fatal" },
  create(_ctx, options) {
    return {
      process(batch) {
        const rows = batch.rows;
        if (!rows) return;
        const t = new Map<number, number>();
        const rh = new Map<number, number>();
        for (let r = 0; r < rows.count; r++) {
          if (rows.sensor[r] === DRY_BULB) t.set(rows.entry[r]!, rows.value[r]!);
          if (rows.sensor[r] === RH) rh.set(rows.entry[r]!, rows.value[r]!);
        }
        const out = [...t].flatMap(([e, temp]) => {
          const h = rh.get(e);
          const time = entryField(batch, e, "ts");
          return h === undefined || !time ? [] : [{ time, sensor_id: options.sensor, value: vpdOf(temp, h) }];
        });
        addRows(batch, out);
      },
    };
  },
};

describe("stage runner", () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefix = testPrefix();
  beforeAll(async () => {
    db = await createTestDatabase();
    redis = createRedis(inject("redisUrl"));
    await db.pool.query(
      "INSERT INTO sensor (sensor_id, device_id, name, unit, channel) VALUES ($1, 1, 'vpd_calc_b', 'kPa', 90)",
      [DERIVED],
    );
  });
  afterAll(async () => {
    const ks = await redis.keys(`${prefix}*`);
    if (ks.length) await redis.del(...ks);
    await redis.quit();
    await db?.drop();
  });

  it("refuses a chain whose stages do not connect", () => {
    const [decode, resolve, copy, ack] = WORKER_STAGES as [StageSpec<StageOptions>, ...StageSpec<StageOptions>[]];
    expect(() =>
      checkChain([decode, resolve!, copy!, derivedVpd as unknown as StageSpec<StageOptions>, ack!], "raw-entries"),
    ).toThrow('stage "derived-vpd" consumes "measurement-rows" but the previous stage emits "committed-batch"');
  });

  it("an added stage (derived VPD) reaches the writer without any change to the runtime", async () => {
    const table = await siteTable();
    const site = await loadSite(projectPath("ops/site.json"));
    const opts = { table, site, startMs: Date.parse("2024-07-01T10:00:00Z"), speed: 1, iface: "sim0" };
    const entries = Array.from({ length: 120 }, (_, k) => simulatedSecond(opts, k))
      .flat()
      .map(asEntry);
    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    await appendEntries(redis, keys.raw, entries);
    const stages = [...WORKER_STAGES];
    stages.splice(2, 0, derivedVpd as unknown as StageSpec<StageOptions>); // after resolve-sensor, before batch-copy
    const w = await startTestWorker(
      testConfig(db.url, prefix, { CEA_DECODE_THREADS: "2", CEA_BATCH_SIZE: "500" }),
      stages,
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

  it("sequential stages are lanes: two batches in a concurrency-2 writer at once, acks in batch order and each after its commit", async () => {
    const table = await siteTable();
    const site = await loadSite(projectPath("ops/site.json"));
    const opts = { table, site, startMs: Date.parse("2024-07-02T10:00:00Z"), speed: 1, iface: "sim0" };
    const entries = Array.from({ length: 60 }, (_, k) => simulatedSecond(opts, k))
      .flat()
      .map(asEntry);
    const p2 = testPrefix();
    const keys = redisKeys({ CEA_REDIS_PREFIX: p2, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    await appendEntries(redis, keys.raw, entries);
    const events: string[] = [];
    let inside = 0;
    let most = 0;
    let bothInside!: () => void;
    const both = new Promise<void>((r) => {
      bothInside = r;
    });
    const noop = {
      unrecoverable: [],
      transient: [],
      backoff: { baseMs: 10, maxMs: 10 },
      classify: () => "fatal" as const,
    };
    // stands in for the writer: the first batch waits until the second is inside too (never, with concurrency 1)
    const writer: StageSpec = {
      name: "test-writer",
      consumes: "measurement-rows",
      emits: "committed-batch",
      sequential: true,
      defaults: {},
      failure: noop,
      create: () => ({
        concurrency: 2,
        async process(batch) {
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
          batch.committed = true;
        },
      }),
    };
    const recorder: StageSpec = {
      name: "test-recorder",
      consumes: "committed-batch",
      emits: "committed-batch",
      sequential: true,
      defaults: {},
      failure: noop,
      create: () => ({
        process(batch) {
          events.push(`acked ${batch.seq}`);
        },
      }),
    };
    const [decode, resolve, , ack] = WORKER_STAGES as [StageSpec, StageSpec, StageSpec, StageSpec];
    const w = await startTestWorker(testConfig(db.url, p2, { CEA_DECODE_THREADS: "0", CEA_BATCH_SIZE: "100" }), [
      decode,
      resolve,
      writer,
      recorder,
      ack,
    ]);
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
    const ks = await redis.keys(`${p2}*`);
    if (ks.length) await redis.del(...ks);
  });
});
