import { decodeSignal } from "../../pipeline/can/codec.js";
import type { DecodeTable, TableMessage } from "../../pipeline/can/kcd.js";
import { ID_BAD, LEN_BAD_DATA, LEN_BAD_TS, LEN_MISSING, layout, MAX_DLC } from "./pack.js";
import { TS_LENGTH, tsMicros, tsValid } from "./timestamp.js";

// Decode of a packed batch into decoded signals: for every usable frame, every
// signal of its message with its physical value (the CAN database's scale and
// offset; no sensor, no calibration: that is resolve-sensor's), as columns in
// one ArrayBuffer so a decode thread moves the result back instead of copying
// it. Pure; runs in a pool thread or inline.

export interface DecodeTask {
  buf: ArrayBuffer;
  n: number;
  table: DecodeTable;
}

/** What decode hands on: one row per decoded signal, plus the receive time of every entry. */
export interface DecodedSignals {
  /** The table the frames were decoded with (a reload between two batches changes it, never within one). */
  table: DecodeTable;
  /** Receive time per entry, epoch microseconds (NaN for an entry that was not decoded). */
  timeUs: Float64Array;
  count: number;
  /** Per row: the entry index, the message's arbitration id, the signal's index in the message, the physical value. */
  entry: Uint32Array;
  message: Uint32Array;
  signal: Uint32Array;
  value: Float64Array;
}

export interface DecodeOutput {
  n: number;
  count: number;
  /** timeUs f64 × n, value f64 × count, entry u32 × count, message u32 × count, signal u32 × count. */
  buf: ArrayBuffer;
  /** [entry index, reason, cause] of frames that cannot be used; cause groups repeats (unknown ids). */
  dead: [number, string, string | null][];
}

/** The message of a frame, or why the frame cannot be used (with the cause that groups repeats). */
function frameMessage(table: DecodeTable, id: number, dlc: number): TableMessage | [string, string | null] {
  const m = table.messages[id];
  if (!m) return [`unknown arbitration id 0x${id.toString(16)}`, `unknown-id:0x${id.toString(16)}`];
  if (dlc < m.length) return [`data length ${dlc} < ${m.length} bytes of ${m.name}`, null];
  return m;
}

export function decodePacked(task: DecodeTask): DecodeOutput {
  const { buf, n, table } = task;
  const L = layout(n);
  const bytes = new Uint8Array(buf);
  const ids = new Uint32Array(buf, L.ids, n);
  const dead: [number, string, string | null][] = [];
  const timeUs = new Float64Array(n).fill(Number.NaN);
  let cap = Math.max(16, n * 4);
  let value = new Float64Array(cap);
  let entry = new Uint32Array(cap);
  let message = new Uint32Array(cap);
  let signal = new Uint32Array(cap);
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
    if (ids[i] === ID_BAD) {
      dead.push([i, "id is not a decimal arbitration id", null]);
      continue;
    }
    if (dlc === LEN_BAD_DATA) {
      dead.push([i, `data is not hex of at most ${MAX_DLC} bytes`, null]);
      continue;
    }
    const m = frameMessage(table, ids[i]!, dlc);
    if (Array.isArray(m)) {
      dead.push([i, m[0], m[1]]);
      continue;
    }
    timeUs[i] = us;
    const sigs = m.signals;
    if (rows + sigs.length > cap) {
      cap = Math.max(cap * 2, rows + sigs.length);
      value = grow(value, new Float64Array(cap));
      entry = grow(entry, new Uint32Array(cap));
      message = grow(message, new Uint32Array(cap));
      signal = grow(signal, new Uint32Array(cap));
    }
    const base = L.data + MAX_DLC * i;
    for (let k = 0; k < sigs.length; k++) {
      value[rows] = decodeSignal(bytes, base, sigs[k]!);
      entry[rows] = i;
      message[rows] = m.id;
      signal[rows] = k;
      rows++;
    }
  }
  const out = new ArrayBuffer(8 * n + 20 * rows);
  new Float64Array(out, 0, n).set(timeUs);
  new Float64Array(out, 8 * n, rows).set(value.subarray(0, rows));
  new Uint32Array(out, 8 * n + 8 * rows, rows).set(entry.subarray(0, rows));
  new Uint32Array(out, 8 * n + 12 * rows, rows).set(message.subarray(0, rows));
  new Uint32Array(out, 8 * n + 16 * rows, rows).set(signal.subarray(0, rows));
  return { n, count: rows, buf: out, dead };
}

function grow<T extends Float64Array | Uint32Array>(old: T, into: T): T {
  into.set(old);
  return into;
}

/** The columns of a DecodeOutput, as views on its buffer. */
export function unpackSignals(out: DecodeOutput, table: DecodeTable): DecodedSignals {
  const { n, count, buf } = out;
  return {
    table,
    timeUs: new Float64Array(buf, 0, n),
    count,
    value: new Float64Array(buf, 8 * n, count),
    entry: new Uint32Array(buf, 8 * n + 8 * count, count),
    message: new Uint32Array(buf, 8 * n + 12 * count, count),
    signal: new Uint32Array(buf, 8 * n + 16 * count, count),
  };
}
