import type { Redis } from "ioredis";
import type { Config } from "../pipeline/runtime/config.js";
import { counterFrom, gaugeFrom, type Registry } from "../pipeline/runtime/metrics.js";
import type { WorkerStats } from "../pipeline/runtime/worker.js";

// can-worker's metrics, read from the worker's own totals when Prometheus
// scrapes (nothing per entry).

export function registerWorkerMetrics(
  registry: Registry,
  stats: () => WorkerStats | null,
  deps: { config: Config; redis: Redis },
): void {
  const s = (f: (w: WorkerStats) => number) => () => {
    const w = stats();
    return w ? [[{}, f(w)] as const] : [];
  };
  counterFrom(
    registry,
    "cea_worker_batches_total",
    "Batches committed and acknowledged",
    [],
    s((w) => w.batches),
  );
  counterFrom(
    registry,
    "cea_worker_entries_total",
    "Stream entries processed",
    [],
    s((w) => w.entries),
  );
  counterFrom(
    registry,
    "cea_worker_rows_written_total",
    "Readings in committed batches",
    [],
    s((w) => w.rows),
  );
  counterFrom(
    registry,
    "cea_worker_rows_inserted_total",
    "Readings stored new (not already present)",
    [],
    s((w) => w.inserted),
  );
  counterFrom(
    registry,
    "cea_worker_claimed_entries_total",
    "Entries claimed from an idle consumer",
    [],
    s((w) => w.claimed),
  );
  gaugeFrom(
    registry,
    "cea_dead_letter_alert_per_minute",
    "CEA_DEAD_LETTER_ALERT_PER_MIN: a higher dead-letter rate is an alert",
    [],
    () => [[{}, deps.config.CEA_DEAD_LETTER_ALERT_PER_MIN]],
  );
  gaugeFrom(registry, "cea_redis_up", "1 when the service's Redis connection is ready", [], () => [
    [{}, deps.redis.status === "ready" ? 1 : 0],
  ]);
}
