import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { killAll, pipelineEnv, type Service, spawnService, waitUntil } from "../support/procs.js";
import {
  deadLetters,
  expectedRowsOf,
  groupState,
  readRawStream,
  reconcile,
  type SentFrame,
  waitDrained,
} from "../support/reconcile.js";

// A kill -9 storm on two workers sharing the group while the scanner appends:
// every 0.7–2 s one of them dies and comes back under the same name (for 15 s
// of the scanner's 40). Every entry must end exactly once as stored (all its
// rows, exact values) or as a dead letter (an entry that reached the delivery
// limit), never both and never neither. Then two clean workers drain what is
// left, and the rows they insert
// are counted against the rows they were handed: a redelivered reading adds
// nothing (counted from the workers' own reports, not through the unique key).

const GROUP = "can-worker-group";
const STORM_MS = 15_000;

describe("kill -9 storm with two workers", () => {
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

  const rows = async () =>
    (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement")).rows[0]!.n;

  it("every entry stored or dead-lettered exactly once; redeliveries insert nothing", async () => {
    const env = (extra: Record<string, string | number>) =>
      pipelineEnv({ databaseUrl: db.url, redisUrl: inject("redisUrl"), prefix, extra });
    const common = {
      CEA_BATCH_SIZE: 400,
      CEA_CLAIM_IDLE_MS: 1_500,
      CEA_MAX_DELIVERIES: 3,
      CEA_STREAM_TRIM_ACKED: 1_000_000,
    };
    await redis.xgroup("CREATE", keys.raw, GROUP, "0", "MKSTREAM");
    const scanner = spawnService(
      "can-scanner",
      env({
        ...common,
        CEA_CAN_SOURCE: "simulator",
        CEA_SIM_START: "2026-04-01T00:00:00Z",
        CEA_SIM_SPEED: 60,
        CEA_SIM_DURATION_S: 2_400,
      }),
    );
    const workers: Record<string, Service> = {};
    const start = (name: string) => {
      workers[name] = spawnService("can-worker", env({ ...common, CEA_CONSUMER: name }));
    };
    start("w-a");
    start("w-b");
    await waitUntil("first rows", async () => ((await rows()) > 0 ? true : undefined), 60_000, 100);
    // the storm: a deterministic sequence of pauses, alternating victims
    const pauses = [700, 1_300, 900, 2_000, 800, 1_600, 1_100, 700, 1_900, 1_200, 1_000, 1_500, 800, 1_400];
    let kills = 0;
    const stormEnd = Date.now() + STORM_MS;
    for (let k = 0; Date.now() < stormEnd; k++) {
      await new Promise((r) => setTimeout(r, pauses[k % pauses.length]));
      const name = k % 2 === 0 ? "w-a" : "w-b";
      const victim = workers[name]!;
      if (victim.exit === undefined) {
        expect(await victim.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
        kills++;
      }
      start(name);
    }
    expect(kills).toBeGreaterThanOrEqual(10);
    // the storm ends with a last kill of both while the scanner still appends: what the
    // table holds now is the storm's work; the rest (pending and new entries) is left to clean workers
    expect(scanner.exit).toBeUndefined();
    for (const w of Object.values(workers)) if (w.exit === undefined) await w.kill("SIGKILL");
    const afterStorm = await rows();

    // two clean workers finish the job and stop on SIGTERM
    start("w-a");
    start("w-b");
    const clean = [workers["w-a"]!, workers["w-b"]!];
    // running (signal handlers in place) before anything is asked of them
    for (const w of clean) await w.waitForLog((l) => l.msg === "stage chain", 30_000);
    expect(await scanner.waitExit(120_000)).toEqual({ code: 0, signal: null });
    await waitDrained(redis, keys.raw, GROUP, 180_000, clean);
    for (const w of clean) expect(await w.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    const final = await rows();
    const committed = clean.flatMap((w) => w.logs.filter((l) => l.msg === "batch committed"));
    const inserted = committed.reduce((s, l) => s + Number(l.inserted), 0);
    const handed = committed.reduce((s, l) => s + Number(l.rows), 0);
    // every row the clean workers inserted is a new row of the table, no more, no less
    expect(inserted).toBe(final - afterStorm);
    expect(inserted).toBeGreaterThan(0);
    expect(handed).toBeGreaterThanOrEqual(inserted);

    const frames = await readRawStream(redis, keys.raw);
    const dead = await deadLetters(redis, keys.dead);
    const deadIds = new Set(dead.map((d) => d.orig_id));
    expect(deadIds.size).toBe(dead.length); // no entry dead-lettered twice
    for (const d of dead) expect(d.reason).toMatch(/^delivered \d+ times \(limit 3\)/);
    const stored: SentFrame[] = frames.filter((f) => !deadIds.has(f.entryId!));
    const r = await reconcile(db.pool, await expectedRowsOf(stored));
    // 0 lost (every entry not dead-lettered is stored, all its rows), 0 extra, exact values
    expect(r).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, valueMismatches: 0 });
    expect(r.stored).toBe(r.expected);
    // 0 stored-and-dead-lettered: no row of a dead-lettered frame is in the table
    const deadFrames = frames.filter((f) => deadIds.has(f.entryId!));
    if (deadFrames.length) {
      const both = await reconcile(db.pool, await expectedRowsOf([...stored, ...deadFrames]));
      expect(both.lost).toBe((await expectedRowsOf(deadFrames)).length);
    }
    expect(await groupState(redis, keys.raw, GROUP)).toMatchObject({ pending: 0, undelivered: false });
    console.info(
      `kill-storm: ${kills} kills, ${frames.length} entries, ${dead.length} dead letters (delivery limit), ` +
        `${afterStorm} rows after the storm, clean workers handed ${handed} readings and inserted ${inserted}`,
    );
  }, 400_000);
});
