import { Piscina } from "piscina";
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
import { type DecodedRows, ROW_STATUS, type StageSpec, type WorkBatch } from "../pipeline/runtime/stage.js";

// decode: raw stream entries → measurement rows (binary COPY or COPY text +
// columnar values + the hour buckets they touch).
//
// One piscina task per read batch. The main thread packs the batch into ONE
// ArrayBuffer (ids, data bytes and timestamps in typed-array slots) that is
// moved to the thread, not copied; the thread decodes every frame, applies the
// sensor map the resolve-sensor stage owns (a small plain table sent with each
// task) and builds the COPY data right there (binary by default: PostgreSQL
// takes int64 microseconds without parsing timestamp text), moved back in one
// buffer with the columns. CEA_DECODE_THREADS=0 runs the very same function
// inline. A frame is all-or-nothing: if any of its signals cannot be decoded
// or stored, the whole frame is dead-lettered and none of its rows written.
// The message is found by (id, extended) and decoded by the per-frame decode
// of pipeline/can/table.ts; a value outside its signal's physical range is
// stored with status out_of_range.

/** Receive time as the scanner writes it: ISO 8601 UTC with exactly 6 fractional digits. */
export const TS_LENGTH = 27;
const ID_BAD = 0xffffffff;
const LEN_BAD_DATA = 255;
const LEN_BAD_TS = 254;
const LEN_MISSING = 253;
/** CAN FD payloads; a classic frame (no fd=1) carries at most 8 bytes. */
const MAX_DATA = 64;
const MAX_CLASSIC = 8;

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

export interface ExpectedRow {
  sensor_id: number;
  /** The frame's ts, unchanged (ISO 8601 UTC, microseconds). */
  time: string;
  value: number;
  status: string | null;
}

/**
 * The rows the worker stores for one raw-stream entry (fields ts, id, data as in
 * pipeline/runtime/keys.ts), or an UnrecoverableError with the dead-letter reason. Pure:
 * the reconciliation key for tests and benchmarks.
 */
export function expectedRows(
  table: DecodeTable,
  frame: { ts: string; id: string | number; data: string; ext?: string | undefined; fd?: string | undefined },
): ExpectedRow[] {
  const packed = packFrames([frame]);
  const out = decodePacked({ buf: packed.buf, n: 1, table });
  const dead = out.dead[0];
  if (dead) throw new UnrecoverableError(dead[1], dead[1]);
  const rows = unpackRows(out.rowsBuf, out.rowCount);
  return Array.from({ length: rows.count }, (_, r) => ({
    sensor_id: rows.sensor[r]!,
    time: frame.ts,
    value: rows.value[r]!,
    status: ROW_STATUS[rows.status[r]!] ?? null,
  }));
}

// ---- packing (main thread) -------------------------------------------------

/** Layout of a packed batch of n frames carrying `bytes` payload bytes in all, in one ArrayBuffer. */
function layout(n: number, bytes: number) {
  const ids = 0;
  const offs = ids + 4 * n;
  const ts = offs + 4 * n;
  const lens = ts + TS_LENGTH * n;
  const data = lens + n;
  return { ids, offs, ts, lens, data, size: data + bytes };
}

/** Frame fields as the raw stream holds them (see pipeline/runtime/keys.ts). */
export interface EntryFields {
  ts?: string | undefined;
  id?: string | number | undefined;
  data?: string | undefined;
  ext?: string | undefined;
  fd?: string | undefined;
}

export interface PackedFrames {
  buf: ArrayBuffer;
  n: number;
}

const payloadBytes = (data: string | undefined) => (data === undefined ? 0 : Math.min(MAX_DATA, data.length >> 1));

/** Pack frames given as stream fields (ts, id decimal, data hex, ext, fd) into one transferable buffer. */
export function packFrames(frames: readonly EntryFields[]): PackedFrames {
  const n = frames.length;
  let bytes = 0;
  for (const f of frames) bytes += payloadBytes(f.data);
  const L = layout(n, bytes);
  const buf = Buffer.allocUnsafeSlow(L.size);
  const P = { buf, ids: new Uint32Array(buf.buffer, L.ids, n), offs: new Uint32Array(buf.buffer, L.offs, n), L, at: 0 };
  for (let i = 0; i < n; i++) {
    const f = frames[i]!;
    packOne(P, i, f.ts, f.id === undefined ? undefined : String(f.id), f.data, f.ext, f.fd);
  }
  return { buf: buf.buffer as ArrayBuffer, n };
}

/** Pack a batch straight from XREADGROUP field lists (no per-entry objects). */
export function packBatch(batch: WorkBatch): PackedFrames {
  const n = batch.ids.length;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const f = batch.fields[i];
    if (f) for (let k = 0; k + 1 < f.length; k += 2) if (f[k] === "data") bytes += payloadBytes(f[k + 1]);
  }
  const L = layout(n, bytes);
  const buf = Buffer.allocUnsafeSlow(L.size);
  const P = { buf, ids: new Uint32Array(buf.buffer, L.ids, n), offs: new Uint32Array(buf.buffer, L.offs, n), L, at: 0 };
  for (let i = 0; i < n; i++) {
    const f = batch.fields[i];
    let ts: string | undefined;
    let id: string | undefined;
    let data: string | undefined;
    let ext: string | undefined;
    let fd: string | undefined;
    if (f) {
      for (let k = 0; k + 1 < f.length; k += 2) {
        const key = f[k];
        if (key === "ts") ts = f[k + 1];
        else if (key === "id") id = f[k + 1];
        else if (key === "data") data = f[k + 1];
        else if (key === "ext") ext = f[k + 1];
        else if (key === "fd") fd = f[k + 1];
      }
    }
    packOne(P, i, ts, id, data, ext, fd);
  }
  return { buf: buf.buffer as ArrayBuffer, n };
}

interface Packing {
  buf: Buffer;
  ids: Uint32Array;
  offs: Uint32Array;
  L: ReturnType<typeof layout>;
  /** Next free byte of the data region. */
  at: number;
}

function packOne(
  P: Packing,
  i: number,
  ts: string | undefined,
  id: string | undefined,
  data: string | undefined,
  ext: string | undefined,
  fd: string | undefined,
): void {
  const { buf, ids, offs, L } = P;
  offs[i] = P.at;
  if (ts === undefined || id === undefined || data === undefined) {
    ids[i] = ID_BAD;
    buf[L.lens + i] = LEN_MISSING;
    return;
  }
  const idNum = /^\d{1,10}$/.test(id) ? Number(id) : Number.NaN;
  // ext absent: an entry of an older scanner, which wrote 29-bit ids without the flag (one above 0x7FF can only be one)
  const extended = ext === undefined ? idNum > 0x7ff : ext === "1" ? true : ext === "0" ? false : null;
  ids[i] =
    extended !== null && Number.isInteger(idNum) && idNum <= (extended ? 0x1fffffff : 0x7ff)
      ? messageKey(idNum, extended)
      : ID_BAD;
  if (ts.length !== TS_LENGTH || buf.write(ts, L.ts + TS_LENGTH * i, TS_LENGTH, "latin1") !== TS_LENGTH) {
    buf[L.lens + i] = LEN_BAD_TS;
    return;
  }
  const bytes = data.length >> 1;
  if (
    (data.length & 1) !== 0 ||
    bytes > (fd === "1" ? MAX_DATA : MAX_CLASSIC) ||
    (bytes > 0 && buf.write(data, L.data + P.at, bytes, "hex") !== bytes)
  ) {
    buf[L.lens + i] = LEN_BAD_DATA;
    return;
  }
  buf[L.lens + i] = bytes;
  P.at += bytes;
}

// ---- the decode task (thread or inline) -------------------------------------

export interface DecodeTask {
  buf: ArrayBuffer;
  n: number;
  table: DecodeTable;
  /**
   * "binary": the rows as a PostgreSQL binary COPY stream (timestamps as int64
   * microseconds, which the server takes without parsing text) instead of COPY
   * text; "text" (the default): COPY text lines.
   */
  format?: "text" | "binary";
}

export interface DecodeOutput {
  /** COPY text lines of the rows (format "text"; "" for "binary"). */
  copyText: string;
  rowCount: number;
  /**
   * value f64 × rows, then entry u32 × rows, then sensor i32 × rows, then (format
   * "binary") the complete binary COPY stream of (time, sensor_id, value, status):
   * one buffer, so the thread moves it back instead of copying it.
   */
  rowsBuf: ArrayBuffer;
  /** Offset of the binary COPY stream in rowsBuf (after the row columns). */
  binaryOffset: number;
  /** Length in bytes of the binary COPY stream at binaryOffset of rowsBuf (0 for "text"). */
  binaryLength: number;
  /** Distinct hour buckets of the rows as flat pairs [sensor_id, epoch hour, ...] (for the aggregate queue). */
  buckets: number[];
  /** [entry index, reason] of frames that cannot be used. */
  dead: [number, string][];
}

/** Binary COPY: signature, flags, header extension length; per row 4 fields; trailer -1. */
const COPY_SIGNATURE = [0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00];
const COPY_HEADER = 19;
const COPY_ROW = 2 + (4 + 8) + (4 + 4) + (4 + 8) + 4;
/** Status texts by row status code, as latin1 bytes for binary COPY. */
const STATUS_BYTES = ROW_STATUS.map((t) => (t === null ? null : Buffer.from(t, "latin1")));
const COPY_ROW_MAX = COPY_ROW + Math.max(0, ...STATUS_BYTES.map((b) => b?.length ?? 0));
/** Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
const PG_EPOCH_US = 946_684_800_000_000;
const TWO_32 = 4_294_967_296;

const D = 48; // '0'
function tsValid(b: Uint8Array, o: number): boolean {
  for (let k = 0; k < TS_LENGTH; k++) {
    const c = b[o + k]!;
    switch (k) {
      case 4:
      case 7:
        if (c !== 45) return false; // -
        break;
      case 10:
        if (c !== 84) return false; // T
        break;
      case 13:
      case 16:
        if (c !== 58) return false; // :
        break;
      case 19:
        if (c !== 46) return false; // .
        break;
      case 26:
        if (c !== 90) return false; // Z
        break;
      default:
        if (c < D || c > D + 9) return false;
    }
  }
  return true;
}

const digits = (b: Uint8Array, o: number, k: number): number => {
  let v = 0;
  for (let i = 0; i < k; i++) v = v * 10 + b[o + i]! - D;
  return v;
};

/**
 * Epoch microseconds of a ts already checked by tsValid, or NaN when it names no
 * real instant (month 13, 31 February, hour 24, year before 100).
 */
function tsMicros(b: Uint8Array, o: number): number {
  const y = digits(b, o, 4);
  const mo = digits(b, o + 5, 2);
  const d = digits(b, o + 8, 2);
  const h = digits(b, o + 11, 2);
  const mi = digits(b, o + 14, 2);
  const sec = digits(b, o + 17, 2);
  if (y < 100 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60) return Number.NaN;
  const ms = Date.UTC(y, mo - 1, d, h, mi, sec);
  // day past the month's end: Date.UTC rolls over into the next month
  if (new Date(ms - sec * 1000).getUTCDate() !== d) return Number.NaN;
  return ms * 1000 + digits(b, o + 20, 6);
}

/** Decode a packed batch into COPY text or binary + columnar rows. Pure; runs in a pool thread or inline. */
export function decodePacked(task: DecodeTask): DecodeOutput {
  const { buf, n, table } = task;
  const binary = task.format === "binary";
  const L = layout(n, 0);
  const bytes = new Uint8Array(buf);
  const ids = new Uint32Array(buf, L.ids, n);
  const dead: [number, string][] = [];
  // upper bound of rows: 8 signals per frame would be unusual; grow if needed
  let cap = Math.max(16, n * 4);
  let value = new Float64Array(cap);
  let entry = new Uint32Array(cap);
  let sensor = new Int32Array(cap);
  let status = new Uint8Array(cap);
  let copy = binary ? new DataView(new ArrayBuffer(COPY_HEADER + cap * COPY_ROW_MAX + 2)) : null;
  let o = COPY_HEADER;
  const offs = new Uint32Array(buf, L.offs, n);
  const decoded = decodedSignals(table);
  let rows = 0;
  let text = "";
  const touched = new Set<number>();
  const tsBuf = Buffer.from(buf, L.ts, TS_LENGTH * n);
  for (let i = 0; i < n; i++) {
    const dlc = bytes[L.lens + i]!;
    if (dlc === LEN_MISSING) {
      dead.push([i, "entry lacks ts, id or data"]);
      continue;
    }
    const tsAt = L.ts + TS_LENGTH * i;
    const us = dlc === LEN_BAD_TS || !tsValid(bytes, tsAt) ? Number.NaN : tsMicros(bytes, tsAt);
    if (Number.isNaN(us)) {
      dead.push([i, "ts is not ISO 8601 UTC with microseconds"]);
      continue;
    }
    if (ids[i] === ID_BAD) {
      dead.push([i, "id is not a decimal 11-bit arbitration id (29-bit with ext=1)"]);
      continue;
    }
    if (dlc === LEN_BAD_DATA) {
      dead.push([i, "data is not hex of at most 8 bytes (64 with fd=1)"]);
      continue;
    }
    const m = frameMessage(table, ids[i]!, dlc);
    if (typeof m === "string") {
      dead.push([i, m]);
      continue;
    }
    const sigs = m.signals;
    if (rows + sigs.length > cap) {
      cap = Math.max(cap * 2, rows + sigs.length);
      const v2 = new Float64Array(cap);
      v2.set(value);
      value = v2;
      const e2 = new Uint32Array(cap);
      e2.set(entry);
      entry = e2;
      const s2 = new Int32Array(cap);
      s2.set(sensor);
      sensor = s2;
      const st2 = new Uint8Array(cap);
      st2.set(status);
      status = st2;
      if (copy) {
        const c2 = new Uint8Array(COPY_HEADER + cap * COPY_ROW_MAX + 2);
        c2.set(new Uint8Array(copy.buffer));
        copy = new DataView(c2.buffer);
      }
    }
    const start = rows;
    let bad = decodeMessage(m, bytes, L.data + offs[i]!, decoded);
    for (let k = 0; !bad && k < decoded.count; k++) {
      const s = decoded.signal[k]!;
      const v = decoded.value[k]! + s.calibration;
      if (!Number.isFinite(v)) {
        bad = `value of ${m.name}.${s.name} is not finite`;
        break;
      }
      value[rows] = v;
      entry[rows] = i;
      sensor[rows] = s.sensorId;
      status[rows] = decoded.outOfRange[k]!;
      rows++;
    }
    if (bad) {
      rows = start;
      dead.push([i, bad]);
      continue;
    }
    const hour = Math.floor(us / 3_600_000_000);
    for (let r = start; r < rows; r++) touched.add(hour * TWO_32 + (sensor[r]! >>> 0));
    if (copy) {
      const pgUs = us - PG_EPOCH_US;
      const hi = Math.floor(pgUs / TWO_32);
      const lo = pgUs - hi * TWO_32;
      for (let r = start; r < rows; r++) {
        copy.setInt16(o, 4);
        copy.setInt32(o + 2, 8);
        copy.setInt32(o + 6, hi);
        copy.setUint32(o + 10, lo);
        copy.setInt32(o + 14, 4);
        copy.setInt32(o + 18, sensor[r]!);
        copy.setInt32(o + 22, 8);
        copy.setFloat64(o + 26, value[r]!);
        const st = STATUS_BYTES[status[r]!];
        if (st) {
          copy.setInt32(o + 34, st.length);
          new Uint8Array(copy.buffer, o + 38, st.length).set(st);
          o += COPY_ROW + st.length;
        } else {
          copy.setInt32(o + 34, -1); // status NULL
          o += COPY_ROW;
        }
      }
    } else {
      const ts = tsBuf.toString("latin1", TS_LENGTH * i, TS_LENGTH * (i + 1));
      for (let r = start; r < rows; r++)
        text += `${ts}\t${sensor[r]}\t${value[r]}\t${status[r] ? ROW_STATUS[status[r]!] : "\\N"}\n`;
    }
  }
  const binaryLength = copy ? o + 2 : 0;
  const at = rowsBytes(rows);
  const rowsBuf = new ArrayBuffer(at + binaryLength);
  new Float64Array(rowsBuf, 0, rows).set(value.subarray(0, rows));
  new Uint32Array(rowsBuf, rows * 8, rows).set(entry.subarray(0, rows));
  new Int32Array(rowsBuf, rows * 12, rows).set(sensor.subarray(0, rows));
  new Uint8Array(rowsBuf, rows * 16, rows).set(status.subarray(0, rows));
  if (copy) {
    const out = new Uint8Array(rowsBuf, at, binaryLength);
    out.set(new Uint8Array(copy.buffer, 0, binaryLength));
    out.set(COPY_SIGNATURE, 0); // flags and header extension length stay 0
    new DataView(rowsBuf, at + binaryLength - 2, 2).setInt16(0, -1);
  }
  const buckets: number[] = [];
  for (const k of touched) {
    const hour = Math.floor(k / TWO_32);
    buckets.push((k - hour * TWO_32) | 0, hour);
  }
  return { copyText: text, rowCount: rows, rowsBuf, binaryOffset: at, binaryLength, buckets, dead };
}

/** Bytes of the row columns at the start of rowsBuf (value f64, entry u32, sensor i32, status u8; 8-aligned). */
export function rowsBytes(count: number): number {
  return Math.ceil((count * 17) / 8) * 8;
}

export function unpackRows(buf: ArrayBuffer, count: number): DecodedRows {
  return {
    count,
    value: new Float64Array(buf, 0, count),
    entry: new Uint32Array(buf, count * 8, count),
    sensor: new Int32Array(buf, count * 12, count),
    status: new Uint8Array(buf, count * 16, count),
  };
}

/** Wrap a value so piscina transfers `buffer` instead of cloning it (both directions). */
export function movable<T extends object>(value: T, buffer: ArrayBuffer): T {
  const wrapped = { [Piscina.transferableSymbol]: buffer, [Piscina.valueSymbol]: value };
  return Piscina.move(wrapped as unknown as Parameters<typeof Piscina.move>[0]) as unknown as T;
}

// ---- the stage -----------------------------------------------------------------

/** The compiled piscina worker file; from TS sources (vitest) too, since threads need plain JS. */
export const DECODE_WORKER_FILE = "dist/stages/decode-worker.js";

/**
 * threads: piscina threads (0 = decode inline on the main thread); format: what
 * the decode hands the writer, "binary" COPY (default) or "text".
 */
export const decodeOptionsDefaults: { threads: number; format: "text" | "binary" } = {
  threads: 0,
  format: "binary",
};

export const decodeStage: StageSpec<typeof decodeOptionsDefaults> = {
  name: "decode",
  consumes: "raw-entries",
  emits: "measurement-rows",
  defaults: decodeOptionsDefaults,
  failure: {
    unrecoverable: [
      "entry lacks ts/id/data",
      "bad ts",
      "bad id or ext flag",
      "bad hex / more than 8 bytes (64 with fd=1)",
      "unknown arbitration id (id and ext)",
      "message refused by the CAN database",
      "data shorter than the message",
      "message without any sensor",
      "value not finite or not exact in a double",
    ],
    transient: [],
    backoff: { baseMs: 100, maxMs: 2_000 },
    // unrecoverable frames never throw: they are put in batch.dead; a thrown error is a bug
    classify: () => "fatal",
  },
  create(ctx, options) {
    const threads = options.threads;
    const pool =
      threads > 0
        ? new Piscina({
            filename: projectPath(DECODE_WORKER_FILE),
            minThreads: threads,
            maxThreads: threads,
            // two batches in flight per thread at most: read-ahead is one batch
            maxQueue: threads * 4,
          })
        : null;
    ctx.log.info({ threads, inline: pool === null }, "decode stage ready");
    return {
      async process(batch) {
        const table = ctx.shared.get("decodeTable") as DecodeTable | undefined;
        if (!table) throw new Error("decode: no decode table (resolve-sensor must be in the chain)");
        const packed = packBatch(batch);
        const task: DecodeTask = { buf: packed.buf, n: packed.n, table, format: options.format };
        const out: DecodeOutput = pool ? await pool.run(movable(task, packed.buf)) : decodePacked(task);
        for (const [i, reason] of out.dead) batch.dead.set(i, reason);
        batch.copyText = out.copyText;
        batch.copyBinary = out.binaryLength ? new Uint8Array(out.rowsBuf, out.binaryOffset, out.binaryLength) : null;
        batch.buckets = out.buckets;
        batch.rowCount = out.rowCount;
        batch.rows = unpackRows(out.rowsBuf, out.rowCount);
        // entries deleted from the stream (hard-limit trim) have no fields: ack, nothing to write
        for (let i = 0; i < batch.fields.length; i++)
          if (batch.fields[i] === null) {
            batch.dead.delete(i);
            batch.skip.add(i);
          }
      },
      async close() {
        await pool?.destroy();
      },
    };
  },
};
