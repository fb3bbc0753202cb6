import { Piscina } from "piscina";
import { z } from "zod";
import { messageKey } from "../pipeline/can/model.js";
import {
  type DecodedSignals,
  type DecodeTable,
  decodedSignals,
  decodeMessage,
  frameMessage,
  type TableMessage,
  type TableSignal,
} from "../pipeline/can/table.js";
import { UnrecoverableError } from "../pipeline/runtime/errors.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { port, type StageSpec, settled } from "../pipeline/runtime/stage.js";
import type { StreamEntries } from "../pipeline/runtime/stream.js";
import { RAW_ENTRIES } from "../pipeline/runtime/worker.js";
import { packEntries } from "./decode/pack.js";
import { type DecodeOutput, type DecodeTask, decodePacked, type SignalRows, unpackSignals } from "./decode/signals.js";
import { movable } from "./decode/thread.js";

// decode: raw stream entries → decoded signals (message, signal, physical
// value, receive time, entry). One task per read batch: the batch is packed
// into ONE ArrayBuffer (stages/decode/pack.ts) and decoded
// (stages/decode/signals.ts, with the signal codec of pipeline/can) on a
// piscina thread, or inline with threads = 0. An entry that cannot be decoded
// (missing or malformed field, unknown arbitration id, too short) is a dead
// letter with the reason; entries that already have a verdict are not decoded.

export const DECODED_SIGNALS = port<SignalRows>("decoded-signals");

/** The compiled piscina worker file; from TS sources (vitest) too, since threads need plain JS. */
export const DECODE_THREAD_FILE = "dist/stages/decode/thread.js";

export const decodeOptions = z.object({
  threads: z.number().int().min(0).max(64).default(0).describe("decode threads (piscina); 0 = decode inline"),
});

/** Where decode takes the decode table from (the sensor map component). */
export interface TableSource {
  readonly table: DecodeTable;
}

export function decodeStage(map: TableSource): StageSpec<StreamEntries, SignalRows, typeof decodeOptions> {
  return {
    name: "decode",
    consumes: RAW_ENTRIES,
    emits: DECODED_SIGNALS,
    options: decodeOptions,
    failure: {
      // undecodable frames never throw (they become dead letters): a thrown error is a fault of the
      // worker itself; exiting lets systemd restart it and the delivery limit end a frame that repeats it
      classify: () => "fatal",
      describe: (err) => `decode failed: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 2_000 },
    },
    create(ctx, options) {
      const pool =
        options.threads > 0
          ? new Piscina({
              filename: projectPath(DECODE_THREAD_FILE),
              minThreads: options.threads,
              maxThreads: options.threads,
              // two batches in flight per thread at most: read-ahead is one batch
              maxQueue: options.threads * 4,
            })
          : null;
      ctx.log.info({ threads: options.threads, inline: pool === null }, "decode stage ready");
      return {
        async process(batch, entries) {
          const table = map.table;
          const packed = packEntries(entries.fields, (i) => settled(batch, i));
          const task: DecodeTask = { buf: packed.buf, n: packed.n, table };
          const out: DecodeOutput = pool ? await pool.run(movable(task, packed.buf)) : decodePacked(task);
          for (const [i, reason, cause] of out.dead)
            if (!settled(batch, i)) batch.dead.set(i, cause ? { reason, cause } : { reason });
          return unpackSignals(out, table);
        },
        async close() {
          await pool?.destroy();
        },
      };
    },
  };
}

// ---- one frame at a time (the scanner's live values) ---------------------------

export interface SignalValue {
  signal: TableSignal;
  /** Stored value: decoded + calibration_offset. */
  value: number;
  /** The decoded value lies outside the signal's physical range. */
  outOfRange: boolean;
}

/** decodeFrame's reusable output, one per table (the scanner decodes every frame for the live values). */
const scratch = new WeakMap<DecodeTable, DecodedSignals>();

/**
 * Decode one frame into the values of its mapped signals (stored = decoded +
 * calibration_offset). Throws UnrecoverableError with the dead-letter reason.
 */
export function decodeFrame(
  table: DecodeTable,
  id: number,
  data: Uint8Array,
  extended = false,
): { message: TableMessage; values: SignalValue[] } {
  const m = frameMessage(table, messageKey(id, extended), data.length);
  if (typeof m === "string") throw new UnrecoverableError(m, m);
  const out = scratch.get(table) ?? decodedSignals(table);
  scratch.set(table, out);
  const bad = decodeMessage(m, data, 0, out);
  if (bad) throw new UnrecoverableError(bad, bad);
  const values: SignalValue[] = [];
  for (let k = 0; k < out.count; k++) {
    const s = out.signal[k]!;
    const v = out.value[k]! + s.calibration;
    if (!Number.isFinite(v)) {
      const reason = `value of ${m.name}.${s.name} is not finite`;
      throw new UnrecoverableError(reason, reason);
    }
    values.push({ signal: s, value: v, outOfRange: out.outOfRange[k] === 1 });
  }
  return { message: m, values };
}
