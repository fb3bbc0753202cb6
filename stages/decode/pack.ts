import { TS_LENGTH } from "./timestamp.js";

// Packing a read batch for decode: ids, data bytes and receive times of every
// entry in typed-array slots of ONE ArrayBuffer, which a decode thread takes
// over (moved, not copied). Entries whose fields are missing or malformed get a
// marker in their length slot and are dead-lettered by decode with the reason.

export const ID_BAD = 0xffffffff;
export const LEN_BAD_DATA = 255;
export const LEN_BAD_TS = 254;
export const LEN_MISSING = 253;
export const MAX_DLC = 8;

/** Layout of a packed batch of n frames in one ArrayBuffer. */
export function layout(n: number) {
  const ids = 0;
  const data = ids + 4 * n;
  const ts = data + MAX_DLC * n;
  const lens = ts + TS_LENGTH * n;
  return { ids, data, ts, lens, size: lens + n };
}

export interface PackedFrames {
  buf: ArrayBuffer;
  n: number;
}

/** Pack frames given as stream fields (ts, id decimal, data hex) into one transferable buffer. */
export function packFrames(
  frames: readonly { ts?: string | undefined; id?: string | number | undefined; data?: string | undefined }[],
): PackedFrames {
  const n = frames.length;
  const L = layout(n);
  const buf = Buffer.allocUnsafeSlow(L.size);
  const ids = new Uint32Array(buf.buffer, L.ids, n);
  for (let i = 0; i < n; i++) {
    const f = frames[i]!;
    packOne(buf, ids, L, i, f.ts, f.id === undefined ? undefined : String(f.id), f.data);
  }
  return { buf: buf.buffer as ArrayBuffer, n };
}

/**
 * Pack entries straight from XREADGROUP field lists (no per-entry objects).
 * Entries with `skip(i)` true are packed as missing (not decoded).
 */
export function packEntries(fields: readonly (readonly string[] | null)[], skip: (i: number) => boolean): PackedFrames {
  const n = fields.length;
  const L = layout(n);
  const buf = Buffer.allocUnsafeSlow(L.size);
  const ids = new Uint32Array(buf.buffer, L.ids, n);
  for (let i = 0; i < n; i++) {
    const f = skip(i) ? null : fields[i];
    let ts: string | undefined;
    let id: string | undefined;
    let data: string | undefined;
    if (f) {
      for (let k = 0; k + 1 < f.length; k += 2) {
        const key = f[k];
        if (key === "ts") ts = f[k + 1];
        else if (key === "id") id = f[k + 1];
        else if (key === "data") data = f[k + 1];
      }
    }
    packOne(buf, ids, L, i, ts, id, data);
  }
  return { buf: buf.buffer as ArrayBuffer, n };
}

function packOne(
  buf: Buffer,
  ids: Uint32Array,
  L: ReturnType<typeof layout>,
  i: number,
  ts: string | undefined,
  id: string | undefined,
  data: string | undefined,
): void {
  if (ts === undefined || id === undefined || data === undefined) {
    ids[i] = ID_BAD;
    buf[L.lens + i] = LEN_MISSING;
    return;
  }
  const idNum = /^\d{1,10}$/.test(id) ? Number(id) : Number.NaN;
  ids[i] = Number.isInteger(idNum) && idNum < ID_BAD ? idNum : ID_BAD;
  if (ts.length !== TS_LENGTH || buf.write(ts, L.ts + TS_LENGTH * i, TS_LENGTH, "latin1") !== TS_LENGTH) {
    buf[L.lens + i] = LEN_BAD_TS;
    return;
  }
  const bytes = data.length >> 1;
  if (
    (data.length & 1) !== 0 ||
    bytes > MAX_DLC ||
    (bytes > 0 && buf.write(data, L.data + MAX_DLC * i, bytes, "hex") !== bytes)
  ) {
    buf[L.lens + i] = LEN_BAD_DATA;
    return;
  }
  buf[L.lens + i] = bytes;
}
