import type { Redis } from "ioredis";
import { oldestUnackedAgeMs } from "../pipeline/runtime/backlog.js";
import type { Config } from "../pipeline/runtime/config.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import { counterFrom, gaugeFrom, type Registry } from "../pipeline/runtime/metrics.js";
import type { IngestStats } from "./append/ledger.js";

// can-scanner's metrics, read from the ingest stage's own counters when
// Prometheus scrapes (nothing per frame). Drops by reason: hard_limit (the
// stream passed CEA_STREAM_HARD_LIMIT), buffer (Redis down longer than
// CEA_SCANNER_BUFFER frames last), undecodable (replayed input that is not a
// frame). The stream's backlog and oldest unacknowledged entry describe the
// whole pipeline: they are here because the scanner watches them every second.

export function registerIngestMetrics(
  registry: Registry,
  stats: IngestStats,
  deps: { config: Config; redis: Redis; keys: RedisKeys },
): void {
  const { config, redis, keys } = deps;
  counterFrom(registry, "cea_scanner_frames_read_total", "Frames taken from the bus (or replay, simulator)", [], () => [
    [{}, stats.read],
  ]);
  counterFrom(registry, "cea_scanner_frames_appended_total", "Frames appended to the raw stream", [], () => [
    [{}, stats.appended],
  ]);
  counterFrom(
    registry,
    "cea_scanner_frames_dropped_total",
    "Frames lost, by reason: hard_limit, buffer, undecodable (input lines that are not frames)",
    ["reason"],
    () => [
      [{ reason: "hard_limit" }, stats.droppedHardLimit],
      [{ reason: "buffer" }, stats.droppedBuffer],
      [{ reason: "undecodable" }, stats.skippedLines],
    ],
  );
  counterFrom(
    registry,
    "cea_scanner_frames_undecoded_total",
    "Frames appended that the CAN database cannot decode (no live value; the worker dead-letters them)",
    [],
    () => [[{}, stats.undecodable]],
  );
  gaugeFrom(registry, "cea_scanner_buffered_frames", "Frames held in memory waiting for Redis", [], () => [
    [{}, stats.buffered],
  ]);
  gaugeFrom(
    registry,
    "cea_stream_backlog_entries",
    "Entries of the raw stream the workers have not acknowledged (at the last trim, about every second)",
    [],
    () => [[{}, stats.backlog]],
  );
  gaugeFrom(
    registry,
    "cea_stream_length_entries",
    "Entries in the raw stream (acknowledged ones are kept up to CEA_STREAM_TRIM_ACKED)",
    [],
    () => [[{}, stats.streamLength]],
  );
  gaugeFrom(
    registry,
    "cea_stream_backlog_warn_entries",
    "CEA_STREAM_WARN_LENGTH: a backlog above it is an alert",
    [],
    () => [[{}, config.CEA_STREAM_WARN_LENGTH]],
  );
  gaugeFrom(registry, "cea_stream_hard_limit_entries", "CEA_STREAM_HARD_LIMIT: past it frames are dropped", [], () => [
    [{}, config.CEA_STREAM_HARD_LIMIT],
  ]);
  gaugeFrom(
    registry,
    "cea_stream_oldest_unacked_age_seconds",
    "Seconds since the oldest entry no worker has acknowledged was appended (0 when none)",
    [],
    async () => [[{}, (await oldestUnackedAgeMs(redis, keys.raw, config.CEA_GROUP)) / 1000]],
  );
  gaugeFrom(registry, "cea_redis_up", "1 when the service's Redis connection is ready", [], () => [
    [{}, redis.status === "ready" ? 1 : 0],
  ]);
}
