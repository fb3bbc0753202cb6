import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { CanFrame, FrameSource } from "../../pipeline/can/frame.js";
import { formatCandumpLine } from "../../pipeline/can/replay.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { startScanner } from "../../pipeline/runtime/scanner.js";
import { IngestLedger, spoolTarget } from "../../stages/append/ledger.js";
import { BusEndedError, frameChunks } from "../../stages/can-ingest.js";
import { type ScannerChainDeps, scannerChain } from "../../stages/chains.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { testPrefix } from "../support/db.js";
import { killAll, pipelineEnv, spawnService } from "../support/procs.js";

// The scanner's behaviour at its edges, against the real Redis of the stack:
// which source it reads by default, what every entry says about its source,
// a replayed log with bad lines, and a live bus that goes away.

/** The scanner's chain over `source`, as can-scanner runs it; resolves with the run's result. */
async function runScanner(deps: Omit<ScannerChainDeps, "ledger" | "source">, source: FrameSource) {
  const log = createLogger("test", "silent");
  const chain = scannerChain({ ...deps, ledger: new IngestLedger(log), source });
  return (await startScanner({ log, source: frameChunks(source), chain })).done;
}

const fields = (f: string[]) =>
  Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i]!, f[2 * i + 1]!]));

describe("can-scanner", () => {
  let redis: Redis;
  const prefixes: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "cea-scanner-"));
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
    rmSync(dir, { recursive: true, force: true });
  });
  const setup = (extra: Record<string, string | number>) => {
    const prefix = testPrefix();
    prefixes.push(prefix);
    const keys = redisKeys({ CEA_REDIS_PREFIX: prefix, CEA_STREAM: "can:raw", CEA_DEAD_STREAM: "can:dead" });
    const env = pipelineEnv({
      databaseUrl: "postgresql://unused@127.0.0.1:1/unused",
      redisUrl: inject("redisUrl"),
      prefix,
      extra: { CEA_SCANNER_SPOOL: join(dir, `${prefix.replace(/:/g, "_")}.spool`), ...extra },
    });
    return { keys, env };
  };

  it("reads the live bus by default: a missing interface stops it, naming the interface, and nothing is invented", async () => {
    const { keys, env } = setup({ CEA_CAN_INTERFACE: "ceanone0" });
    const scanner = spawnService("can-scanner", env);
    const exit = await scanner.waitExit(30_000);
    expect(exit.code).toBe(1);
    expect(scanner.tail()).toContain("cannot open the CAN interface ceanone0 (CEA_CAN_INTERFACE)");
    expect(await redis.exists(keys.raw)).toBe(0);
  });

  it("auto (the demo's choice) falls back to the simulator, and every entry and the health say so", async () => {
    const { keys, env } = setup({
      CEA_CAN_SOURCE: "auto",
      CEA_CAN_INTERFACE: "ceanone0",
      CEA_SIM_START: "2026-03-01T00:00:00Z",
      CEA_SIM_SPEED: 600,
      CEA_SIM_DURATION_S: 60,
    });
    const scanner = spawnService("can-scanner", env);
    expect(await scanner.waitExit(60_000)).toEqual({ code: 0, signal: null });
    // the declared chain, described at start-up like the worker's
    expect(scanner.logs.find((l) => l.msg === "stage chain")?.chain).toBe(
      "can-frames → command-status → can-frames → can-ingest → can-entries → stream-append → raw-stream",
    );
    const entries = await redis.xrange(keys.raw, "-", "+");
    expect(entries.length).toBeGreaterThan(0);
    expect(new Set(entries.map(([, f]) => fields(f).src))).toEqual(new Set(["simulator"]));
    const health = JSON.parse((await redis.get(keys.health("can-scanner"))) ?? "{}") as Record<string, unknown>;
    expect(health).toMatchObject({ status: "ok", source: "simulator", src: "simulator" });
  });

  it("replay: a bad line costs only itself; it is counted and reported with file:line, and entries say src=replay", async () => {
    const good: CanFrame[] = Array.from({ length: 1_500 }, (_, i) => ({
      ts: new Date(Date.UTC(2026, 2, 1, 0, 0, i)).toISOString().replace("Z", "000Z"),
      id: 0x101,
      data: Buffer.from([i & 0xff, 0, 0, 0, 0, 0, 0, 0]),
      iface: "can0",
    }));
    const lines = good.map(formatCandumpLine);
    lines.splice(499, 0, "(1772323200.000000) can0 101#ABC"); // line 500
    const file = join(dir, "cut.log");
    writeFileSync(file, `${lines.join("\n")}\n(17723`); // line 1502: cut by a power loss
    const { keys, env } = setup({ CEA_CAN_SOURCE: "replay", CEA_REPLAY_FILE: file, CEA_REPLAY_SPEED: 0 });
    const scanner = spawnService("can-scanner", env);
    expect(await scanner.waitExit(60_000)).toEqual({ code: 0, signal: null });
    const entries = (await redis.xrange(keys.raw, "-", "+")).map(([, f]) => fields(f));
    expect(entries.map((e) => `${e.ts} ${e.data}`)).toEqual(
      good.map((f) => `${f.ts} ${Buffer.from(f.data).toString("hex").toUpperCase()}`),
    );
    expect(new Set(entries.map((e) => e.src))).toEqual(new Set(["replay"]));
    expect(await redis.hget(keys.stats("can-scanner"), "skipped_lines")).toBe("2");
    const reported = scanner.logs.filter((l) => l.msg?.startsWith("replay: line left out")).map((l) => l.err);
    expect(reported).toEqual([
      `${file}:500: data must be 0-8 bytes of hex, got "ABC"`,
      expect.stringMatching(/:1502: not a candump -l line/),
    ]);
  });

  it("a spool left by a stop while Redis was down is appended first, in order, its counters once, then removed", async () => {
    const prefix = testPrefix();
    prefixes.push(prefix);
    const config = loadConfig({
      CEA_REDIS_PREFIX: prefix,
      CEA_REDIS_URL: inject("redisUrl"),
      CEA_SCANNER_BUFFER: "200000",
    });
    const keys = redisKeys(config);
    const { table } = await loadDecodeTable({
      siteFile: projectPath("ops/site.json"),
      canDbFile: projectPath("ops/cea.kcd"),
    });
    // as large as a full buffer can be
    const n = 150_000;
    const spoolFile = join(dir, "big.spool");
    const ts = (i: number) => new Date(Date.UTC(2026, 2, 1) + i * 10).toISOString().replace("Z", "000Z");
    const target = spoolTarget(config.CEA_REDIS_URL, keys.raw);
    const lines = [JSON.stringify({ id: "t1", target, counters: { dropped_buffer: 7, skipped_lines: 0 }, frames: n })];
    for (let i = 0; i < n; i++)
      lines.push(JSON.stringify({ ts: ts(i), id: 0x101, data: "0011223344556677", iface: "can0", src: "socketcan" }));
    writeFileSync(spoolFile, `${lines.join("\n")}\n`);
    const client = createRedis(config.CEA_REDIS_URL);
    const empty: FrameSource = {
      name: "simulator",
      src: "simulator",
      pausable: true,
      close() {},
      async *frames() {},
    };
    const run = () => runScanner({ config, redis: client, keys, table, spoolFile }, empty);
    try {
      expect(await run()).toMatchObject({ reason: "end", stages: { "stream-append": { spooled: 0 } } });
      expect(existsSync(spoolFile)).toBe(false);
      const entries = await redis.xrange(keys.raw, "-", "+");
      expect(entries.length).toBe(n);
      expect(entries.map(([, f]) => fields(f).ts)).toEqual(Array.from({ length: n }, (_, i) => ts(i)));
      expect(new Set(entries.map(([, f]) => fields(f).src))).toEqual(new Set(["socketcan"]));
      expect(await redis.hget(keys.stats("can-scanner"), "dropped_buffer")).toBe("7");
      // the same file again (a crash before it was removed): its frames again, its counters not
      writeFileSync(spoolFile, `${lines.slice(0, 2).join("\n").replace(`"frames":${n}`, '"frames":1')}\n`);
      await run();
      expect(await redis.hget(keys.stats("can-scanner"), "dropped_buffer")).toBe("7");
      expect(await redis.xlen(keys.raw)).toBe(n + 1);
      // a spool written for another stream is never appended here
      writeFileSync(
        spoolFile,
        `${lines.slice(0, 2).join("\n").replace(`"frames":${n}`, '"frames":1').replace(target, "redis://elsewhere:1 can:raw")}\n`,
      );
      await run();
      expect(await redis.xlen(keys.raw)).toBe(n + 1);
      expect(existsSync(spoolFile)).toBe(true);
    } finally {
      client.disconnect();
    }
  }, 120_000);

  it("a live bus that ends is a failure: every frame it gave is appended, then the run fails", async () => {
    const prefix = testPrefix();
    prefixes.push(prefix);
    const config = loadConfig({ CEA_REDIS_PREFIX: prefix, CEA_REDIS_URL: inject("redisUrl") });
    const keys = redisKeys(config);
    const { table } = await loadDecodeTable({
      siteFile: projectPath("ops/site.json"),
      canDbFile: projectPath("ops/cea.kcd"),
    });
    const client = createRedis(config.CEA_REDIS_URL);
    const frames: CanFrame[] = Array.from({ length: 30 }, (_, i) => ({
      ts: `2026-03-01T00:00:${String(i).padStart(2, "0")}.000000Z`,
      id: 0x101,
      data: Buffer.alloc(8, i),
      iface: "can0",
    }));
    // what the socketcan source does when the interface goes down: its iterator ends
    const bus: FrameSource = {
      name: "socketcan:can0",
      src: "socketcan",
      pausable: false,
      close() {},
      async *frames() {
        yield frames.slice(0, 10);
        yield frames.slice(10);
      },
    };
    try {
      const err = await runScanner(
        { config, redis: client, keys, table, spoolFile: join(dir, "bus.spool") },
        bus,
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusEndedError);
      expect((err as Error).message).toContain("socketcan:can0: the CAN interface stopped delivering frames");
      const entries = (await redis.xrange(keys.raw, "-", "+")).map(([, f]) => fields(f));
      expect(entries.map((e) => e.ts)).toEqual(frames.map((f) => f.ts));
      expect(new Set(entries.map((e) => e.src))).toEqual(new Set(["socketcan"]));
    } finally {
      client.disconnect();
    }
  });
});
