import type { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { createPool } from "../../db/pool.js";
import { loadSite } from "../../db/site.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import type { DecodeTable } from "../../pipeline/can/table.js";
import { ackBatch } from "../../pipeline/runtime/ack.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { type Batch, chain, noOptions, type StageSpec, use } from "../../pipeline/runtime/stage.js";
import { appendEntries, ensureGroup, pendingCount, readGroup } from "../../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../../pipeline/runtime/worker.js";
import { WRITTEN_BATCH, type WrittenBatch } from "../../stages/batch-copy.js";
import { workerStages } from "../../stages/chains.js";
import type { SignalRows } from "../../stages/decode/signals.js";
import { DECODED_SIGNALS } from "../../stages/decode.js";
import { SENSOR_READINGS, type SensorReadings } from "../../stages/resolve-sensor.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import {
  asEntry,
  collectingLogger,
  reconcile,
  SIM_ROWS_PER_SECOND,
  siteTable,
  startTestWorker,
  testConfig,
  waitFor,
} from "./pipeline-helpers.js";

// What the worker does when the database refuses work for a reason that is not
// the rows' fault (read-only, a revoked grant, a missing table, a lock held
// past the claim time): nothing is acknowledged or dead-lettered, the batch is
// retried, health says why (logged once), and when the cause is gone every
// reading arrives. Also: entries past their delivery limit, a failure of the
// read-ahead, and the bounds of the dead-letter stream.

let db: TestDatabase;
let redis: Redis;
let table: DecodeTable;
let prefix: string;
const prefixes: string[] = [];
const roles: string[] = [];

async function simEntries(seconds: number, startIso: string) {
  const site = await loadSite(projectPath("ops/site.json"));
  const opts = { table, site, startMs: Date.parse(startIso), speed: 1, iface: "sim0" };
  return Array.from({ length: seconds }, (_, k) => simulatedSecond(opts, k))
    .flat()
    .map(asEntry);
}

const keys = () => redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
const count = async () => (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement")).rows[0]!.n;

function withUser(url: string, user: string): string {
  const u = new URL(url);
  u.username = user;
  u.password = "";
  return u.toString();
}

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
  const admin = new pg.Client({ connectionString: inject("databaseUrl") });
  await admin.connect();
  for (const r of roles) await admin.query(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
  await admin.end();
});
beforeEach(async () => {
  prefix = testPrefix();
  prefixes.push(prefix);
  await db.pool.query("TRUNCATE measurement");
});

interface OutageCase {
  name: string;
  code: string;
  /** The pool the worker writes with (default: the test database as its owner). */
  url?: () => Promise<string>;
  breakIt(): Promise<void>;
  fixIt(): Promise<void>;
}

const WORKER_APP = "cea-test-worker";

/** End the worker's connections so that the next ones see a changed database setting. */
async function dropWorkerConnections(): Promise<void> {
  await db.pool.query(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    [db.name, WORKER_APP],
  );
}

const cases: OutageCase[] = [
  {
    name: "read-only database",
    code: "25006",
    async breakIt() {
      await db.pool.query(`ALTER DATABASE ${db.name} SET default_transaction_read_only = on`);
    },
    async fixIt() {
      // a session of its own: a new connection of the test's pool would start read-only too
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        await c.query("SET default_transaction_read_only = off");
        await c.query(`ALTER DATABASE ${db.name} RESET default_transaction_read_only`);
      } finally {
        await c.end();
      }
      await dropWorkerConnections();
    },
  },
  {
    name: "revoked grant (a non-superuser writer role)",
    code: "42501",
    async url() {
      const role = `cea_t_writer_${Math.random().toString(16).slice(2, 10)}`;
      roles.push(role);
      await db.pool.query(`CREATE ROLE ${role} LOGIN`);
      await db.pool.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
      await db.pool.query(`GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO ${role}`);
      await db.pool.query(`GRANT USAGE ON SCHEMA _timescaledb_internal TO ${role}`).catch(() => undefined);
      cases[1]!.breakIt = async () => {
        await db.pool.query(`REVOKE INSERT ON measurement FROM ${role}`);
      };
      cases[1]!.fixIt = async () => {
        await db.pool.query(`GRANT INSERT ON measurement TO ${role}`);
      };
      return withUser(db.url, role);
    },
    breakIt: async () => undefined,
    fixIt: async () => undefined,
  },
  {
    name: "missing table",
    code: "42P01",
    async breakIt() {
      await db.pool.query("ALTER TABLE measurement RENAME TO measurement_away");
    },
    async fixIt() {
      await db.pool.query("ALTER TABLE measurement_away RENAME TO measurement");
    },
  },
];

describe("an outage that is not the rows' fault", () => {
  for (const c of cases) {
    it(`${c.name} (${c.code}): nothing acknowledged or dead-lettered, health degraded naming it once; then all of it arrives`, async () => {
      const entries = await simEntries(60, "2024-08-01T00:00:00Z"); // 900 frames, 60 s of rows
      await appendEntries(redis, keys().raw, entries);
      const url = c.url ? await c.url() : db.url;
      await c.breakIt();
      const pool = createPool(url, { max: 3, application: WORKER_APP });
      const { log, lines } = collectingLogger();
      const w = await startTestWorker(testConfig(db.url, prefix, { CEA_BATCH_SIZE: "300" }), undefined, {
        pool,
        log,
      });
      try {
        await waitFor("retries", () => w.handle.stats.retries >= 3);
        expect(await redis.xlen(keys().dead)).toBe(0);
        expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBeGreaterThanOrEqual(300);
        expect(w.handle.stats.entries).toBe(0);
        const report = w.handle.health.report();
        expect(report.status).toBe("degraded");
        expect(report.problems["batch-copy"]).toContain(c.code);
        await waitFor("health key degraded", async () => {
          const body = JSON.parse((await redis.get(keys().health("can-worker-1"))) ?? "{}") as { reason?: string };
          return (body.reason ?? "").includes(c.code);
        });
        await waitFor("retries", () => w.handle.stats.retries >= 6);
        // once per change of state, not once per retry: six retries, one line
        const degradedLines = lines.filter((l) => l.msg === "degraded: retrying until it recovers");
        expect(degradedLines.length, JSON.stringify(degradedLines)).toBe(1);
        expect(String(degradedLines[0]!.cause)).toContain(c.code);
        await c.fixIt();
        await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
      } finally {
        await w.stop();
        await pool.end();
      }
      // (ending the worker's read-only connections may show as one more cause before the recovery)
      expect(lines.filter((l) => l.msg === "recovered" && l.source === "batch-copy").length).toBe(1);
      expect(w.handle.health.report().status).toBe("ok");
      expect(await redis.xlen(keys().dead)).toBe(0);
      expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
      const r = await reconcile(db.pool, table, entries);
      expect(r).toEqual({
        expected: 60 * SIM_ROWS_PER_SECOND,
        stored: 60 * SIM_ROWS_PER_SECOND,
        lost: 0,
        duplicated: 0,
        unexpected: 0,
        wrongValue: 0,
      });
    });
  }

  it("a lock held past the claim idle time: lock_timeout makes it an outage, held entries stay fresh, nothing is claimed or delivered twice", async () => {
    const entries = await simEntries(60, "2024-08-02T00:00:00Z");
    await appendEntries(redis, keys().raw, entries);
    const locker = await db.pool.connect();
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE measurement IN ACCESS EXCLUSIVE MODE");
    const opts = { CEA_BATCH_SIZE: "300", CEA_CLAIM_IDLE_MS: "1000", CEA_MAX_DELIVERIES: "1" };
    const pools = [0, 1].map(() => createPool(db.url, { max: 3, application: WORKER_APP, lockTimeoutMs: 300 }));
    const ws = await Promise.all(
      ["w-a", "w-b"].map((name, i) =>
        startTestWorker(testConfig(db.url, prefix, { ...opts, CEA_CONSUMER: name }), undefined, { pool: pools[i]! }),
      ),
    );
    try {
      // held for five claim idle times
      await new Promise((r) => setTimeout(r, 5_000));
      expect(ws.map((w) => w.handle.stats.retries).reduce((a, b) => a + b)).toBeGreaterThan(2);
      expect(ws.map((w) => w.handle.health.report().problems["batch-copy"] ?? "").join()).toContain("55P03");
      const pending = (await redis.xpending(keys().raw, "can-worker-group", "-", "+", 10_000)) as [
        string,
        string,
        number,
        number,
      ][];
      expect(pending.length).toBeGreaterThan(0);
      expect(Math.max(...pending.map((p) => p[3]))).toBe(1);
      await locker.query("COMMIT");
      await waitFor("all entries", () => ws[0]!.handle.stats.entries + ws[1]!.handle.stats.entries >= entries.length);
    } finally {
      locker.release();
      for (const w of ws) await w.stop();
      for (const p of pools) await p.end();
    }
    expect(ws.map((w) => w.handle.stats.claimed)).toEqual([0, 0]);
    expect(await redis.xlen(keys().dead)).toBe(0);
    const r = await reconcile(db.pool, table, entries);
    expect(r).toEqual({
      expected: 60 * SIM_ROWS_PER_SECOND,
      stored: 60 * SIM_ROWS_PER_SECOND,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
      wrongValue: 0,
    });
  });
});

describe("the delivery limit", () => {
  it("an entry past it is not decoded: dead-lettered and never stored, unless an earlier delivery committed it (then acknowledged)", async () => {
    const entries = await simEntries(40, "2024-08-03T00:00:00Z"); // 600 frames
    // the first 300 committed by a run that never acknowledged (a crash between COMMIT and XACK)
    await appendEntries(redis, keys().raw, entries.slice(0, 300));
    const committed = await startTestWorker(
      testConfig(db.url, prefix, { CEA_BATCH_SIZE: "300", CEA_CONSUMER: "first" }),
      (d) => {
        const s = workerStages(d);
        return chain(RAW_ENTRIES).pipe(s.decode).pipe(s.resolveSensor).pipe(s.derived).pipe(s.batchCopy);
      },
    );
    try {
      await waitFor("first batch", () => committed.handle.stats.entries >= 300);
    } finally {
      await committed.stop();
    }
    await appendEntries(redis, keys().raw, entries.slice(300));
    const ids = (await redis.xrange(keys().raw, "-", "+")).map(([id]) => id);
    const stored = await count();
    expect(stored).toBeGreaterThan(0);
    // every entry read and delivered again and again (the crashes of a worker that never got further)
    await readGroup(redis, keys().raw, "can-worker-group", "first", ">", 10_000, null);
    for (let k = 0; k < 5; k++) await redis.call("XCLAIM", keys().raw, "can-worker-group", "first", 0, ...ids);
    const { log, lines } = collectingLogger();
    const w = await startTestWorker(
      testConfig(db.url, prefix, { CEA_BATCH_SIZE: "1000", CEA_CONSUMER: "first", CEA_MAX_DELIVERIES: "5" }),
      undefined,
      { log },
    );
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= entries.length);
    } finally {
      await w.stop();
    }
    expect(await count()).toBe(stored); // nothing written by the over-limit deliveries
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBe(0);
    const dead = await redis.xrange(keys().dead, "-", "+");
    const deadIds = dead.map(([, f]) => f[f.indexOf("orig_id") + 1]);
    // a dead letter is never also a stored row: the committed entries were acknowledged without one
    expect(w.counters("batch-copy").alreadyStored).toBe(300);
    expect(dead.length).toBe(300);
    const storedTimes = new Set(
      (
        await db.pool.query<{ t: string }>(
          `SELECT DISTINCT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t FROM measurement`,
        )
      ).rows.map((r) => r.t),
    );
    for (const [, f] of dead) {
      expect(f[f.indexOf("reason") + 1]).toMatch(/^delivered \d+ times \(limit 5\) .*not processed again$/);
      expect(Number(f[f.indexOf("deliveries") + 1])).toBeGreaterThan(5);
      expect(storedTimes.has(f[f.indexOf("ts") + 1]!)).toBe(false);
    }
    expect(new Set(deadIds)).toEqual(new Set(ids.slice(300)));
    expect(lines.some((l) => l.msg === "decode stage ready")).toBe(true);
  });
});

describe("a failure of the read-ahead", () => {
  it("takes the orderly path: done rejects with it, no unhandled rejection, nothing acknowledged", async () => {
    const entries = await simEntries(20, "2024-08-04T00:00:00Z");
    await appendEntries(redis, keys().raw, entries);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    let prepared = 0;
    // fails on the second batch, which is the read-ahead while the first one is in the (slow) writer
    const flaky: StageSpec<SignalRows, SignalRows> = {
      name: "flaky",
      consumes: DECODED_SIGNALS,
      emits: DECODED_SIGNALS,
      options: noOptions,
      failure: { classify: () => "fatal", describe: String, backoff: { baseMs: 1, maxMs: 1 } },
      create: () => ({
        process(_b, input) {
          if (++prepared === 2) throw new Error("flaky stage broke");
          return input;
        },
      }),
    };
    const slowWriter: StageSpec<SensorReadings, WrittenBatch> = {
      name: "slow-writer",
      consumes: SENSOR_READINGS,
      emits: WRITTEN_BATCH,
      sequential: true,
      options: noOptions,
      failure: { classify: () => "fatal", describe: String, backoff: { baseMs: 1, maxMs: 1 } },
      create: () => ({
        async process(_b, input) {
          await new Promise((r) => setTimeout(r, 1_000));
          return { rows: input.rows.count, inserted: 0 };
        },
      }),
    };
    const w = await startTestWorker(testConfig(db.url, prefix, { CEA_BATCH_SIZE: "100" }), (d) => {
      const s = workerStages(d);
      return chain(RAW_ENTRIES)
        .pipe(s.decode)
        .pipe(use(flaky, {}))
        .pipe(s.resolveSensor)
        .pipe(use(slowWriter, {}))
        .pipe(s.ack);
    });
    try {
      await expect(w.handle.done).rejects.toThrow("flaky stage broke");
      await new Promise((r) => setTimeout(r, 100));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await w.stop().catch(() => undefined);
    }
    // the first batch was written and acknowledged before the failure ended the loop; nothing after it
    expect(await pendingCount(redis, keys().raw, "can-worker-group")).toBeGreaterThan(0);
    expect(await redis.xlen(keys().dead)).toBe(0);
  });
});

describe("the dead-letter stream", () => {
  it("repeats of one cause are counted per cause, one record each; other dead letters are bounded by count, and the trimmed counted", async () => {
    const ts = "2024-08-05T00:00:00.000000Z";
    const foreign = [
      ...Array.from({ length: 200 }, () => ({ ts, id: 0x6ff, data: "0102030405060708" })),
      ...Array.from({ length: 50 }, () => ({ ts, id: 0x6fe, data: "01" })),
    ];
    const broken = Array.from({ length: 30 }, (_, i) => ({ ts, id: 0x101, data: `zz${i}` }));
    await appendEntries(redis, keys().raw, [...foreign, ...broken]);
    const w = await startTestWorker(testConfig(db.url, prefix, { CEA_BATCH_SIZE: "100", CEA_DEAD_MAXLEN: "10" }));
    try {
      await waitFor("all entries", () => w.handle.stats.entries >= foreign.length + broken.length);
    } finally {
      await w.stop();
    }
    expect(await redis.hgetall(keys().deadCauses)).toEqual({ "unknown-id:0x6ff": "200", "unknown-id:0x6fe": "50" });
    expect(await redis.xlen(keys().dead)).toBe(10);
    const stats = await redis.hgetall(keys().stats("can-worker-1"));
    // 2 records for the two causes + 30 for the broken frames = 32 written, 10 kept
    expect(stats.dead_trimmed).toBe("22");
    expect(stats.dead_lettered).toBe(String(foreign.length + broken.length));
    const last = await redis.xrange(keys().dead, "-", "+");
    expect(last.map(([, f]) => f[f.indexOf("data") + 1])).toEqual(broken.slice(-10).map((b) => b.data));
  });

  it("a retried acknowledgement writes no dead letter twice; dead letters past the age limit are trimmed and counted", async () => {
    const k = keys();
    const ids = await appendEntries(redis, k.raw, [
      { ts: "2024-08-06T00:00:00.000000Z", id: 0x101, data: "zz" },
      { ts: "2024-08-06T00:00:00.000000Z", id: 0x101, data: "00" },
    ]);
    await ensureGroup(redis, k.raw, "can-worker-group");
    const read = await readGroup(redis, k.raw, "can-worker-group", "c", ">", 10, null);
    const batch: Batch = {
      seq: 1,
      ids: read.ids,
      fields: read.fields,
      deliveries: null,
      dead: new Map([
        [0, { reason: "data is not hex" }],
        [1, { reason: "too short" }],
      ]),
      skip: new Set(),
    };
    const ackKeys = { raw: k.raw, dead: k.dead, stats: k.stats("c"), deadCauses: k.deadCauses };
    // a dead letter from 1970: older than any age limit, trimmed by the next acknowledgement
    await redis.xadd(k.dead, "1-1", "orig_id", "0-1", "reason", "old");
    const limits = { maxLen: 100, maxAgeS: 3_600 };
    expect(await ackBatch(redis, ackKeys, "can-worker-group", limits, batch, 0)).toEqual({
      acked: 2,
      stored: 2,
      counted: 0,
      trimmed: 1,
    });
    expect(await redis.hget(k.stats("c"), "dead_trimmed")).toBe("1");
    expect(await ackBatch(redis, ackKeys, "can-worker-group", limits, batch, 0)).toEqual({
      acked: 0,
      stored: 0,
      counted: 0,
      trimmed: 0,
    });
    expect((await redis.xrange(k.dead, "-", "+")).map(([, f]) => f[1])).toEqual(ids);
    expect(await redis.hget(k.stats("c"), "dead_lettered")).toBe("2");
    expect(await redis.hget(k.stats("c"), "batches")).toBe("1");
  });
});
