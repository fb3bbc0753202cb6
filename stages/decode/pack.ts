import { messageKey } from "../../pipeline/can/model.js";
import { FieldTable } from "../../pipeline/runtime/stream.js";
import { TS_LENGTH } from "./timestamp.js";

// Packing a read batch for decode: message keys (id + extended flag), payload
// offsets, receive times and payload bytes of every entry in typed-array slots
// of ONE ArrayBuffer, which a decode thread takes over (moved, not copied).
// Entries whose fields are missing or malformed get a marker in their length
// slot and are dead-lettered by decode with the reason.

export const ID_BAD = 0xffffffff;
export const LEN_BAD_DATA = 255;
export const LEN_BAD_TS = 254;
export const LEN_MISSING = 253;
/** CAN FD payloads; a classic frame (no fd=1) carries at most 8 bytes. */
export const MAX_DATA = 64;
export const MAX_CLASSIC = 8;

/** Layout of a packed batch of n frames carrying `bytes` payload bytes in all, in one ArrayBuffer. */
export function layout(n: number, bytes: number) {
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

interface Packing {
  buf: Buffer;
  ids: Uint32Array;
  offs: Uint32Array;
  L: ReturnType<typeof layout>;
  /** Next free byte of the data region. */
  at: number;
}

function packing(n: number, bytes: number): Packing {
  const L = layout(n, bytes);
  const buf = Buffer.allocUnsafeSlow(L.size);
  return { buf, ids: new Uint32Array(buf.buffer, L.ids, n), offs: new Uint32Array(buf.buffer, L.offs, n), L, at: 0 };
}

/** Pack frames given as stream fields (ts, id decimal, data hex, ext, fd) into one transferable buffer. */
export function packFrames(frames: readonly EntryFields[]): PackedFrames {
  const lists = frames.map((f) => {
    const l: string[] = [];
    if (f.ts !== undefined) l.push("ts", f.ts);
    if (f.id !== undefined) l.push("id", String(f.id));
    if (f.data !== undefined) l.push("data", f.data);
    if (f.ext !== undefined) l.push("ext", f.ext);
    if (f.fd !== undefined) l.push("fd", f.fd);
    return l;
  });
  return packEntries(FieldTable.of(lists), () => false);
}

// field names by length and first bytes: ts, id, fd (2), ext (3), data (4)
const C = (s: string) => s.charCodeAt(0);

/**
 * Pack entries straight from the read's field table (bytes; no per-entry
 * objects, no strings). Entries with `skip(i)` true are packed as missing (not
 * decoded).
 */
export function packEntries(fields: FieldTable, skip: (i: number) => boolean): PackedFrames {
  const n = fields.length;
  const { bytes: src, at, first } = fields;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    if (skip(i)) continue;
    const d = fields.find(i, "data");
    if (d >= 0) bytes += Math.min(MAX_DATA, (at[d + 1]! - at[d]!) >> 1);
  }
  const P = packing(n, bytes);
  for (let i = 0; i < n; i++) {
    let ts = -1;
    let id = -1;
    let data = -1;
    let ext = -1;
    let fd = -1;
    if (!skip(i)) {
      for (let f = first[i]!; f + 1 < first[i + 1]!; f += 2) {
        const k = at[f]!;
        const len = at[f + 1]! - k;
        const c0 = src[k];
        if (len === 2) {
          const c1 = src[k + 1];
          if (c0 === C("t") && c1 === C("s")) ts = f + 1;
          else if (c0 === C("i") && c1 === C("d")) id = f + 1;
          else if (c0 === C("f") && c1 === C("d")) fd = f + 1;
        } else if (len === 4 && c0 === C("d")) {
          if (fields.is(f, "data")) data = f + 1;
        } else if (len === 3 && c0 === C("e") && fields.is(f, "ext")) ext = f + 1;
      }
    }
    packField(P, i, fields, ts, id, data, ext, fd);
  }
  return { buf: P.buf.buffer as ArrayBuffer, n };
}

const ZERO = 48;

/** The decimal number of 1 to 10 ASCII digits in b[from, to), else NaN. */
function decimal(b: Uint8Array, from: number, to: number): number {
  if (to - from < 1 || to - from > 10) return Number.NaN;
  let v = 0;
  for (let k = from; k < to; k++) {
    const c = b[k]! - ZERO;
    if (c < 0 || c > 9) return Number.NaN;
    v = v * 10 + c;
  }
  return v;
}

/** Value of one ASCII hex digit, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** One entry into its slots; ts … fd are field indexes into the table (-1 = absent). */
function packField(
  P: Packing,
  i: number,
  t: FieldTable,
  ts: number,
  id: number,
  data: number,
  ext: number,
  fd: number,
): void {
  const { buf, ids, offs, L } = P;
  const { bytes: src, at } = t;
  offs[i] = P.at;
  if (ts < 0 || id < 0 || data < 0) {
    ids[i] = ID_BAD;
    buf[L.lens + i] = LEN_MISSING;
    return;
  }
  const idNum = decimal(src, at[id]!, at[id + 1]!);
  // ext absent: an entry of an older scanner, which wrote 29-bit ids without the flag (one above 0x7FF can only be one)
  const extended = ext < 0 ? idNum > 0x7ff : t.is(ext, "1") ? true : t.is(ext, "0") ? false : null;
  ids[i] =
    extended !== null && Number.isInteger(idNum) && idNum <= (extended ? 0x1fffffff : 0x7ff)
      ? messageKey(idNum, extended)
      : ID_BAD;
  const tsFrom = at[ts]!;
  if (at[ts + 1]! - tsFrom !== TS_LENGTH) {
    buf[L.lens + i] = LEN_BAD_TS;
    return;
  }
  const tsAt = L.ts + TS_LENGTH * i;
  for (let k = 0; k < TS_LENGTH; k++) buf[tsAt + k] = src[tsFrom + k]!;
  const dFrom = at[data]!;
  const dLen = at[data + 1]! - dFrom;
  const n = dLen >> 1;
  if ((dLen & 1) !== 0 || n > (fd >= 0 && t.is(fd, "1") ? MAX_DATA : MAX_CLASSIC)) {
    buf[L.lens + i] = LEN_BAD_DATA;
    return;
  }
  const to = L.data + P.at;
  for (let k = 0; k < n; k++) {
    const hi = hexDigit(src[dFrom + 2 * k]!);
    const lo = hexDigit(src[dFrom + 2 * k + 1]!);
    if (hi < 0 || lo < 0) {
      buf[L.lens + i] = LEN_BAD_DATA;
      return;
    }
    buf[to + k] = (hi << 4) | lo;
  }
  buf[L.lens + i] = n;
  P.at += n;
}
