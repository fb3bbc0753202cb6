#!/usr/bin/env node
import { createPool, poolSettings } from "../db/pool.js";
import { workerChain } from "../stages/chains.js";
import { AggregateMaintenance } from "../stages/maintenance.js";
import { SensorMap } from "../stages/sensor-map.js";
import { registerWorkerMetrics } from "../stages/worker-metrics.js";
import { databaseUrl, loadConfig } from "./runtime/config.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger } from "./runtime/log.js";
import { createRegistry, keepServingMetrics } from "./runtime/metrics.js";
import { projectPath } from "./runtime/paths.js";
import { createRedis } from "./runtime/redis.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";
import { checkHealth, startWorker, type WorkerHandle, workerSettings } from "./runtime/worker.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(`can-worker:${config.CEA_CONSUMER}`, config.CEA_LOG_LEVEL);
  const keys = redisKeys(config);
  const redis = createRedis(config.CEA_REDIS_URL, log, config.CEA_CONSUMER);
  if (process.argv.includes("--check")) {
    const r = await checkHealth(redis, keys.health(config.CEA_CONSUMER));
    process.stdout.write(`${r.body ?? "no health key"}\n`);
    redis.disconnect();
    process.exit(r.ok ? 0 : 1);
  }
  // one connection per batch in the writer, one for the components (sensor map, aggregate upkeep)
  const pool = createPool(databaseUrl(config, "worker"), {
    max: config.CEA_WRITE_CONCURRENCY + 1,
    application: `can-worker:${config.CEA_CONSUMER}`,
    ...poolSettings(config),
    onError: (err) => log.warn({ err: err.message }, "database connection lost"),
  });
  // installed before start-up, which may wait for the database: SIGTERM then simply exits 0 (nothing held)
  let worker: WorkerHandle | null = null;
  let metricsServer: ReturnType<typeof keepServingMetrics> | undefined;
  let metrics: ReturnType<typeof registerWorkerMetrics> | undefined;
  if (config.CEA_METRICS) {
    const registry = createRegistry("can-worker");
    metrics = registerWorkerMetrics(registry, () => worker, { config, redis });
    metricsServer = keepServingMetrics(registry, {
      host: config.CEA_METRICS_HOST,
      port: config.CEA_WORKER_METRICS_PORT,
      token: config.CEA_METRICS_TOKEN,
      log,
      setting: "CEA_WORKER_METRICS_PORT",
    });
  }
  const close = async () => {
    await metricsServer?.close();
    await pool.end();
    redis.disconnect();
  };
  onShutdown(log, async () => {
    await worker?.stop();
    await close();
  });
  const map = new SensorMap(
    { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) },
    pool,
  );
  process.on("SIGHUP", () => void map.reload("SIGHUP"));
  worker = await startWorker({
    settings: workerSettings(config, "can-worker", keys.health(config.CEA_CONSUMER)),
    log,
    redis,
    chain: workerChain({ config, pool, redis, keys, map }),
    components: [map, new AggregateMaintenance(pool, config.CEA_AGG_REFRESH_MS)],
    ...(metrics ? { observer: metrics.observer } : {}),
  });
  // resolves only after a stop (the shutdown handler exits); a fatal error rejects: logged, exit 1
  await worker.done;
}

runMain(main);
