#!/usr/bin/env node
import { parseArgs } from "node:util";
import { createPool, poolSettings } from "../db/pool.js";
import { loadSite } from "../db/site.js";
import { registerAutomationMetrics } from "./automation/metrics.js";
import { AutomationService } from "./automation/service.js";
import { loadCanDb } from "./can/candb.js";
import { buildCommandTable } from "./can/commands.js";
import { databaseUrl, loadConfig } from "./runtime/config.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger } from "./runtime/log.js";
import { createRegistry, keepServingMetrics } from "./runtime/metrics.js";
import { projectPath } from "./runtime/paths.js";
import { createRedis } from "./runtime/redis.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";
import { checkHealth } from "./runtime/worker.js";

const USAGE = `usage: automation-service [--dry-run] [--check]
  Climate control of the site file's actuators: live values + setpoints -> decisions
  -> command frames on the stream can:cmd (can-scanner puts them on the bus) and rows
  in actuator_events. --dry-run (or CEA_AUTOMATION_DRY_RUN=true) decides and records
  (dry_run = true) but sends nothing. --check prints the running service's health
  and exits 0 when it is ok (no outage, no fail-safe), 1 otherwise.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "dry-run": { type: "boolean", default: false },
      check: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const config = loadConfig();
  const dryRun = values["dry-run"] || config.CEA_AUTOMATION_DRY_RUN;
  const log = createLogger("automation-service", config.CEA_LOG_LEVEL);
  const siteFile = projectPath(config.CEA_SITE_FILE);
  const site = await loadSite(siteFile);
  const commands = buildCommandTable(loadCanDb(projectPath(config.CEA_CAN_DB_FILE)), site, siteFile);
  const keys = redisKeys(config);
  const redis = createRedis(config.CEA_REDIS_URL, log, "automation-service");
  if (values.check) {
    // ok while the service runs without a fail-safe or outage (its health key, kept for CEA_HEALTH_TTL_S)
    const r = await checkHealth(redis, keys.health("automation-service"));
    process.stdout.write(`${r.body ?? "no health key"}\n`);
    redis.disconnect();
    process.exit(r.ok ? 0 : 1);
  }
  // a cycle must not wait on a database that does not answer: short limits, the next cycle retries
  const limitMs = Math.max(1_000, 2 * config.CEA_AUTOMATION_INTERVAL_MS);
  const pool = createPool(databaseUrl(config, "automation"), {
    max: 2,
    application: "automation-service",
    ...poolSettings(config),
    connectTimeoutMs: limitMs,
    statementTimeoutMs: limitMs,
    queryTimeoutMs: limitMs,
    onError: (err) => log.warn({ err: err.message }, "database connection lost"),
  });
  let svc: AutomationService | null = null;
  let metricsServer: ReturnType<typeof keepServingMetrics> | undefined;
  let metrics: ReturnType<typeof registerAutomationMetrics> | undefined;
  if (config.CEA_METRICS) {
    const registry = createRegistry("automation-service");
    metrics = registerAutomationMetrics(registry, () => svc);
    metricsServer = keepServingMetrics(registry, {
      host: config.CEA_METRICS_HOST,
      port: config.CEA_AUTOMATION_METRICS_PORT,
      token: config.CEA_METRICS_TOKEN,
      log,
      setting: "CEA_AUTOMATION_METRICS_PORT",
    });
  }
  svc = new AutomationService({
    config,
    site,
    commands,
    redis,
    db: pool,
    keys,
    log,
    dryRun,
    ...(metrics ? { onCycle: metrics.observeCycle } : {}),
  });
  const service = svc;
  // SIGTERM: the last cycle puts every actuator in its safe state (and records it), then exit 0; a second signal or the timeout forces
  onShutdown(
    log,
    async () => {
      await service.stop();
      await metricsServer?.close();
      await pool.end();
      redis.disconnect();
    },
    Math.max(10_000, 5 * limitMs),
  );
  log.info(
    { actuators: site.actuators.length, dry_run: dryRun, interval_ms: config.CEA_AUTOMATION_INTERVAL_MS },
    "automation-service started",
  );
  service.start();
}

runMain(main);
