import type { Redis } from "ioredis";
import type pg from "pg";
import type { CanFrame, FrameSrc } from "../pipeline/can/frame.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import type { Config } from "../pipeline/runtime/config.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import type { SourceEnvelope } from "../pipeline/runtime/scanner.js";
import { type Chain, chain, use } from "../pipeline/runtime/stage.js";
import type { StreamEntries } from "../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../pipeline/runtime/worker.js";
import { ackStage } from "./ack.js";
import type { IngestLedger } from "./append/ledger.js";
import { batchCopyStage } from "./batch-copy.js";
import { CAN_FRAMES, canIngestStage } from "./can-ingest.js";
import { type CommandTransmitter, commandStatusStage } from "./command-transmit.js";
import { decodeStage, type TableSource } from "./decode.js";
import { derivedStage } from "./derived.js";
import { resolveSensorStage } from "./resolve-sensor.js";
import { streamAppendStage } from "./stream-append.js";

// The chains of the two pipeline services, declared the same way. The can-worker's chain, in order, with each stage's options taken from the
// configuration. A new stage is one more `.pipe(use(...))` here (and its module
// in stages/); the runtime does not change. The compiler checks that each stage
// consumes what the one before it emits; the runtime checks it again at
// start-up and validates every stage's options against its schema.

export interface WorkerChainDeps {
  config: Config;
  pool: pg.Pool;
  redis: Redis;
  keys: RedisKeys;
  map: TableSource;
}

export function workerStages(d: WorkerChainDeps) {
  const c = d.config;
  return {
    decode: use(decodeStage(d.map), { threads: c.CEA_DECODE_THREADS }),
    resolveSensor: use(resolveSensorStage(), {}),
    derived: use(derivedStage(), { pairWindowS: c.CEA_DERIVED_PAIR_WINDOW_S }),
    batchCopy: use(
      batchCopyStage({
        pool: d.pool,
        killMidBatch: c.CEA_FAULT_KILL_MID_BATCH,
        killAfterCommit: c.CEA_FAULT_KILL_AFTER_COMMIT,
      }),
      { concurrency: c.CEA_WRITE_CONCURRENCY },
    ),
    ack: use(ackStage({ redis: d.redis, keys: d.keys, group: c.CEA_GROUP, consumer: c.CEA_CONSUMER }), {
      deadMaxLen: c.CEA_DEAD_MAXLEN,
      deadMaxAgeS: c.CEA_DEAD_MAX_AGE_S,
    }),
  };
}

/** decode → resolve-sensor → derived → batch-copy → ack. */
export function workerChain(d: WorkerChainDeps): Chain<StreamEntries, unknown> {
  const s = workerStages(d);
  return chain(RAW_ENTRIES).pipe(s.decode).pipe(s.resolveSensor).pipe(s.derived).pipe(s.batchCopy).pipe(s.ack);
}

export interface ScannerChainDeps {
  config: Config;
  redis: Redis;
  keys: RedisKeys;
  /** The CAN database checked against the site file (live values). */
  table: DecodeTable;
  ledger: IngestLedger;
  spoolFile: string;
  source: { name: string; src: FrameSrc };
  /** The command transmitter (a component beside the chain): the chain shows it every received frame. */
  commands?: CommandTransmitter;
  /** Problems of the scanner's components and their counters, for the health key. */
  extra?: () => { problems: string[]; fields: Record<string, unknown> };
}

export function scannerStages(d: ScannerChainDeps) {
  const c = d.config;
  return {
    commandStatus: d.commands ? use(commandStatusStage(d.commands), {}) : null,
    canIngest: use(
      canIngestStage({ redis: d.redis, keys: d.keys, table: d.table, src: d.source.src, ledger: d.ledger }),
      {},
    ),
    streamAppend: use(
      streamAppendStage({
        redis: d.redis,
        keys: d.keys,
        redisUrl: c.CEA_REDIS_URL,
        group: c.CEA_GROUP,
        ledger: d.ledger,
        spoolFile: d.spoolFile,
        source: d.source,
        healthTtlS: c.CEA_HEALTH_TTL_S,
        ...(d.extra ? { extra: d.extra } : {}),
      }),
      {
        buffer: c.CEA_SCANNER_BUFFER,
        trimAcked: c.CEA_STREAM_TRIM_ACKED,
        hardLimit: c.CEA_STREAM_HARD_LIMIT,
        warnLength: c.CEA_STREAM_WARN_LENGTH,
      },
    ),
  };
}

/**
 * The can-scanner's chain: the frame source → [command-status →] can-ingest → stream-append
 * (run by pipeline/runtime/scanner.ts; command-status when the command transmitter runs).
 */
export function scannerChain(d: ScannerChainDeps): Chain<CanFrame[], unknown, SourceEnvelope> {
  const s = scannerStages(d);
  const head = chain<CanFrame[], SourceEnvelope>(CAN_FRAMES);
  return (s.commandStatus ? head.pipe(s.commandStatus) : head).pipe(s.canIngest).pipe(s.streamAppend);
}
