import type { Redis } from "ioredis";
import type pg from "pg";
import type { Config } from "./config.js";
import type { RedisKeys } from "./keys.js";
import type { Logger } from "./log.js";

// Declarative stages. A stage module exports a StageSpec: what it consumes and
// emits, its option defaults, how it fails, and a factory. The runtime
// (pipeline/runtime/worker.ts) only knows this interface: it checks that the chain
// connects, runs every stage's `process` on each batch in order, and owns the
// retries. Stages up to the first `sequential` one form the "prepare" part that
// the runtime runs one batch ahead (read + decode of batch N+1 overlap the
// COPY/COMMIT of batch N); sequential stages are entered strictly in batch
// order, each by at most `concurrency` batches at a time (1 unless the stage
// instance says otherwise), so batch N+1 can be in the writer while batch N is
// acknowledged, or two batches can be in the writer on two connections.

export type FailureKind = "unrecoverable" | "transient" | "fatal";

export interface Backoff {
  baseMs: number;
  maxMs: number;
}

export interface FailureSpec {
  /** What makes an entry unrecoverable (dead-lettered at once, with the reason). */
  unrecoverable: readonly string[];
  /** What is retried with backoff, the batch kept unacked. */
  transient: readonly string[];
  backoff: Backoff;
  /** Classify an error thrown by `process`: transient → retry; anything else stops the service (not acked). */
  classify(err: unknown): FailureKind;
}

export interface StageContext {
  config: Config;
  log: Logger;
  redis: Redis;
  pool: pg.Pool;
  keys: RedisKeys;
  /** Values one stage provides to later ones (e.g. the sensor map), by name. */
  shared: Map<string, unknown>;
}

export type StageOptions = Record<string, number | string | boolean>;

export interface StageInstance {
  process(batch: WorkBatch): Promise<void> | void;
  /** Sequential stages: how many batches may be in `process` at once (default 1). */
  concurrency?: number;
  close?(): Promise<void> | void;
}

export interface StageSpec<O extends StageOptions = StageOptions> {
  name: string;
  consumes: string;
  emits: string;
  /** Runs in batch order, one batch at a time (writes, acks). */
  sequential?: boolean;
  defaults: O;
  failure: FailureSpec;
  create(ctx: StageContext, options: O): Promise<StageInstance> | StageInstance;
}

/** Decoded, resolved rows of a batch, columnar (row r belongs to entry entry[r]). */
export interface DecodedRows {
  count: number;
  entry: Uint32Array;
  sensor: Int32Array;
  value: Float64Array;
  /** Index into ROW_STATUS: the row's measurement.status. */
  status: Uint8Array;
}

/** measurement.status of a decoded row by its code: NULL = a good reading, out_of_range = outside the CAN database's physical range. */
export const ROW_STATUS = [null, "out_of_range"] as const;

/** One read batch as it flows through the stages. */
export interface WorkBatch {
  seq: number;
  /** Stream entry ids, in stream order. */
  ids: string[];
  /** Flat field lists [k, v, k, v, ...]; null when the entry was deleted from the stream. */
  fields: (string[] | null)[];
  /** Delivery count per entry when known (pending/claimed reads), else null (first delivery). */
  deliveries: number[] | null;
  /** Entries to dead-letter (index → reason); their rows are not written. */
  dead: Map<number, string>;
  /** Entries to ack without writing or dead-lettering (deleted from the stream). */
  skip: Set<number>;
  /**
   * COPY text of rows to write (see db/measurements.ts): the decoded rows when
   * decode emits text, and any rows later stages add (addRows).
   */
  copyText: string;
  /** The decoded rows as one binary COPY stream when decode emits binary, else null. */
  copyBinary: Uint8Array | null;
  /** Distinct hour buckets of the decoded rows, flat pairs [sensor_id, epoch hour, ...] (aggregate queue). */
  buckets: number[];
  /** All rows of the batch: decoded + added. */
  rowCount: number;
  rows: DecodedRows | null;
  /** New rows written by the commit stage. */
  inserted: number;
  committed: boolean;
}

export function newBatch(
  seq: number,
  ids: string[],
  fields: (string[] | null)[],
  deliveries: number[] | null,
): WorkBatch {
  return {
    seq,
    ids,
    fields,
    deliveries,
    dead: new Map(),
    skip: new Set(),
    copyText: "",
    copyBinary: null,
    buckets: [],
    rowCount: 0,
    rows: null,
    inserted: 0,
    committed: false,
  };
}

/** A field of an entry ("ts", "id", "data", "iface"), or undefined. */
export function entryField(batch: WorkBatch, index: number, name: string): string | undefined {
  const f = batch.fields[index];
  if (!f) return undefined;
  for (let i = 0; i + 1 < f.length; i += 2) if (f[i] === name) return f[i + 1];
  return undefined;
}

/** Append rows (e.g. derived values) to the batch's COPY text. `time` must be a valid timestamptz literal. */
export function addRows(batch: WorkBatch, rows: readonly { time: string; sensor_id: number; value: number }[]): void {
  let text = "";
  let n = 0;
  for (const r of rows) {
    if (!Number.isFinite(r.value)) continue;
    text += `${r.time}\t${r.sensor_id}\t${r.value}\t\\N\n`;
    n++;
  }
  batch.copyText += text;
  batch.rowCount += n;
}

/** Check that each stage consumes what the previous one emits; returns the chain as text. */
export function checkChain(specs: readonly StageSpec<StageOptions>[], input: string): string {
  let flowing = input;
  for (const s of specs) {
    if (s.consumes !== flowing)
      throw new Error(`stage "${s.name}" consumes "${s.consumes}" but the previous stage emits "${flowing}"`);
    flowing = s.emits;
  }
  return [input, ...specs.map((s) => `${s.name} → ${s.emits}`)].join(" → ");
}
