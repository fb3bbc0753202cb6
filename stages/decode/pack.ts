import { messageKey } from "../../pipeline/can/model.js";
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

const payloadBytes = (data: string | undefined) => (data === undefined ? 0 : Math.min(MAX_DATA, data.length >> 1));

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
  const n = frames.length;
  let bytes = 0;
  for (const f of frames) bytes += payloadBytes(f.data);
  const P = packing(n, bytes);
  for (let i = 0; i < n; i++) {
    const f = frames[i]!;
    packOne(P, i, f.ts, f.id === undefined ? undefined : String(f.id), f.data, f.ext, f.fd);
  }
  return { buf: P.buf.buffer as ArrayBuffer, n };
}

/**
 * Pack entries straight from XREADGROUP field lists (no per-entry objects).
 * Entries with `skip(i)` true are packed as missing (not decoded).
 */
export function packEntries(fields: readonly (readonly string[] | null)[], skip: (i: number) => boolean): PackedFrames {
  const n = fields.length;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const f = fields[i];
    if (f && !skip(i)) for (let k = 0; k + 1 < f.length; k += 2) if (f[k] === "data") bytes += payloadBytes(f[k + 1]);
  }
  const P = packing(n, bytes);
  for (let i = 0; i < n; i++) {
    const f = skip(i) ? null : fields[i];
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
  return { buf: P.buf.buffer as ArrayBuffer, n };
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
  // latin1 keeps only the low byte of each UTF-16 unit ("\u0130" would land as "0"): the text must be ASCII,
  // which its UTF-8 length equal to its unit count proves in one native call
  if (
    ts.length !== TS_LENGTH ||
    Buffer.byteLength(ts, "utf8") !== TS_LENGTH ||
    buf.write(ts, L.ts + TS_LENGTH * i, TS_LENGTH, "latin1") !== TS_LENGTH
  ) {
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
