import type { Redis } from "ioredis";
import pg from "pg";
import { inject } from "vitest";
import { type CanFrame, toHex } from "../../pipeline/can/frame.js";
import type { DecodeTable } from "../../pipeline/can/table.js";
import { type Config, databaseUrl, loadConfig } from "../../pipeline/runtime/config.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { startWorker, type WorkerHandle } from "../../pipeline/runtime/worker.js";
import { WORKER_STAGES } from "../../stages/chains.js";
import { expectedRows } from "../../stages/decode.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";
import { roleUrl } from "../support/roles.js";

// Shared by the pipeline tests: in-process workers on the real stack, and the
// entry-by-entry reconciliation of sent frames against `measurement`.

export { WORKER_STAGES };

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
  stop(): Promise<void>;
}

export async function startTestWorker(config: Config, stages = WORKER_STAGES): Promise<TestWorker> {
  const log = createLogger(`test-worker:${config.CEA_CONSUMER}`, config.CEA_LOG_LEVEL);
  const redis = createRedis(config.CEA_REDIS_URL);
  const pool = new pg.Pool({ connectionString: databaseUrl(config, "worker"), max: config.CEA_WRITE_CONCURRENCY + 1 });
  pool.on("error", () => undefined);
  const handle = await startWorker({
    config,
    log,
    redis,
    pool,
    stages,
    options: {
      decode: { threads: config.CEA_DECODE_THREADS },
      "batch-copy": { concurrency: config.CEA_WRITE_CONCURRENCY },
    },
  });
  return {
    handle,
    redis,
    pool,
    async stop() {
      await handle.stop();
      await pool.end();
      await redis.quit();
    },
  };
}

export async function siteTable(): Promise<DecodeTable> {
  return (await loadDecodeTable({ siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") }))
    .table;
}

export const asEntry = (f: CanFrame) => ({ ts: f.ts, id: f.id, data: toHex(f.data), iface: f.iface });

export async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

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
