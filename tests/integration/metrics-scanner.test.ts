import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { testPrefix } from "../support/db.js";
import { freePort, killAll, pipelineEnv, type Service, spawnService, waitUntil } from "../support/procs.js";
import { type Sample, scrape, value } from "../support/scrape.js";

// can-scanner as it runs (dist/pipeline/can-scanner.js, simulated nodes) serves
// its metrics on its own loopback port: frames read and appended, drops by
// reason (here past a small hard limit, agreeing with the stats hash), the
// stream's backlog and oldest unacknowledged entry, Redis reachability.

const prefix = testPrefix();
const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
let redis: Redis;
let svc: Service;
let url: string;

beforeAll(async () => {
  redis = new Redis(inject("redisUrl"));
  // a group that never reads: every entry stays unacknowledged, so the hard limit bites
  await redis.xgroup("CREATE", keys.raw, "can-worker-group", "$", "MKSTREAM");
  const port = await freePort();
  url = `http://127.0.0.1:${port}/metrics`;
  svc = spawnService(
    "can-scanner",
    pipelineEnv({
      databaseUrl: "postgresql://unused@127.0.0.1:1/unused",
      redisUrl: inject("redisUrl"),
      prefix,
      extra: {
        CEA_CAN_SOURCE: "simulator",
        CEA_SIM_SPEED: 20,
        CEA_STREAM_HARD_LIMIT: 200,
        CEA_STREAM_TRIM_ACKED: 10,
        CEA_STREAM_WARN_LENGTH: 100,
        CEA_SCANNER_METRICS_PORT: port,
      },
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
});

describe("can-scanner metrics", () => {
  let s: Sample[];
  beforeAll(async () => {
    s = await waitUntil(
      "frames dropped past the hard limit, as the metrics show them",
      async () => {
        const x = await scrape(url).catch(() => undefined);
        return x && (value(x, "cea_scanner_frames_dropped_total", { reason: "hard_limit" }) ?? 0) > 0 ? x : undefined;
      },
      60_000,
      250,
    );
  });

  it("frames read, appended and dropped by reason; the drops agree with the stats hash", async () => {
    const read = value(s, "cea_scanner_frames_read_total")!;
    const appended = value(s, "cea_scanner_frames_appended_total")!;
    expect(appended).toBeGreaterThan(200);
    expect(read).toBeGreaterThanOrEqual(appended);
    expect(value(s, "cea_scanner_frames_dropped_total", { reason: "buffer" })).toBe(0);
    expect(value(s, "cea_scanner_frames_dropped_total", { reason: "undecodable" })).toBe(0);
    const metric = value(s, "cea_scanner_frames_dropped_total", { reason: "hard_limit" })!;
    const hash = Number(await redis.hget(keys.stats("can-scanner"), "dropped_hard_limit"));
    // the hash is written by the same trim that counts; the scrape may be a trim behind
    expect(hash).toBeGreaterThanOrEqual(metric);
    expect(metric).toBeGreaterThan(0);
  });

  it("the stream's backlog, length, thresholds and oldest unacknowledged entry", () => {
    const backlog = value(s, "cea_stream_backlog_entries")!;
    expect(backlog).toBeGreaterThan(100);
    expect(backlog).toBeLessThanOrEqual(200 + 100);
    expect(value(s, "cea_stream_backlog_warn_entries")).toBe(100);
    expect(value(s, "cea_stream_hard_limit_entries")).toBe(200);
    expect(value(s, "cea_stream_length_entries")).toBeGreaterThan(0);
    const age = value(s, "cea_stream_oldest_unacked_age_seconds")!;
    expect(age).toBeGreaterThan(0);
    expect(age).toBeLessThan(120);
    expect(value(s, "cea_redis_up")).toBe(1);
    expect(value(s, "cea_service_info", { service: "can-scanner" })).toBe(1);
    expect(value(s, "process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("SIGTERM stops it, exit 0, the listener with it", async () => {
    expect(svc.exit, svc.tail()).toBeUndefined();
    expect(await svc.kill("SIGTERM", 20_000)).toEqual({ code: 0, signal: null });
    await expect(fetch(url)).rejects.toThrow();
  });
});
