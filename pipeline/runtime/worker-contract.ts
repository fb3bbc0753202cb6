import type { Redis } from "ioredis";
import type { Config } from "./config.js";
import type { Health } from "./health.js";
import type { Logger } from "./log.js";
import { type Batch, type Chain, type Port, port } from "./stage.js";
import type { StreamEntries } from "./stream.js";

// What the worker runtime (worker.ts) offers and takes: the port its reader
// emits, the settings, the components it runs beside the chain, the observer
// told about its edges (metrics), its stats and the handle of a running worker.

/** What the reader emits into a chain: the raw entries of one batch (the envelope holds them). */
export const RAW_ENTRIES: Port<StreamEntries> = port<StreamEntries>("raw-entries");

/** Something the service runs beside the chain, started before the first batch and stopped after the last. */
export interface Component {
  name: string;
  start(ctx: ComponentContext): Promise<void> | void;
  stop(): Promise<void> | void;
}

export interface ComponentContext {
  log: Logger;
  /** Report a problem of this component (health degraded), or null when it is gone. */
  problem(cause: string | null): void;
}

export interface WorkerSettings {
  service: string;
  stream: string;
  group: string;
  consumer: string;
  batchSize: number;
  flushMs: number;
  claimIdleMs: number;
  /** An entry delivered more often than this is not processed again: it is dead-lettered unread. */
  maxDeliveries: number;
  healthKey: string;
  healthTtlS: number;
}

export function workerSettings(config: Config, service: string, healthKey: string): WorkerSettings {
  const prefix = config.CEA_REDIS_PREFIX;
  return {
    service,
    stream: prefix + config.CEA_STREAM,
    group: config.CEA_GROUP,
    consumer: config.CEA_CONSUMER,
    batchSize: config.CEA_BATCH_SIZE,
    flushMs: config.CEA_FLUSH_MS,
    claimIdleMs: config.CEA_CLAIM_IDLE_MS,
    maxDeliveries: config.CEA_MAX_DELIVERIES,
    healthKey,
    healthTtlS: config.CEA_HEALTH_TTL_S,
  };
}

/**
 * Told what happens at the runtime's edges (metrics): each stage's success
 * with its time, each retry with its error, each finished batch. Called inline,
 * so an observer only adds to counters; it must not throw.
 */
export interface WorkerObserver {
  stageDone?(stage: string, batch: Batch, ms: number): void;
  retry?(stage: string, err: unknown): void;
  batchDone?(batch: Batch): void;
}

export interface WorkerDeps {
  settings: WorkerSettings;
  log: Logger;
  redis: Redis;
  chain: Chain<StreamEntries, unknown>;
  components?: readonly Component[];
  observer?: WorkerObserver;
}

export interface WorkerStats {
  batches: number;
  entries: number;
  dead: number;
  skipped: number;
  claimed: number;
  retries: number;
  lastBatchAt: string | null;
  /** Milliseconds spent per stage and in stream reads. */
  ms: Record<string, number>;
  /** Counters each stage reports about itself (rows written, fallbacks, ...), by stage name. */
  stages: Record<string, Record<string, number>>;
}

export interface WorkerHandle {
  /** Resolves when the loop has ended after stop(); rejects on a fatal error (the caller exits non-zero). */
  done: Promise<void>;
  /** Stop reading; abandon batches not yet written without acknowledging them (they stay pending). */
  stop(): Promise<void>;
  stats: WorkerStats;
  health: Health;
}

export function newWorkerStats(): WorkerStats {
  return { batches: 0, entries: 0, dead: 0, skipped: 0, claimed: 0, retries: 0, lastBatchAt: null, ms: {}, stages: {} };
}
