import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createPool } from "../db/pool.js";
import { insertSetpoints, setpointsInForce } from "../db/queries/automation.js";
import { applySchema } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { controlPlan, decide, type Reading } from "../pipeline/automation/controller.js";
import { AutomationService } from "../pipeline/automation/service.js";
import { loadCanDb } from "../pipeline/can/candb.js";
import { buildCommandTable } from "../pipeline/can/commands.js";
import { loadConfig } from "../pipeline/runtime/config.js";
import { redisKeys } from "../pipeline/runtime/keys.js";
import { createLogger } from "../pipeline/runtime/log.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { createRedis } from "../pipeline/runtime/redis.js";
import type { Bench, BenchRow } from "./lib.js";

// automation-service's decision cycle for every actuator of the site file, as
// CPU time of this process (process.cpuUsage) per cycle, while can-scanner
// (simulated nodes, every sensor once a second: the nominal rate) and
// can-worker run as their own processes on the same machine. Reported as a
// share of one core at the service's interval (1 s). Cases, same run:
//   - the I/O floor (baseline): the cycle's reads alone (live hash, setpoints);
//   - the pure decision (controller only, no I/O);
//   - the whole cycle (reads, decisions, command frames, events, health).
// Cycles run back to back (CPU per cycle does not depend on the pause
// between them); the machine is shared, so CPU time, not wall time, is the figure.

const INTERVAL_MS = 1_000;

function cpuMs(run: () => Promise<void> | void): Promise<number> {
  const t0 = process.cpuUsage();
  return Promise.resolve(run()).then(() => {
    const d = process.cpuUsage(t0);
    return (d.user + d.system) / 1000;
  });
}

const bench: Bench = async (ctx) => {
  const cycles = Math.max(50, Math.round(500 * ctx.scale));
  const name = `cea_bench_auto_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ctx.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(ctx.databaseUrl);
  url.pathname = `/${name}`;
  const dbUrl = url.toString();
  const owner = createPool(dbUrl, { max: 2 });
  const children: ChildProcess[] = [];
  const prefix = `bench:auto:${randomBytes(3).toString("hex")}:`;
  const redis = createRedis(ctx.redisUrl, undefined, "bench-automation");
  try {
    await applySchema(owner);
    const site = await loadSite(projectPath("ops/site.json"));
    const c = await owner.connect();
    try {
      await syncSite(c, site);
    } finally {
      c.release();
    }
    const rooms = [...new Set(site.actuators.map((a) => a.room_id))];
    await insertSetpoints(
      owner,
      rooms.flatMap((room_id) => [
        {
          room_id,
          quantity: "air_temperature" as const,
          period: "any" as const,
          target: 24,
          tolerance: 2,
          effective_from: null,
          created_by: "bench",
        },
        {
          room_id,
          quantity: "relative_humidity" as const,
          period: "any" as const,
          target: 60,
          tolerance: 8,
          effective_from: null,
          created_by: "bench",
        },
        {
          room_id,
          quantity: "co2" as const,
          period: "any" as const,
          target: 900,
          tolerance: 200,
          effective_from: null,
          created_by: "bench",
        },
      ]),
    );

    // scanner (simulated nodes at the nominal rate) and worker, as the demo runs them
    const base: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CEA_")) base[k] = v;
    const env = {
      ...base,
      CEA_DATABASE_URL: dbUrl,
      CEA_REDIS_URL: ctx.redisUrl,
      CEA_REDIS_PREFIX: prefix,
      CEA_CAN_SOURCE: "simulator",
      CEA_METRICS: "false",
      CEA_LOG_LEVEL: "warn",
      CEA_SCANNER_SPOOL: `/tmp/${name}.spool`,
    };
    for (const s of ["can-worker", "can-scanner"])
      children.push(spawn(process.execPath, [projectPath(`dist/pipeline/${s}.js`)], { env, stdio: "ignore" }));
    const keys = redisKeys({ ...loadConfig({}), CEA_REDIS_PREFIX: prefix });
    for (let i = 0; i < 100 && (await redis.hlen(keys.live)) < 50; i++) await new Promise((r) => setTimeout(r, 200));
    const liveSensors = await redis.hlen(keys.live);
    ctx.log(`live values of ${liveSensors} sensors; ${cycles} cycles per case`);

    const auto = new pg.Pool({ connectionString: dbUrl, max: 2 });
    const log = createLogger("bench-automation", "silent");
    const svc = new AutomationService({
      config: loadConfig({}),
      site,
      commands: buildCommandTable(loadCanDb(projectPath("ops/cea.kcd")), site, "ops/site.json"),
      redis,
      db: auto,
      keys,
      log,
      dryRun: false,
    });
    // warm-up: connections, JIT
    for (let i = 0; i < 20; i++) await svc.cycle();

    const ioMs = await cpuMs(async () => {
      for (let i = 0; i < cycles; i++) {
        await redis.hgetall(keys.live);
        await setpointsInForce(auto, new Date());
      }
    });
    const plan = controlPlan(site);
    const readings = new Map<number, Map<string, Reading[]>>(
      rooms.map((r) => [
        r,
        new Map(
          ["air_temperature", "relative_humidity", "co2"].map((k) => [
            k,
            [{ sensor: "s", value: 20, timeMs: Date.now(), status: null }],
          ]),
        ),
      ]),
    );
    const setpoints = (await setpointsInForce(auto, new Date())).map((r) => ({
      ...r,
      effectiveFromMs: r.effective_from.getTime(),
    }));
    let state = new Map();
    const decideMs = await cpuMs(() => {
      for (let i = 0; i < cycles; i++)
        state = decide(
          plan,
          state,
          { nowMs: Date.now(), readings, setpoints, outage: null },
          { staleMs: 60_000 },
        ).state;
    });
    const cycleMs = await cpuMs(async () => {
      for (let i = 0; i < cycles; i++) await svc.cycle();
    });
    await auto.end();

    const per = (ms: number) => ms / cycles;
    const share = (ms: number) => (per(ms) / INTERVAL_MS) * 100;
    const rows: BenchRow[] = [
      { case: "I/O floor: live hash + setpoints read", value: per(ioMs), unit: "CPU ms/cycle" },
      {
        case: "pure decision (controller)",
        value: per(decideMs),
        unit: "CPU ms/cycle",
        baseline: "I/O floor",
        ratio: decideMs / ioMs,
      },
      {
        case: "whole decision cycle",
        value: per(cycleMs),
        unit: "CPU ms/cycle",
        baseline: "I/O floor",
        ratio: cycleMs / ioMs,
      },
      {
        case: `whole cycle at ${INTERVAL_MS} ms interval`,
        value: share(cycleMs),
        unit: "% of one core",
        target: "< 1 %",
        met: share(cycleMs) < 1,
        note: `${site.actuators.length} actuators in ${rooms.length} rooms; can-scanner (simulator, ${liveSensors} sensors at 1 Hz) and can-worker running`,
      },
    ];
    return { rows, params: { cycles, actuators: site.actuators.length, interval_ms: INTERVAL_MS } };
  } finally {
    for (const ch of children) ch.kill("SIGTERM");
    await Promise.all(children.map((ch) => new Promise((r) => (ch.exitCode !== null ? r(null) : ch.once("exit", r)))));
    const left = await redis.keys(`${prefix}*`);
    if (left.length) await redis.del(...left);
    redis.disconnect();
    await owner.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
};

export default bench;
