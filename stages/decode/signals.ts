import { type DecodeTable, decodedSignals, decodeMessage, frameMessage } from "../../pipeline/can/table.js";
import { ID_BAD, LEN_BAD_DATA, LEN_BAD_TS, LEN_MISSING, layout } from "./pack.js";
import { TS_LENGTH, tsMicros, tsValid } from "./timestamp.js";

// Decode of a packed batch into decoded signals: for every usable frame, the
// signals the decode table holds for its message (those a sensor maps, found
// through their multiplexers), each with its physical value (the CAN
// database's scale and offset; no calibration, that is resolve-sensor's) and
// whether it lies outside the signal's physical range, as columns in one
// ArrayBuffer, so a decode thread moves the result back instead of copying it.
// The per-frame decode is pipeline/can/table.ts decodeMessage. Pure; runs in a
// pool thread or inline.

export interface DecodeTask {
  buf: ArrayBuffer;
  n: number;
  table: DecodeTable;
}

/** What decode hands on: one row per decoded signal, plus the receive time and message of every entry. */
export interface SignalRows {
  /** The table the frames were decoded with (a reload between two batches changes it, never within one). */
  table: DecodeTable;
  /** Receive time per entry, epoch microseconds (NaN for an entry that was not decoded). */
  timeUs: Float64Array;
  /** Message key (pipeline/can/model.ts messageKey) per entry; NO_MESSAGE for an entry that was not decoded. */
  entryMessage: Uint32Array;
  count: number;
  /** Per row: the entry index, the signal's index in its TableMessage.signals, the physical value, 1 = out of range. */
  entry: Uint32Array;
  signal: Uint32Array;
  value: Float64Array;
  outOfRange: Uint8Array;
}

export const NO_MESSAGE = 0xffffffff;

export interface DecodeOutput {
  n: number;
  count: number;
  /** timeUs f64 × n, value f64 × count, entryMessage u32 × n, entry u32 × count, signal u32 × count, outOfRange u8 × count. */
  buf: ArrayBuffer;
  /** [entry index, reason, cause] of frames that cannot be used; cause groups repeats (unknown and refused ids). */
  dead: [number, string, string | null][];
}

/** A message key as a short name for counting repeats: 0x6ff, or 0x18ff0001x for a 29-bit id. */
function keyName(key: number): string {
  return key >= 0x80000000 ? `0x${(key - 0x80000000).toString(16)}x` : `0x${key.toString(16)}`;
}

export function decodePacked(task: DecodeTask): DecodeOutput {
  const { buf, n, table } = task;
  const L = layout(n, 0);
  const bytes = new Uint8Array(buf);
  const ids = new Uint32Array(buf, L.ids, n);
  const offs = new Uint32Array(buf, L.offs, n);
  const dead: [number, string, string | null][] = [];
  const timeUs = new Float64Array(n).fill(Number.NaN);
  const entryMessage = new Uint32Array(n).fill(NO_MESSAGE);
  const frame = decodedSignals(table);
  let cap = Math.max(16, n * 4);
  let value = new Float64Array(cap);
  let entry = new Uint32Array(cap);
  let signal = new Uint32Array(cap);
  let outOfRange = new Uint8Array(cap);
  let rows = 0;
  for (let i = 0; i < n; i++) {
    const dlc = bytes[L.lens + i]!;
    if (dlc === LEN_MISSING) {
      dead.push([i, "entry lacks ts, id or data", null]);
      continue;
    }
    const tsAt = L.ts + TS_LENGTH * i;
    const us = dlc === LEN_BAD_TS || !tsValid(bytes, tsAt) ? Number.NaN : tsMicros(bytes, tsAt);
    if (Number.isNaN(us)) {
      dead.push([i, "ts is not ISO 8601 UTC with microseconds", null]);
      continue;
    }
    const key = ids[i]!;
    if (key === ID_BAD) {
      dead.push([i, "id is not a decimal 11-bit arbitration id (29-bit with ext=1)", null]);
      continue;
    }
    if (dlc === LEN_BAD_DATA) {
      dead.push([i, "data is not hex of at most 8 bytes (64 with fd=1)", null]);
      continue;
    }
    const known = table.messages[key];
    if (known && known.mapped === 0 && dlc >= known.length) {
      // nothing of it is decoded: resolve-sensor decides what a frame without a sensor is
      timeUs[i] = us;
      entryMessage[i] = key;
      continue;
    }
    const m = frameMessage(table, key, dlc);
    if (typeof m === "string") {
      const cause = known
        ? null
        : table.refused[key] !== undefined
          ? `refused:${keyName(key)}`
          : `unknown-id:${keyName(key)}`;
      dead.push([i, m, cause]);
      continue;
    }
    const bad = decodeMessage(m, bytes, L.data + offs[i]!, frame);
    if (bad) {
      dead.push([i, bad, null]);
      continue;
    }
    timeUs[i] = us;
    entryMessage[i] = key;
    if (rows + frame.count > cap) {
      cap = Math.max(cap * 2, rows + frame.count);
      value = grow(value, new Float64Array(cap));
      entry = grow(entry, new Uint32Array(cap));
      signal = grow(signal, new Uint32Array(cap));
      outOfRange = grow(outOfRange, new Uint8Array(cap));
    }
    for (let k = 0; k < frame.count; k++) {
      value[rows] = frame.value[k]!;
      entry[rows] = i;
      signal[rows] = frame.index[k]!;
      outOfRange[rows] = frame.outOfRange[k]!;
      rows++;
    }
  }
  const out = new ArrayBuffer(12 * n + 17 * rows);
  new Float64Array(out, 0, n).set(timeUs);
  new Float64Array(out, 8 * n, rows).set(value.subarray(0, rows));
  new Uint32Array(out, 8 * n + 8 * rows, n).set(entryMessage);
  new Uint32Array(out, 12 * n + 8 * rows, rows).set(entry.subarray(0, rows));
  new Uint32Array(out, 12 * n + 12 * rows, rows).set(signal.subarray(0, rows));
  new Uint8Array(out, 12 * n + 16 * rows, rows).set(outOfRange.subarray(0, rows));
  return { n, count: rows, buf: out, dead };
}

function grow<T extends Float64Array | Uint32Array | Uint8Array>(old: T, into: T): T {
  into.set(old);
  return into;
}

/** The columns of a DecodeOutput, as views on its buffer. */
export function unpackSignals(out: DecodeOutput, table: DecodeTable): SignalRows {
  const { n, count, buf } = out;
  return {
    table,
    timeUs: new Float64Array(buf, 0, n),
    count,
    value: new Float64Array(buf, 8 * n, count),
    entryMessage: new Uint32Array(buf, 8 * n + 8 * count, n),
    entry: new Uint32Array(buf, 12 * n + 8 * count, count),
    signal: new Uint32Array(buf, 12 * n + 12 * count, count),
    outOfRange: new Uint8Array(buf, 12 * n + 16 * count, count),
  };
}
