import type { Redis } from "ioredis";
import client from "prom-client";
import { classifyDbError } from "../db/pg-errors.js";
import type { Config } from "../pipeline/runtime/config.js";
import { BulkHistogram, counterFrom, gaugeFrom, type Registry } from "../pipeline/runtime/metrics.js";
import type { Batch, DeadLetter } from "../pipeline/runtime/stage.js";
import type { WorkerHandle, WorkerObserver } from "../pipeline/runtime/worker.js";

// can-worker's metrics. Totals come from the worker's own stats when
// Prometheus scrapes; the runtime's observer adds, per batch (never per
// entry), the batch write duration, the XADD→COMMIT lag of every entry (one
// binary search per bucket: a batch's entry ids are in append order), dead
// letters by a bounded reason and retries by SQLSTATE class.

/** The stage that commits a batch's rows. */
const WRITER = "batch-copy";

/** A bounded name for why an entry is a dead letter (the full reason is in the dead stream). */
export function deadReason(d: DeadLetter): string {
  if (d.overLimit) return "delivery_limit";
  const cause = d.cause ?? "";
  if (cause.startsWith("unknown-id:")) return "unknown_id";
  if (cause.startsWith("refused:")) return "refused_message";
  if (cause.startsWith("unmapped:")) return "unmapped_message";
  const r = d.reason;
  if (r.startsWith("rejected by the database")) return "rejected_by_database";
  if (r.includes("is not finite")) return "not_finite";
  if (/^(entry lacks|ts is not|id is not|data is not|src ")/.test(r)) return "malformed_entry";
  return "undecodable";
}

export const DEAD_REASONS = [
  "delivery_limit",
  "unknown_id",
  "refused_message",
  "unmapped_message",
  "rejected_by_database",
  "not_finite",
  "malformed_entry",
  "undecodable",
] as const;

/** SQLSTATE class of an outage ("08" connection, "25" read-only, "57" operator intervention, …), "none" when not PostgreSQL's. */
export function retryClass(err: unknown): string {
  const code = classifyDbError(err).code;
  return code && /^[0-9A-Z]{5}$/.test(code) ? code.slice(0, 2) : "none";
}

export interface WorkerMetrics {
  observer: WorkerObserver;
}

/** Entry id → its append time in ms (the part before "-"). */
const idMs = (id: string) => Number.parseInt(id, 10);

export function registerWorkerMetrics(
  registry: Registry,
  worker: () => WorkerHandle | null,
  deps: { config: Config; redis: Redis },
): WorkerMetrics {
  const dead = new Map<string, number>(DEAD_REASONS.map((r) => [r, 0]));
  // the classes an operator meets most, present at 0 from the start; any other appears when it happens
  const retries = new Map<string, number>(["08", "25", "53", "57", "none"].map((c) => [c, 0]));
  const duration = new client.Histogram({
    name: "cea_worker_batch_write_duration_seconds",
    help: "Time of one batch in the writer (COPY and COMMIT, retries included)",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const lag = new BulkHistogram(
    "cea_worker_commit_lag_seconds",
    "Time from an entry's append to the raw stream (XADD) to the COMMIT of its batch",
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registry,
  );

  const stat = (f: (w: WorkerHandle) => number) => () => {
    const w = worker();
    return w ? [[{}, f(w)] as const] : [];
  };
  const stage = (w: WorkerHandle, name: string, counter: string) => w.stats.stages[name]?.[counter] ?? 0;
  // the stages' own counters (rows written, inserted) are gathered with each health report (every few seconds)
  const collect = worker;
  counterFrom(
    registry,
    "cea_worker_batches_total",
    "Batches committed and acknowledged",
    [],
    stat((w) => w.stats.batches),
  );
  counterFrom(
    registry,
    "cea_worker_entries_total",
    "Stream entries processed (written, dead-lettered or skipped)",
    [],
    stat((w) => w.stats.entries),
  );
  counterFrom(registry, "cea_worker_rows_written_total", "Readings in committed batches", [], () => {
    const w = collect();
    return w ? [[{}, stage(w, WRITER, "rows")] as const] : [];
  });
  counterFrom(
    registry,
    "cea_worker_rows_inserted_total",
    "Readings stored new (a redelivered reading is not new)",
    [],
    () => {
      const w = collect();
      return w ? [[{}, stage(w, WRITER, "inserted")] as const] : [];
    },
  );
  counterFrom(
    registry,
    "cea_worker_claimed_entries_total",
    "Entries claimed from a consumer that went idle",
    [],
    stat((w) => w.stats.claimed),
  );
  counterFrom(
    registry,
    "cea_worker_dead_letters_total",
    "Entries dead-lettered (can:dead), by reason",
    ["reason"],
    () => [...dead].map(([reason, n]) => [{ reason }, n] as const),
  );
  counterFrom(
    registry,
    "cea_worker_retries_total",
    "Stage attempts retried because of an outage, by SQLSTATE class (none = not a PostgreSQL error)",
    ["sqlstate_class"],
    () => [...retries].map(([c, n]) => [{ sqlstate_class: c }, n] as const),
  );
  gaugeFrom(
    registry,
    "cea_worker_degraded",
    "1 while the worker retries an outage (its health key names the cause)",
    [],
    stat((w) => (w.health.degraded ? 1 : 0)),
  );
  gaugeFrom(
    registry,
    "cea_database_up",
    "0 while the worker's writer retries a database outage, else 1",
    [],
    stat((w) => (w.health.has(WRITER) ? 0 : 1)),
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

  return {
    observer: {
      stageDone(name: string, batch: Batch, ms: number) {
        if (name !== WRITER) return;
        duration.observe(ms / 1000);
        const now = Date.now();
        const ids = batch.ids;
        lag.observeSorted(ids.length, (i) => (now - idMs(ids[i]!)) / 1000);
      },
      retry(_stage: string, err: unknown) {
        const c = retryClass(err);
        retries.set(c, (retries.get(c) ?? 0) + 1);
      },
      batchDone(batch: Batch) {
        for (const d of batch.dead.values()) {
          const r = deadReason(d);
          dead.set(r, (dead.get(r) ?? 0) + 1);
        }
      },
    },
  };
}
