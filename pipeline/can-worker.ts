#!/usr/bin/env node
import { createPool } from "../db/pool.js";
import { WORKER_STAGES } from "../stages/chains.js";
import { registerWorkerMetrics } from "../stages/worker-metrics.js";
import { loadConfig } from "./runtime/config.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger } from "./runtime/log.js";
import { createRegistry, keepServingMetrics } from "./runtime/metrics.js";
import { createRedis } from "./runtime/redis.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";
import { checkHealth, startWorker, type WorkerHandle } from "./runtime/worker.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(`can-worker:${config.CEA_CONSUMER}`, config.CEA_LOG_LEVEL);
  const redis = createRedis(config.CEA_REDIS_URL, log, config.CEA_CONSUMER);
  if (process.argv.includes("--check")) {
    const r = await checkHealth(redis, redisKeys(config).health(config.CEA_CONSUMER));
    process.stdout.write(`${r.body ?? "no health key"}\n`);
    redis.disconnect();
    process.exit(r.ok ? 0 : 1);
  }
  // one connection per batch in the writer, one for maintenance (aggregate refresh, retention)
  const pool = createPool(config.CEA_DATABASE_URL, {
    max: config.CEA_WRITE_CONCURRENCY + 1,
    application: `can-worker:${config.CEA_CONSUMER}`,
  });
  // an idle client losing its connection must not crash the process; the next query reconnects
  pool.on("error", (err) => log.warn({ err: err.message }, "idle database connection lost"));
  // installed before start-up, which may wait for the database: SIGTERM then simply exits 0 (nothing held)
  let worker: WorkerHandle | null = null;
  let metrics: ReturnType<typeof keepServingMetrics> | undefined;
  if (config.CEA_METRICS) {
    const registry = createRegistry("can-worker");
    registerWorkerMetrics(registry, () => worker?.stats ?? null, { config, redis });
    metrics = keepServingMetrics(registry, {
      host: config.CEA_METRICS_HOST,
      port: config.CEA_WORKER_METRICS_PORT,
      token: config.CEA_METRICS_TOKEN,
      log,
      setting: "CEA_WORKER_METRICS_PORT",
    });
  }
  const close = async () => {
    await metrics?.close();
    await pool.end();
    redis.disconnect();
  };
  onShutdown(log, async () => {
    await worker?.stop();
    await close();
  });
  worker = await startWorker({
    config,
    log,
    redis,
    pool,
    stages: WORKER_STAGES,
    options: {
      decode: { threads: config.CEA_DECODE_THREADS },
      "batch-copy": { concurrency: config.CEA_WRITE_CONCURRENCY },
    },
  });
  const reload = worker.ctx.shared.get("reloadSensorMap") as (() => Promise<void>) | undefined;
  if (reload) process.on("SIGHUP", () => void reload());
  await worker.done;
}

runMain(main);
