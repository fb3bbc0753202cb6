import type { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { inject } from "vitest";
import type { ReadingColumns } from "../../db/readings.js";
import { type CanFrame, toHex } from "../../pipeline/can/frame.js";
import type { DecodeTable } from "../../pipeline/can/table.js";
import { type Config, databaseUrl, loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger, type Logger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import type { Batch, Chain } from "../../pipeline/runtime/stage.js";
import type { StreamEntries } from "../../pipeline/runtime/stream.js";
import { type Component, startWorker, type WorkerHandle, workerSettings } from "../../pipeline/runtime/worker.js";
import { type WorkerChainDeps, workerChain } from "../../stages/chains.js";
import { packEntries } from "../../stages/decode/pack.js";
import { decodePacked, unpackSignals } from "../../stages/decode/signals.js";
import { Deriver } from "../../stages/derived.js";
import { expectedRows } from "../../stages/expected.js";
import { AggregateMaintenance } from "../../stages/maintenance.js";
import { resolveReadings } from "../../stages/resolve-sensor.js";
import { loadDecodeTable, SensorMap } from "../../stages/sensor-map.js";
import { roleUrl } from "../support/roles.js";

// Shared by the pipeline tests: in-process workers on the real stack, and the
// entry-by-entry reconciliation of sent frames against `measurement`.

export function testConfig(dbUrl: string, prefix: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    CEA_DATABASE_URL: dbUrl,
    // the worker as its own role (cea_writer), as in production
    CEA_WORKER_DATABASE_URL: roleUrl(dbUrl, "worker"),
    CEA_REDIS_URL: inject("redisUrl"),
    CEA_REDIS_PREFIX: prefix,
    CEA_LOG_LEVEL: "silent",
    CEA_FLUSH_MS: "50",
    ...extra,
  });
}

export interface TestWorker {
  handle: WorkerHandle;
  redis: Redis;
  pool: pg.Pool;
  map: SensorMap;
  /** Counters of one stage (e.g. batch-copy's inserted, rows, fallbacks), as of now. */
  counters(stage: string): Record<string, number>;
  stop(): Promise<void>;
}

/**
 * An in-process worker with the product's chain (or one the test builds from
 * the same deps), its sensor map and aggregate upkeep, on the real stack.
 */
export async function startTestWorker(
  config: Config,
  build: (deps: WorkerChainDeps) => Chain<StreamEntries, unknown> = workerChain,
  extra: { components?: Component[]; pool?: pg.Pool; log?: Logger } = {},
): Promise<TestWorker> {
  const log = extra.log ?? createLogger(`test-worker:${config.CEA_CONSUMER}`, config.CEA_LOG_LEVEL);
  const redis = createRedis(config.CEA_REDIS_URL);
  const pool =
    extra.pool ??
    new pg.Pool({ connectionString: databaseUrl(config, "worker"), max: config.CEA_WRITE_CONCURRENCY + 1 });
  pool.on("error", () => undefined);
  const keys = redisKeys(config);
  const map = new SensorMap(
    { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) },
    pool,
  );
  let handle: WorkerHandle;
  try {
    handle = await startWorker({
      settings: workerSettings(config, "can-worker", keys.health(config.CEA_CONSUMER)),
      log,
      redis,
      chain: build({ config, pool, redis, keys, map }),
      components: [map, new AggregateMaintenance(pool, config.CEA_AGG_REFRESH_MS), ...(extra.components ?? [])],
    });
  } catch (err) {
    if (!extra.pool) await pool.end();
    redis.disconnect();
    throw err;
  }
  return {
    handle,
    redis,
    pool,
    map,
    counters: (stage) => handle.stats.stages[stage] ?? {},
    async stop() {
      await handle.stop();
      if (!extra.pool) await pool.end();
      await redis.quit();
    },
  };
}

/** The readings the worker's decode + resolve-sensor + derived make of these entries (no Redis, no database). */
export function readingsOf(
  table: DecodeTable,
  entries: readonly { ts: string; id: number | string; data: string; src?: string }[],
): ReadingColumns {
  const fields = entries.map((e) => {
    const f = ["ts", e.ts, "id", String(e.id), "data", e.data];
    if (e.src) f.push("src", e.src);
    return f;
  });
  const batch: Batch = {
    seq: 0,
    ids: fields.map((_, i) => `0-${i + 1}`),
    fields,
    deliveries: null,
    dead: new Map(),
    skip: new Set(),
  };
  const out = decodePacked({ ...packEntries(fields, () => false), table });
  const { rows } = resolveReadings(batch, unpackSignals(out, table));
  if (batch.dead.size) throw new Error(`readingsOf: ${[...batch.dead.values()][0]!.reason}`);
  new Deriver(0).add(table.derived, rows);
  return rows;
}

export async function siteTable(): Promise<DecodeTable> {
  return (await loadDecodeTable({ siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") }))
    .table;
}

export const asEntry = (f: CanFrame) => ({ ts: f.ts, id: f.id, data: toHex(f.data), iface: f.iface });

/** A logger whose JSON lines are kept in `lines` (level ≥ info), for tests that count log lines. */
export function collectingLogger(): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino(
    { level: "info" },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as { level: number; msg: string });
      },
    },
  );
  return { log, lines };
}

export async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Rows one simulated second of ops/site.json gives: its 50 mapped signals, and
 * the derived sensors of its 3 rooms with derived ones (3 each), whose inputs
 * share the Climate frame.
 */
export const SIM_ROWS_PER_SECOND = 50 + 3 * 3;

export interface Reconciliation {
  expected: number;
  stored: number;
  lost: number;
  duplicated: number;
  unexpected: number;
  wrongValue: number;
}

/** Every row the entries should give vs every row in `measurement`, by (sensor_id, time) with the exact value. */
export async function reconcile(
  db: pg.Pool,
  table: DecodeTable,
  entries: readonly { ts: string; id: number | string; data: string }[],
): Promise<Reconciliation> {
  const want = new Map<string, number>();
  for (const e of entries) {
    let rows: ReturnType<typeof expectedRows>;
    try {
      rows = expectedRows(table, e);
    } catch {
      continue; // dead letters: checked separately by the tests
    }
    for (const r of rows) want.set(`${r.sensor_id}|${r.time}`, r.value);
  }
  const { rows } = await db.query<{ sensor_id: number; time: string; value: number }>(
    `SELECT sensor_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time, value FROM measurement`,
  );
  const seen = new Map<string, number>();
  let unexpected = 0;
  let wrongValue = 0;
  for (const r of rows) {
    const k = `${r.sensor_id}|${r.time}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
    const v = want.get(k);
    if (v === undefined) unexpected++;
    else if (v !== r.value) wrongValue++;
  }
  let lost = 0;
  let duplicated = 0;
  for (const k of want.keys()) {
    const n = seen.get(k) ?? 0;
    if (n === 0) lost++;
    if (n > 1) duplicated += n - 1;
  }
  return { expected: want.size, stored: rows.length, lost, duplicated, unexpected, wrongValue };
}
