import { Redis } from "ioredis";
import type { Logger } from "./log.js";

/**
 * A Redis client that reconnects forever with capped exponential backoff and
 * jitter. Commands issued while disconnected wait in ioredis's offline queue
 * (maxRetriesPerRequest: null), so callers decide their own timeouts.
 */
export function createRedis(url: string, log?: Logger, name = "cea"): Redis {
  const redis = new Redis(url, {
    connectionName: name,
    maxRetriesPerRequest: null,
    enableAutoPipelining: false,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5_000) + Math.floor(Math.random() * 100),
  });
  if (log) {
    let down = false;
    redis.on("error", (err: Error) => {
      if (!down) log.warn({ err: err.message }, "redis unavailable; reconnecting");
      down = true;
    });
    redis.on("ready", () => {
      if (down) log.info("redis reconnected");
      down = false;
    });
  } else {
    redis.on("error", () => undefined);
  }
  return redis;
}
