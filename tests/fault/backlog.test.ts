import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { toHex } from "../../pipeline/can/frame.js";
import { Simulation } from "../../pipeline/can/simulator.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, pipelineEnv, spawnService, waitUntil } from "../support/procs.js";
import {
  expectedRowsOf,
  groupState,
  readRawStream,
  reconcile,
  type SentFrame,
  stats,
  waitDrained,
} from "../support/reconcile.js";

// The worker is down while an hour of nominal traffic (every sensor of the site
// once a second) arrives at 600× speed: the stream must keep every
// unacknowledged entry, far beyond the ~10 000 acknowledged ones it trims to,
// and the worker must catch up with nothing lost. With a small hard limit the
// scanner drops the oldest unacknowledged entries, and its drop count must be
// exactly the number of frames that never reach the table.

const GROUP = "can-worker-group";
const HOUR = 3_600;
const SIM = {
  CEA_CAN_SOURCE: "simulator",
  CEA_SIM_START: "2026-03-01T00:00:00Z",
  CEA_SIM_SPEED: 600,
  CEA_SIM_DURATION_S: HOUR,
};

describe("worker down for an hour of traffic", () => {
  let redis: Redis;
  const dbs: TestDatabase[] = [];
  const prefixes: string[] = [];

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
  });
  afterAll(async () => {
    await killAll();
    for (const p of prefixes) {
      const left = await redis.keys(`${p}*`);
      if (left.length) await redis.del(...left);
    }
    redis.disconnect();
    for (const d of dbs) await d.drop();
  });

  async function setup(extra: Record<string, string | number>) {
    const db = await createTestDatabase();
    dbs.push(db);
    const prefix = testPrefix();
    prefixes.push(prefix);
    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    const env = pipelineEnv({ databaseUrl: db.url, redisUrl: inject("redisUrl"), prefix, extra });
    // the worker has run before (it creates the group), then stops. Its health key
    // is written once it is running (group created, signal handler in place).
    const first = spawnService("can-worker", env);
    await waitUntil(
      "the worker to create its group and report healthy",
      async () =>
        (await groupState(redis, keys.raw, GROUP)).exists && (await redis.exists(keys.health("can-worker-1")))
          ? true
          : undefined,
      30_000,
    );
    expect(await first.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    return { db, keys, env };
  }

  it("keeps every unacknowledged entry, then the worker catches up: 0 lost", async () => {
    const { db, keys, env } = await setup(SIM);
    expect(await spawnService("can-scanner", env).waitExit(120_000)).toEqual({ code: 0, signal: null });
    const st = await stats(redis, keys.stats("can-scanner"));
    const len = await redis.xlen(keys.raw);
    expect(len).toBeGreaterThan(10_000);
    expect(len).toBe(st.appended);
    expect(st.dropped_hard_limit ?? 0).toBe(0);
    const frames = await readRawStream(redis, keys.raw);

    const worker = spawnService("can-worker", env);
    await waitDrained(redis, keys.raw, GROUP, 180_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    const r = await reconcile(db.pool, await expectedRowsOf(frames));
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    // 65 signals a second (50 sensors, 15 applied outputs in the actuator nodes' status frames),
    // and 3 derived sensors in each of the 3 rooms with derived ones
    expect(r.expected).toBe(HOUR * (65 + 3 * 3));
  }, 400_000);

  it("past the hard limit: dropped_hard_limit is exactly the number of frames missing from the table", async () => {
    const HARD = 20_000;
    const { db, keys, env } = await setup({ ...SIM, CEA_STREAM_HARD_LIMIT: HARD });
    expect(await spawnService("can-scanner", env).waitExit(120_000)).toEqual({ code: 0, signal: null });
    const st = await stats(redis, keys.stats("can-scanner"));
    const dropped = st.dropped_hard_limit ?? 0;
    expect(dropped).toBeGreaterThan(0);
    // every appended entry is either still in the stream or counted as dropped
    const frames = await readRawStream(redis, keys.raw);
    expect(frames.length + dropped).toBe(st.appended);

    const worker = spawnService("can-worker", env);
    await waitDrained(redis, keys.raw, GROUP, 180_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    // what survived in the stream is all in the table
    const r = await reconcile(db.pool, await expectedRowsOf(frames));
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });

    // frames in the table: the distinct (message, receive time) pairs of its rows
    const site = await loadSite(projectPath("ops/site.json"));
    const messageOf = new Map<number, string>();
    for (const d of site.devices) for (const s of d.sensors) messageOf.set(s.id, s.signal.split(".")[0]!);
    // a derived row belongs to the frame of its temperature input
    for (const g of site.derived) for (const s of g.sensors) messageOf.set(s.id, messageOf.get(g.temperature_sensor)!);
    const { rows } = await db.pool.query<{ sensor_id: number; time: string }>(
      "SELECT sensor_id, time::text AS time FROM measurement",
    );
    const framesStored = new Set(rows.map((x) => `${messageOf.get(x.sensor_id)}|${x.time}`)).size;
    expect((st.appended ?? 0) - framesStored).toBe(dropped);
  }, 400_000);

  it("past the hard limit with the worker running: entries it holds are never dropped, and dropped_hard_limit is exactly the frames missing", async () => {
    const HARD = 5_000;
    // a worker slower than the scanner (small batches, one writer), so the
    // stream passes the hard limit while the worker holds entries
    const { db, keys, env } = await setup({
      ...SIM,
      CEA_SIM_SPEED: 3_600,
      CEA_STREAM_HARD_LIMIT: HARD,
      CEA_STREAM_TRIM_ACKED: 1_000,
      CEA_BATCH_SIZE: 200,
      CEA_WRITE_CONCURRENCY: 1,
    });
    const worker = spawnService("can-worker", env);
    await waitUntil(
      "the worker to report healthy",
      async () => ((await redis.exists(keys.health("can-worker-1"))) ? true : undefined),
      30_000,
    );
    expect(await spawnService("can-scanner", env).waitExit(120_000)).toEqual({ code: 0, signal: null });
    await waitDrained(redis, keys.raw, GROUP, 180_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    const st = await stats(redis, keys.stats("can-scanner"));
    const dropped = st.dropped_hard_limit ?? 0;
    expect(dropped).toBeGreaterThan(0);

    // every frame the scanner sent, regenerated independently of the stream (the simulator is deterministic)
    const files = { siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") };
    const opts = {
      table: (await loadDecodeTable(files)).table,
      site: await loadSite(files.siteFile),
      startMs: Date.parse(SIM.CEA_SIM_START),
      speed: 1,
      iface: "sim0",
    };
    const sent: SentFrame[] = [];
    // the scanner's simulator: the sensor frames and the actuator nodes' status frames, second by second
    const sim = new Simulation({ ...opts, candb: loadCanDb(files.canDbFile) });
    for (let k = 0; k < HOUR; k++)
      for (const f of sim.next()) sent.push({ ts: f.ts, id: f.id, data: toHex(f.data), src: "simulator" });
    expect(st.appended).toBe(sent.length);
    // what is stored is right: nothing unexpected, no wrong value
    const r = await reconcile(db.pool, await expectedRowsOf(sent));
    expect(r).toMatchObject({ duplicated: 0, unexpected: 0, valueMismatches: 0 });
    expect(r.lost).toBeGreaterThan(0);
    // and exactly the dropped frames are missing
    const messageOf = new Map<number, string>();
    for (const d of opts.site.devices) for (const s of d.sensors) messageOf.set(s.id, s.signal.split(".")[0]!);
    // a derived row belongs to the frame of its temperature input
    for (const g of opts.site.derived)
      for (const s of g.sensors) messageOf.set(s.id, messageOf.get(g.temperature_sensor)!);
    const { rows } = await db.pool.query<{ sensor_id: number; time: string }>(
      "SELECT sensor_id, time::text AS time FROM measurement",
    );
    const framesStored = new Set(rows.map((x) => `${messageOf.get(x.sensor_id)}|${x.time}`)).size;
    expect(sent.length - framesStored).toBe(dropped);
  }, 400_000);

  it("past the hard limit while the worker runs (held back by a lock): the drop count is exactly the frames missing", async () => {
    const HARD = 20_000;
    const { db, keys, env } = await setup({ ...SIM, CEA_STREAM_HARD_LIMIT: HARD });
    const worker = spawnService("can-worker", env);
    await worker.waitForLog((l) => l.msg === "stage chain", 30_000);
    // the worker reads and holds batches it cannot write while the table is locked
    const locker = await db.pool.connect();
    try {
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE measurement IN ACCESS EXCLUSIVE MODE");
      const scanner = spawnService("can-scanner", env);
      await waitUntil(
        "the scanner to drop past the hard limit",
        async () => ((await stats(redis, keys.stats("can-scanner"))).dropped_hard_limit ?? 0) > 0 || undefined,
        120_000,
      );
      await locker.query("COMMIT");
      expect(await scanner.waitExit(120_000)).toEqual({ code: 0, signal: null });
    } finally {
      locker.release();
    }
    await waitDrained(redis, keys.raw, GROUP, 180_000, [worker]);
    expect(await worker.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    const st = await stats(redis, keys.stats("can-scanner"));
    const dropped = st.dropped_hard_limit ?? 0;
    const frames = await readRawStream(redis, keys.raw);
    const r = await reconcile(db.pool, await expectedRowsOf(frames));
    // what is still in the stream is all stored, exactly (acknowledged entries trimmed earlier are not in it)
    expect(r).toMatchObject({ lost: 0, duplicated: 0, valueMismatches: 0 });
    const site = await loadSite(projectPath("ops/site.json"));
    const messageOf = new Map<number, string>();
    for (const d of site.devices) for (const s of d.sensors) messageOf.set(s.id, s.signal.split(".")[0]!);
    // a derived row belongs to the frame of its temperature input
    for (const g of site.derived) for (const s of g.sensors) messageOf.set(s.id, messageOf.get(g.temperature_sensor)!);
    const { rows } = await db.pool.query<{ sensor_id: number; time: string }>(
      "SELECT sensor_id, time::text AS time FROM measurement",
    );
    const framesStored = new Set(rows.map((x) => `${messageOf.get(x.sensor_id)}|${x.time}`)).size;
    expect(dropped).toBeGreaterThan(0);
    expect((st.appended ?? 0) - framesStored).toBe(dropped);
    expect(await redis.xlen(keys.dead)).toBe(0);
  }, 400_000);
});
