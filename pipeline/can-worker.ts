#!/usr/bin/env node
import { createPool } from "../db/pool.js";
import { WORKER_STAGES } from "../stages/chains.js";
import { databaseUrl, loadConfig } from "./runtime/config.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger } from "./runtime/log.js";
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
  const pool = createPool(databaseUrl(config, "worker"), {
    max: config.CEA_WRITE_CONCURRENCY + 1,
    application: `can-worker:${config.CEA_CONSUMER}`,
  });
  // an idle client losing its connection must not crash the process; the next query reconnects
  pool.on("error", (err) => log.warn({ err: err.message }, "idle database connection lost"));
  const close = async () => {
    await pool.end();
    redis.disconnect();
  };
  // installed before start-up, which may wait for the database: SIGTERM then simply exits 0 (nothing held)
  let worker: WorkerHandle | null = null;
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
