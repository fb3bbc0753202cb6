import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { Simulation } from "../../pipeline/can/simulator.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { type PrivateRedis, startPrivateRedis } from "../support/private-redis.js";
import { killAll, pipelineEnv, spawnService, waitUntil } from "../support/procs.js";
import { stats } from "../support/reconcile.js";

// The scanner's buffer when Redis misbehaves (a private, append-only Redis of
// this file's own): a trim script Redis refuses must not cost the buffer, and
// a stop while Redis is down must not lose what the buffer holds.

const SIM_START = "2026-03-01T00:00:00Z";

/** Every frame the simulator produces for simulated seconds [0, n), as "ts id" keys. */
async function simulated(n: number, startIso = SIM_START): Promise<string[]> {
  const files = { siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") };
  const opts = {
    table: (await loadDecodeTable(files)).table,
    site: await loadSite(files.siteFile),
    startMs: Date.parse(startIso),
    speed: 1,
    iface: "sim0",
  };
  const out: string[] = [];
  // the scanner's simulator: the sensor frames and the actuator nodes' status frames, second by second
  const sim = new Simulation({ ...opts, candb: loadCanDb(files.canDbFile) });
  for (let k = 0; k < n; k++) for (const f of sim.next()) out.push(`${f.ts} ${f.id}`);
  return out;
}

const entryKeys = async (redis: Redis, stream: string) =>
  (await redis.xrange(stream, "-", "+")).map(([, f]) => {
    const o = Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i]!, f[2 * i + 1]!]));
    return `${o.ts} ${o.id}`;
  });

describe("scanner buffer when Redis misbehaves", () => {
  let rs: PrivateRedis;
  let redis: Redis;
  const dir = mkdtempSync(join(tmpdir(), "cea-spool-"));
  const prefix = "s:";
  const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });

  beforeAll(async () => {
    rs = await startPrivateRedis();
    redis = new Redis(rs.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    redis.on("error", () => undefined);
  });
  afterEach(async () => {
    await killAll();
    if (!rs.running()) await rs.start();
    await redis.flushall();
  });
  afterAll(async () => {
    redis?.disconnect();
    await rs?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const env = (extra: Record<string, string | number>, url = rs.url) =>
    pipelineEnv({
      databaseUrl: "postgresql://unused@127.0.0.1:1/unused",
      redisUrl: url,
      prefix,
      extra: { CEA_CAN_SOURCE: "simulator", CEA_SIM_START: SIM_START, ...extra },
    });

  it("a trim Redis refuses is reported, not fatal: every frame is appended, health names the failure, the exit says so", async () => {
    // a user that may do everything but run scripts: every trim fails with NOPERM
    await redis.call("ACL", "SETUSER", "scanner", "on", ">scanner-pw", "~*", "&*", "+@all", "-@scripting");
    const url = new URL(rs.url);
    url.username = "scanner";
    url.password = "scanner-pw";
    const seconds = 3_600; // far more than the 20 000 appends after which the flush loop trims
    const scanner = spawnService(
      "can-scanner",
      env({ CEA_SIM_SPEED: 3_600, CEA_SIM_DURATION_S: seconds, CEA_SCANNER_SPOOL: join(dir, "acl.spool") }, `${url}`),
    );
    const exit = await scanner.waitExit(120_000);
    const sent = await simulated(seconds);
    expect(sent.length).toBeGreaterThan(20_000);
    // nothing lost to a crash: every frame is in the stream and counted
    expect(await redis.xlen(keys.raw)).toBe(sent.length);
    expect((await stats(redis, keys.stats("can-scanner"))).appended).toBe(sent.length);
    const health = JSON.parse((await redis.get(keys.health("can-scanner"))) ?? "{}") as {
      status?: string;
      problems?: string[];
    };
    expect(health.status).toBe("degraded");
    expect(health.problems?.join(" ")).toMatch(/stream trim failing: NOPERM/);
    // an orderly exit, non-zero because the stream could not be trimmed
    expect(exit).toEqual({ code: 1, signal: null });
    expect(scanner.tail(200)).toContain("every frame appended, but the stream trim still fails");
    expect(scanner.tail(200)).not.toMatch(/unhandled/i);
  }, 180_000);

  it("stopped while Redis is down: the buffer is spooled and appended first at the next start, with no gap", async () => {
    const spool = join(dir, "down.spool");
    const first = spawnService("can-scanner", env({ CEA_SIM_SPEED: 20, CEA_SCANNER_SPOOL: spool }));
    await waitUntil(
      "the first frames appended",
      async () => (((await stats(redis, keys.stats("can-scanner"))).appended ?? 0) >= 100 ? true : undefined),
      30_000,
    );
    await rs.kill9();
    await first.waitForLog((l) => l.msg === "redis unavailable; reconnecting", 30_000);
    // let the simulator produce a few seconds of frames into the buffer (20 simulated seconds per second)
    await new Promise((r) => setTimeout(r, 500));
    expect(await first.kill("SIGTERM", 20_000)).toEqual({ code: 0, signal: null });
    const kept = first.logs.find((l) => l.msg?.startsWith("Redis unreachable at stop"));
    expect(kept?.frames).toBeGreaterThan(0);
    expect(existsSync(spool)).toBe(true);

    await rs.start();
    const second = spawnService(
      "can-scanner",
      env({
        CEA_SIM_START: "2026-03-02T00:00:00Z",
        CEA_SIM_SPEED: 20,
        CEA_SIM_DURATION_S: 2,
        CEA_SCANNER_SPOOL: spool,
      }),
    );
    expect(await second.waitExit(60_000)).toEqual({ code: 0, signal: null });
    expect(existsSync(spool)).toBe(false);

    // the first run's frames: every simulated second from the start to the last one it produced, none missing
    const firstRun = (await entryKeys(redis, keys.raw)).filter((k) => k < "2026-03-02");
    const seconds = new Set(firstRun.map((k) => k.slice(0, 19))).size;
    expect(new Set(firstRun)).toEqual(new Set(await simulated(seconds)));
    expect(firstRun.length).toBeGreaterThanOrEqual((await simulated(seconds)).length);
    const st = await stats(redis, keys.stats("can-scanner"));
    expect(st.appended).toBe(await redis.xlen(keys.raw));
    expect(st.dropped_buffer ?? 0).toBe(0);
  }, 180_000);

  it("stopped while Redis is down and the spool cannot be written: the frames lost are counted and the exit is non-zero", async () => {
    const scanner = spawnService(
      "can-scanner",
      env({ CEA_SIM_SPEED: 20, CEA_SCANNER_SPOOL: "/proc/cea-no-such-dir/can-scanner.spool" }),
    );
    await waitUntil(
      "the first frames appended",
      async () => (((await stats(redis, keys.stats("can-scanner"))).appended ?? 0) >= 100 ? true : undefined),
      30_000,
    );
    await rs.kill9();
    await scanner.waitForLog((l) => l.msg === "redis unavailable; reconnecting", 30_000);
    await new Promise((r) => setTimeout(r, 500));
    const exit = await scanner.kill("SIGTERM", 20_000);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(scanner.tail(50)).toMatch(
      /[1-9]\d* frames lost at stop \(Redis unreachable, and the spool \/proc\/cea-no-such-dir/,
    );
  }, 120_000);
});
