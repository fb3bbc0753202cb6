import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { freePort, killAll, pipelineEnv, type Service, spawnService, waitUntil } from "../support/procs.js";
import { type Sample, scrape, value } from "../support/scrape.js";

// can-worker as it runs (dist/pipeline/can-worker.js) serves its metrics on its
// own loopback port: batches, rows written and inserted, dead letters by
// reason, the batch write duration and the XADD→COMMIT lag of every entry,
// and, while PostgreSQL refuses writes, retries by SQLSTATE class with the
// worker degraded and the database down.

const prefix = testPrefix();
const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
let db: TestDatabase;
let redis: Redis;
let svc: Service;
let url: string;

const ts = (ms: number) => new Date(ms).toISOString().replace(/Z$/, "000Z");
// Climate_N1 (0x101): dry bulb, wet bulb, rh, dew point; all within their ranges
const CLIMATE = "6009600910276009";

async function append(n: number, startMs: number): Promise<void> {
  const p = redis.pipeline();
  for (let i = 0; i < n; i++)
    p.xadd(
      keys.raw,
      "*",
      "ts",
      ts(startMs + i * 1000),
      "id",
      "257",
      "data",
      CLIMATE,
      "iface",
      "can0",
      "src",
      "socketcan",
    );
  await p.exec();
}

async function metricsWhen(what: string, ok: (s: Sample[]) => boolean, timeoutMs = 60_000): Promise<Sample[]> {
  return waitUntil(
    what,
    async () => {
      const s = await scrape(url).catch(() => undefined);
      return s && ok(s) ? s : undefined;
    },
    timeoutMs,
    250,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${svc.tail(20)}`);
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  redis = new Redis(inject("redisUrl"));
  const port = await freePort();
  url = `http://127.0.0.1:${port}/metrics`;
  await append(100, Date.UTC(2026, 0, 1));
  // an unknown id and an entry without data
  await redis.xadd(keys.raw, "*", "ts", ts(Date.UTC(2026, 0, 2)), "id", "2032", "data", "00", "iface", "can0");
  await redis.xadd(keys.raw, "*", "ts", ts(Date.UTC(2026, 0, 2)), "id", "257", "iface", "can0");
  svc = spawnService(
    "can-worker",
    pipelineEnv({
      databaseUrl: db.url,
      redisUrl: inject("redisUrl"),
      prefix,
      extra: { CEA_WORKER_METRICS_PORT: port, CEA_FLUSH_MS: 50, CEA_HEALTH_TTL_S: 3 },
    }),
  );
});
afterAll(async () => {
  await killAll();
  if (redis) {
    const left = await redis.keys(`${prefix}*`);
    if (left.length) await redis.del(...left);
    redis.disconnect();
  }
  await db?.drop();
});

describe("can-worker metrics", () => {
  it("batches, rows written and inserted, dead letters by reason", async () => {
    const s = await metricsWhen(
      "102 entries processed",
      (x) => value(x, "cea_worker_entries_total") === 102 && value(x, "cea_worker_rows_inserted_total") === 700,
    );
    expect(value(s, "cea_worker_batches_total")).toBeGreaterThanOrEqual(1);
    // 100 Climate_N1 frames of 4 signals each, and the Flower Room's 3 derived sensors from each
    expect(value(s, "cea_worker_rows_written_total")).toBe(700);
    expect(value(s, "cea_worker_rows_inserted_total")).toBe(700);
    expect(value(s, "cea_worker_dead_letters_total", { reason: "unknown_id" })).toBe(1);
    expect(value(s, "cea_worker_dead_letters_total", { reason: "malformed_entry" })).toBe(1);
    expect(value(s, "cea_worker_dead_letters_total", { reason: "delivery_limit" })).toBe(0);
    expect(value(s, "cea_worker_degraded")).toBe(0);
    expect(value(s, "cea_database_up")).toBe(1);
    expect(value(s, "cea_redis_up")).toBe(1);
    expect(value(s, "cea_dead_letter_alert_per_minute")).toBe(1);
  });

  it("the batch write duration per batch and the XADD→COMMIT lag per entry", async () => {
    const s = await scrape(url);
    const batches = value(s, "cea_worker_batches_total")!;
    expect(value(s, "cea_worker_batch_write_duration_seconds_count")).toBe(batches);
    expect(value(s, "cea_worker_commit_lag_seconds_count")).toBe(102);
    // appended moments before the worker started: every lag is under a minute, above 0
    expect(value(s, "cea_worker_commit_lag_seconds_bucket", { le: "60" })).toBe(102);
    expect(value(s, "cea_worker_commit_lag_seconds_sum")).toBeGreaterThan(0);
  });

  it("while PostgreSQL refuses writes: retries by SQLSTATE class 25, degraded, database down; then it recovers", async () => {
    await db.pool.query(`ALTER DATABASE ${db.name} SET default_transaction_read_only = on`);
    await db.pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'can-worker%'",
    );
    await append(10, Date.UTC(2026, 0, 3));
    const down = await metricsWhen(
      "retries of class 25",
      (x) =>
        (value(x, "cea_worker_retries_total", { sqlstate_class: "25" }) ?? 0) > 0 && value(x, "cea_database_up") === 0,
    );
    expect(value(down, "cea_worker_degraded")).toBe(1);
    await db.pool.query(`ALTER DATABASE ${db.name} RESET default_transaction_read_only`);
    await db.pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'can-worker%'",
    );
    const up = await metricsWhen(
      "recovered",
      // the writer's row counters arrive with the worker's next health report (every second here)
      (x) => value(x, "cea_database_up") === 1 && value(x, "cea_worker_rows_inserted_total") === 770,
    );
    expect(value(up, "cea_worker_degraded")).toBe(0);
    expect(value(up, "cea_worker_entries_total")).toBe(112);
  });

  it("SIGTERM stops it, exit 0, the listener with it", async () => {
    expect(await svc.kill("SIGTERM", 20_000)).toEqual({ code: 0, signal: null });
    await expect(fetch(url)).rejects.toThrow();
  });
});
