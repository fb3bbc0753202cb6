#!/usr/bin/env node
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createPool, poolSettings } from "../db/pool.js";
import { applySchema, formatVerifyReport, verifySchema } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { loadCanDb } from "./can/candb.js";
import { cycleIntervals } from "./can/intervals.js";
import { databaseUrl, loadConfig } from "./runtime/config.js";
import { redisKeys } from "./runtime/keys.js";
import { freePort } from "./runtime/net.js";
import { projectPath, projectRoot } from "./runtime/paths.js";
import { createRedis } from "./runtime/redis.js";
import { runMain } from "./runtime/shutdown.js";
import { redactUrl, withStackEnv } from "./runtime/stack-env.js";
import { pendingCount } from "./runtime/stream.js";

// `npm run demo`: the whole system on its embedded defaults against the local
// stack that ops/stack.sh brought up: schema, site, then the services as child
// processes, with a progress line every few seconds. Ctrl-C / SIGTERM (or
// CEA_DEMO_SECONDS) stops the scanner first, then waits (bounded) until the
// group has nothing pending, then stops the rest.

/** The services the demo runs, started in this order and stopped scanner-first. */
const SERVICES: { name: string; script: string; args?: string[] }[] = [
  { name: "can-worker", script: "dist/pipeline/can-worker.js" },
  { name: "can-scanner", script: "dist/pipeline/can-scanner.js" },
  { name: "cea-backend", script: "dist/pipeline/cea-backend.js" },
  // decides and records, sends nothing: the demo's nodes are simulated
  { name: "automation-service", script: "dist/pipeline/automation-service.js", args: ["--dry-run"] },
];

/** The automation-service decisions recorded since the demo started, newest last. */
const DECISIONS = `SELECT to_char(time AT TIME ZONE 'UTC', 'HH24:MI:SS') AS at, actuator, action, reason
FROM actuator_events WHERE time >= $1 ORDER BY event_id DESC LIMIT 6`;

const PROGRESS = `SELECT r.name AS room, count(*)::int AS rows,
  to_char(max(m.time) AT TIME ZONE 'UTC', 'HH24:MI:SS') AS newest,
  -- a climate reading, not a node's applied output bit, when the room has one
  (array_agg(s.name || ' ' || round(m.value::numeric, 2) || ' ' || s.unit
     ORDER BY s.kind IS NOT DISTINCT FROM 'state', m.time DESC))[1] AS latest
FROM measurement m JOIN sensor s USING (sensor_id) JOIN device d USING (device_id) JOIN room r USING (room_id)
WHERE m.time >= $1 GROUP BY r.name ORDER BY r.name`;

/**
 * Demo setpoints for rooms without any: the room's target temperature (else
 * 22 °C) ± 2, 60 % ± 8 RH, CO2 900 ± 200 ppm by day and 500 by night.
 */
const DEMO_SETPOINTS = `WITH rooms AS (
    SELECT r.room_id, coalesce(r.target_temp, 22) AS t FROM room r
    WHERE r.room_id = ANY($1::int[]) AND NOT EXISTS (SELECT 1 FROM setpoints s WHERE s.room_id = r.room_id)),
  ins AS (
    INSERT INTO setpoints (room_id, quantity, period, target, tolerance, created_by)
    SELECT room_id, q, p, v, b, 'demo' FROM rooms CROSS JOIN LATERAL (VALUES
      ('air_temperature', 'any', t, 2.0), ('relative_humidity', 'any', 60.0, 8.0),
      ('co2', 'day', 900.0, 200.0), ('co2', 'night', 500.0, 200.0)) v(q, p, v, b)
    RETURNING 1)
  SELECT count(*)::int AS n FROM ins`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const env = withStackEnv();
  const config = loadConfig(env);
  // the set-up as the schema owner; the progress lines as the read-only role, like the monitors
  const pool = createPool(config.CEA_DATABASE_URL, { max: 2, application: "cea-demo", ...poolSettings(config) });
  const reader = createPool(databaseUrl(config, "reader"), {
    max: 1,
    application: "cea-demo",
    ...poolSettings(config),
  });
  const redis = createRedis(config.CEA_REDIS_URL, undefined, "cea-demo");
  const keys = redisKeys(config);
  const children = new Map<string, ChildProcess>();
  const exits = new Map<string, Promise<number | null>>();
  try {
    await applySchema(pool);
    const report = await verifySchema(pool);
    process.stdout.write(`${formatVerifyReport(report)}\n`);
    if (!report.ok) throw new Error("schema verification failed");
    const client = await pool.connect();
    try {
      const site = await loadSite(projectPath(config.CEA_SITE_FILE));
      const defaultIntervalS = cycleIntervals(loadCanDb(projectPath(config.CEA_CAN_DB_FILE)), site);
      const r = await syncSite(client, site, { defaultIntervalS });
      process.stdout.write(`site: ${r.rooms} rooms, ${r.devices} devices, ${r.sensors} sensors\n`);
      // setpoints for the controlled rooms that have none yet (an operator's own are kept)
      const added = await client.query<{ n: number }>(DEMO_SETPOINTS, [site.actuators.map((a) => a.room_id)]);
      if (added.rows[0]?.n) process.stdout.write(`demo setpoints added: ${added.rows[0].n}\n`);
    } finally {
      client.release();
    }
    process.stdout.write(
      [
        "",
        `PostgreSQL + TimescaleDB  ${redactUrl(config.CEA_DATABASE_URL)}`,
        `Redis                     ${redactUrl(config.CEA_REDIS_URL)}`,
        `site file                 ${projectPath(config.CEA_SITE_FILE)}`,
        `CAN database              ${projectPath(config.CEA_CAN_DB_FILE)}`,
        "",
      ].join("\n"),
    );

    // Simulated nodes when there is no bus: the demo's choice only (production reads
    // the bus or stops), and its readings are stored as simulated.
    if (!env.CEA_CAN_SOURCE) env.CEA_CAN_SOURCE = "auto";

    // The API: the caller's port and token when given, else a free port and a
    // token made for this run (printed below; write routes need it).
    if (!env.CEA_HTTP_PORT) env.CEA_HTTP_PORT = String(await freePort(config.CEA_HTTP_PORT));
    if (!env.CEA_API_TOKEN) env.CEA_API_TOKEN = randomBytes(24).toString("base64url");
    const api = `http://${config.CEA_HTTP_HOST}:${env.CEA_HTTP_PORT}/api/v1`;

    const since = new Date();
    const logDir = join(env.CEA_STATE_DIR ?? join(projectRoot(), ".state"), "demo-logs");
    mkdirSync(logDir, { recursive: true });
    for (const s of SERVICES) {
      const out = createWriteStream(join(logDir, `${s.name}.log`), { flags: "a" });
      // own process group: Ctrl-C reaches the demo only, which stops the services in order
      const child = spawn(process.execPath, [projectPath(s.script), ...(s.args ?? [])], {
        env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout?.pipe(out);
      child.stderr?.pipe(out);
      children.set(s.name, child);
      exits.set(s.name, new Promise((r) => child.on("exit", (code) => r(code))));
      process.stdout.write(`started ${s.name} (pid ${child.pid}), log ${join(logDir, `${s.name}.log`)}\n`);
    }
    process.stdout.write(
      [
        "",
        `HTTP API                  ${api}  (OpenAPI: ${api}/openapi.json)`,
        `API token                 ${env.CEA_API_TOKEN}`,
        `  try: curl -H "Authorization: Bearer ${env.CEA_API_TOKEN}" ${api}/live`,
        ...(config.CEA_METRICS
          ? [
              `Prometheus metrics        http://${config.CEA_METRICS_HOST}:{${config.CEA_SCANNER_METRICS_PORT},${config.CEA_WORKER_METRICS_PORT},${config.CEA_BACKEND_METRICS_PORT},${config.CEA_AUTOMATION_METRICS_PORT}}/metrics (scanner, worker, API, automation)`,
              `alerts and silent sensors ${api}/health`,
            ]
          : []),
        `climate control            automation-service --dry-run: decisions below, in actuator_events and ${api}/rooms/1/actuator-events`,
        "Ctrl-C stops the demo (scanner first, then the worker once nothing is pending)",
        "",
        "",
      ].join("\n"),
    );

    const progress = async (label: string) => {
      const { rows } = await reader.query<{ room: string; rows: number; newest: string; latest: string }>(PROGRESS, [
        since,
      ]);
      const total = rows.reduce((n, r) => n + r.rows, 0);
      process.stdout.write(`${new Date().toISOString().slice(11, 19)}  ${label}: ${total}\n`);
      for (const r of rows)
        process.stdout.write(
          `    ${r.room.padEnd(14)} ${String(r.rows).padStart(7)}  newest ${r.newest}  ${r.latest}\n`,
        );
      const decisions = await reader.query<{ at: string; actuator: string; action: string; reason: string }>(
        DECISIONS,
        [since],
      );
      for (const d of decisions.rows.reverse())
        process.stdout.write(`    decision ${d.at} ${d.actuator} ${d.action}: ${d.reason} (dry run)\n`);
    };

    let stop = false;
    let why = "";
    const onSignal = (sig: string) => {
      if (stop) return;
      stop = true;
      why = sig;
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    // the demo's time counts from when the scanner reports (its stop handler is in place by then): on a
    // loaded machine starting four services can take longer than a short CEA_DEMO_SECONDS
    const upBy = Date.now() + 60_000;
    while (!stop && Date.now() < upBy && !(await redis.exists(keys.health("can-scanner")))) {
      if (children.get("can-scanner")?.exitCode !== null) break;
      await sleep(200);
    }
    const until = config.CEA_DEMO_SECONDS ? Date.now() + config.CEA_DEMO_SECONDS * 1000 : Number.POSITIVE_INFINITY;
    let nextReport = Date.now() + 5_000;
    while (!stop) {
      await sleep(200);
      if (Date.now() >= until) {
        stop = true;
        why = `CEA_DEMO_SECONDS=${config.CEA_DEMO_SECONDS}`;
      }
      for (const [name, c] of children)
        if (c.exitCode !== null)
          throw new Error(`${name} exited with ${c.exitCode}; see ${join(logDir, `${name}.log`)}`);
      if (Date.now() >= nextReport) {
        nextReport = Date.now() + 5_000;
        await progress("rows since start");
      }
    }
    process.stdout.write(`\nstopping (${why}): can-scanner first\n`);
    await stopChild("can-scanner", children, exits);
    const deadline = Date.now() + 20_000;
    let pending = await pendingCount(redis, keys.raw, config.CEA_GROUP);
    let lag = await groupLag(redis, keys.raw, config.CEA_GROUP);
    while ((pending > 0 || lag > 0) && Date.now() < deadline) {
      await sleep(200);
      pending = await pendingCount(redis, keys.raw, config.CEA_GROUP);
      lag = await groupLag(redis, keys.raw, config.CEA_GROUP);
    }
    for (const name of children.keys()) await stopChild(name, children, exits);
    pending = await pendingCount(redis, keys.raw, config.CEA_GROUP);
    process.stdout.write(`final pending entries in ${config.CEA_GROUP}: ${pending}\n`);
    // after the drain, so the figure is what was stored, however slow the machine
    await progress("rows stored since start");
    if (pending > 0 || lag > 0)
      throw new Error(`the worker did not drain the stream (pending ${pending}, unread ${lag})`);
  } finally {
    for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    redis.disconnect();
    await Promise.all([pool.end(), reader.end()]);
  }
  process.stdout.write("stop the stack with: npm run stack -- down\n");
}

async function stopChild(
  name: string,
  children: Map<string, ChildProcess>,
  exits: Map<string, Promise<number | null>>,
): Promise<void> {
  const c = children.get(name);
  if (!c || c.exitCode !== null) return;
  c.kill("SIGTERM");
  const code = await exits.get(name);
  process.stdout.write(`${name} stopped (exit ${code})\n`);
  if (code !== 0) throw new Error(`${name} exited with ${code}`);
}

/** Entries not yet delivered to the group (XINFO GROUPS lag; Redis 7). */
async function groupLag(redis: ReturnType<typeof createRedis>, stream: string, group: string): Promise<number> {
  const groups = (await redis.call("XINFO", "GROUPS", stream).catch(() => [])) as (string | number | null)[][];
  for (const g of groups) {
    const info = new Map<string, string | number | null>();
    for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1] ?? null);
    if (info.get("name") === group) return Number(info.get("lag") ?? 0);
  }
  return 0;
}

runMain(main);
