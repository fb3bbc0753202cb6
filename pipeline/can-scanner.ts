#!/usr/bin/env node
import { createHash } from "node:crypto";
import { join } from "node:path";
import { loadSite } from "../db/site.js";
import { IngestLedger, spoolTarget } from "../stages/append/ledger.js";
import { frameChunks } from "../stages/can-ingest.js";
import { registerIngestMetrics } from "../stages/can-ingest-metrics.js";
import { scannerChain } from "../stages/chains.js";
import { CommandTransmitter, registerCommandMetrics } from "../stages/command-transmit.js";
import { loadDecodeTable } from "../stages/resolve-sensor.js";
import { loadCanDb } from "./can/candb.js";
import type { FrameSource } from "./can/frame.js";
import { replaySource } from "./can/replay.js";
import { simulatorSource } from "./can/simulator.js";
import { socketcanSource } from "./can/socketcan.js";
import { type Config, loadConfig } from "./runtime/config.js";
import { ConfigError } from "./runtime/errors.js";
import { Health } from "./runtime/health.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger, type Logger } from "./runtime/log.js";
import { createRegistry, keepServingMetrics } from "./runtime/metrics.js";
import { projectPath, projectRoot } from "./runtime/paths.js";
import { createRedis } from "./runtime/redis.js";
import { type ScannerHandle, startScanner } from "./runtime/scanner.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";
import { checkHealth } from "./runtime/worker.js";

/** The live bus, opened now: a missing interface is a configuration error naming it. */
function openBus(config: Config): FrameSource {
  try {
    return socketcanSource(config.CEA_CAN_INTERFACE);
  } catch (err) {
    throw new ConfigError(
      `cannot open the CAN interface ${config.CEA_CAN_INTERFACE} (CEA_CAN_INTERFACE): ${(err as Error).message}. ` +
        "Bring it up (can-setup.service), or set CEA_CAN_SOURCE to simulator or replay for a trial.",
    );
  }
}

async function openSource(config: Config, log: Logger, onSkip: (err: Error) => void): Promise<FrameSource> {
  const files = { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) };
  const sim = async () => {
    const { table } = await loadDecodeTable(files);
    return simulatorSource({
      table,
      // the actuator nodes answer the commands transmitted to them
      candb: loadCanDb(files.canDbFile),
      site: await loadSite(files.siteFile),
      startMs: config.CEA_SIM_START ? Date.parse(config.CEA_SIM_START) : Date.now(),
      speed: config.CEA_SIM_SPEED,
      durationS: config.CEA_SIM_DURATION_S,
      iface: "sim0",
    });
  };
  switch (config.CEA_CAN_SOURCE) {
    case "simulator":
      return sim();
    case "replay":
      if (!config.CEA_REPLAY_FILE) throw new ConfigError("CEA_CAN_SOURCE=replay needs CEA_REPLAY_FILE");
      return replaySource(projectPath(config.CEA_REPLAY_FILE), config.CEA_REPLAY_SPEED, onSkip);
    case "socketcan":
      return openBus(config);
    case "auto":
      // the demo's choice: the bus when there is one, else simulated nodes (stored as simulated)
      try {
        return openBus(config);
      } catch (err) {
        log.warn(
          { iface: config.CEA_CAN_INTERFACE, err: (err as Error).message },
          "cannot open the CAN interface: falling back to the SIMULATOR (CEA_CAN_SOURCE=auto)",
        );
        return sim();
      }
  }
}

/**
 * CEA_SCANNER_SPOOL, else can-scanner-<stream>.spool in systemd's StateDirectory,
 * else in the checkout's state dir. The name carries a digest of the Redis URL and
 * stream, so scanners of other streams (other checkouts' tests) never share one.
 */
function spoolFile(config: Config, stream: string): string {
  if (config.CEA_SCANNER_SPOOL) return projectPath(config.CEA_SCANNER_SPOOL);
  const digest = createHash("sha1").update(spoolTarget(config.CEA_REDIS_URL, stream)).digest("hex").slice(0, 10);
  const dir = process.env.STATE_DIRECTORY?.split(":")[0] ?? process.env.CEA_STATE_DIR ?? join(projectRoot(), ".state");
  return join(dir, `can-scanner-${digest}.spool`);
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger("can-scanner", config.CEA_LOG_LEVEL);
  const keys = redisKeys(config);
  const redis = createRedis(config.CEA_REDIS_URL, log, "can-scanner");
  if (process.argv.includes("--check")) {
    const r = await checkHealth(redis, keys.health("can-scanner"));
    process.stdout.write(`${r.body ?? "no health key"}\n`);
    redis.disconnect();
    process.exit(r.ok ? 0 : 1);
  }
  // installed before start-up: a stop before the first frame simply exits 0 (nothing read, nothing held)
  let scanner: ScannerHandle | null = null;
  let metrics: ReturnType<typeof keepServingMetrics> | undefined;
  onShutdown(log, async () => {
    await scanner?.stop();
    await metrics?.close();
    redis.disconnect();
  });
  // validates the CAN database against the site file before anything runs
  const { table } = await loadDecodeTable(
    { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) },
    log,
  );
  const ledger = new IngestLedger(log);
  let source: FrameSource;
  try {
    source = await openSource(config, log, (err) => ledger.skipLine(err));
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  // can:cmd → the bus, with the nodes' acknowledgements (a component beside the chain)
  const transmit = source.transmit?.bind(source);
  const commands = new CommandTransmitter({
    redis,
    keys,
    candb: loadCanDb(projectPath(config.CEA_CAN_DB_FILE)),
    source: { name: source.name, transmit },
    consumer: "can-scanner-1",
    ackMs: config.CEA_SCANNER_COMMAND_ACK_MS,
    retries: config.CEA_SCANNER_COMMAND_RETRIES,
  });
  const health = new Health(log);
  const extra = () => ({
    problems: Object.entries(health.report().problems).map(([k, v]) => `${k}: ${v}`),
    fields: { commands: { ...commands.stats } },
  });
  // the chain is validated (options, links) before anything runs: a wrong one stops start-up naming it
  try {
    scanner = await startScanner({
      log,
      source: frameChunks(source),
      components: [commands],
      health,
      chain: scannerChain({
        commands,
        extra,
        config,
        redis,
        keys,
        table,
        ledger,
        spoolFile: spoolFile(config, keys.raw),
        source: { name: source.name, src: source.src },
      }),
    });
  } catch (err) {
    source.close();
    redis.disconnect();
    throw err;
  }
  if (config.CEA_METRICS) {
    const registry = createRegistry("can-scanner");
    registerIngestMetrics(registry, ledger.stats, { config, redis, keys });
    registerCommandMetrics(registry, commands.stats);
    metrics = keepServingMetrics(registry, {
      host: config.CEA_METRICS_HOST,
      port: config.CEA_SCANNER_METRICS_PORT,
      token: config.CEA_METRICS_TOKEN,
      log,
      setting: "CEA_SCANNER_METRICS_PORT",
    });
  }
  log.info({ source: source.name, src: source.src, stream: keys.raw }, "can-scanner started");
  const result = await scanner.done;
  if (result.reason === "stop") return; // the shutdown handler logs and exits
  await metrics?.close();
  redis.disconnect();
  log.info({ ...ledger.stats }, "source finished: every frame appended");
}

runMain(main);
