#!/usr/bin/env node
import { createPool, poolSettings } from "../db/pool.js";
import { apiPoolOptions, buildApp } from "./backend/app.js";
import { resolveToken } from "./backend/auth.js";
import { createBackendLogger } from "./backend/logger.js";
import { databaseUrl, loadConfig } from "./runtime/config.js";
import { createRegistry, type KeptMetricsServer, keepServingMetrics } from "./runtime/metrics.js";
import { createRedis } from "./runtime/redis.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";

// cea-backend: configuration → pool + Redis client → app → listen. SIGTERM
// stops accepting, lets requests in flight finish, then closes the clients.
async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const { token, generated } = resolveToken(config);
  const log = createBackendLogger(config.CEA_LOG_LEVEL);
  if (generated) {
    // demo mode only: printed once, on stdout, never through the logger
    process.stdout.write(`cea-backend demo mode: generated API token (write routes): ${token}\n`);
  }
  // the request deadline sets the statement, lock and connect limits; keepalive as for every pool
  const pool = createPool(databaseUrl(config, "api"), {
    max: 10,
    application: "cea-backend",
    ...poolSettings(config),
    ...apiPoolOptions(config),
  });
  pool.on("error", (err) => log.warn({ err: err.message }, "idle database connection failed"));
  const redis = createRedis(config.CEA_REDIS_URL, log, "cea-backend");
  const metrics = config.CEA_METRICS ? createRegistry("cea-backend") : undefined;
  const app = await buildApp({ config, pool, redis, log, token, ...(metrics ? { metrics } : {}) });
  let metricsServer: KeptMetricsServer | undefined;
  onShutdown(log, async () => {
    try {
      await app.close();
    } finally {
      await Promise.allSettled([pool.end(), redis.quit(), metricsServer?.close()]);
    }
  });
  await app.listen({ host: config.CEA_HTTP_HOST, port: config.CEA_HTTP_PORT });
  if (metrics)
    metricsServer = keepServingMetrics(metrics, {
      host: config.CEA_METRICS_HOST,
      port: config.CEA_BACKEND_METRICS_PORT,
      token: config.CEA_METRICS_TOKEN,
      log,
      setting: "CEA_BACKEND_METRICS_PORT",
    });
}

runMain(main);
