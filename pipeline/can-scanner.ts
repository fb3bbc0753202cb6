#!/usr/bin/env node
import { loadSite } from "../db/site.js";
import { Ingest } from "../stages/can-ingest.js";
import { loadDecodeTable } from "../stages/resolve-sensor.js";
import type { FrameSource } from "./can/frame.js";
import { replaySource } from "./can/replay.js";
import { simulatorSource } from "./can/simulator.js";
import { socketcanSource } from "./can/socketcan.js";
import { type Config, loadConfig } from "./runtime/config.js";
import { ConfigError } from "./runtime/errors.js";
import { redisKeys } from "./runtime/keys.js";
import { createLogger, type Logger } from "./runtime/log.js";
import { projectPath } from "./runtime/paths.js";
import { createRedis } from "./runtime/redis.js";
import { onShutdown, runMain } from "./runtime/shutdown.js";
import { checkHealth } from "./runtime/worker.js";

async function openSource(config: Config, log: Logger): Promise<FrameSource> {
  const files = { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) };
  const sim = async () => {
    const { table } = await loadDecodeTable(files);
    return simulatorSource({
      table,
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
      return replaySource(projectPath(config.CEA_REPLAY_FILE), config.CEA_REPLAY_SPEED);
    case "socketcan":
      return socketcanSource(config.CEA_CAN_INTERFACE);
    case "auto":
      try {
        return socketcanSource(config.CEA_CAN_INTERFACE);
      } catch (err) {
        log.warn(
          { iface: config.CEA_CAN_INTERFACE, err: (err as Error).message },
          "cannot open the CAN interface: falling back to the SIMULATOR (CEA_CAN_SOURCE=auto)",
        );
        return sim();
      }
  }
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
  // validates the CAN database against the site file before anything runs
  const { table } = await loadDecodeTable(
    { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) },
    log,
  );
  const source = await openSource(config, log);
  log.info({ source: source.name, stream: keys.raw }, "can-scanner started");
  const ingest = new Ingest({ config, log, redis, keys, table, statsKey: keys.stats("can-scanner") });
  const running = ingest.run(source);
  onShutdown(log, async () => {
    source.close();
    ingest.stop();
    await running;
    redis.disconnect();
  });
  await running;
  log.info({ ...ingest.stats }, "source finished: every frame appended");
  redis.disconnect();
}

runMain(main);
