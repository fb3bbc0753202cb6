import { READING_STATUS, type ReadingColumns } from "./readings.js";

// PostgreSQL's binary COPY format for (time, sensor_id, value, status) rows:
// the server takes int64 microseconds since 2000-01-01 and IEEE doubles as
// they are, without parsing text. Also the distinct hour buckets the rows
// touch, for the Apache edition's aggregate queue.

const COPY_SIGNATURE = [0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00];
const COPY_HEADER = 19;
/** Field count, then time (len + 8), sensor_id (len + 4), value (len + 8), status length. */
const ROW_FIXED = 2 + (4 + 8) + (4 + 4) + (4 + 8) + 4;
/** Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
const PG_EPOCH_US = 946_684_800_000_000;
const TWO_32 = 4_294_967_296;
const STATUS_BYTES = READING_STATUS.map((s) => (s === null ? null : Buffer.from(s, "utf8")));

/** The rows (all, or those listed in `only`) as one complete binary COPY stream. */
export function encodeBinaryCopy(cols: ReadingColumns, only?: readonly number[]): Uint8Array {
  const n = only ? only.length : cols.count;
  let size = COPY_HEADER + 2;
  for (let k = 0; k < n; k++) {
    const r = only ? only[k]! : k;
    size += ROW_FIXED + (STATUS_BYTES[cols.status[r]!]?.length ?? 0);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out.set(COPY_SIGNATURE, 0); // flags and header extension length stay 0
  let o = COPY_HEADER;
  for (let k = 0; k < n; k++) {
    const r = only ? only[k]! : k;
    const pgUs = cols.timeUs[r]! - PG_EPOCH_US;
    const hi = Math.floor(pgUs / TWO_32);
    view.setInt16(o, 4);
    view.setInt32(o + 2, 8);
    view.setInt32(o + 6, hi);
    view.setUint32(o + 10, pgUs - hi * TWO_32);
    view.setInt32(o + 14, 4);
    view.setInt32(o + 18, cols.sensor[r]!);
    view.setInt32(o + 22, 8);
    view.setFloat64(o + 26, cols.value[r]!);
    const st = STATUS_BYTES[cols.status[r]!];
    if (st) {
      view.setInt32(o + 34, st.length);
      out.set(st, o + 38);
      o += ROW_FIXED + st.length;
    } else {
      view.setInt32(o + 34, -1); // NULL
      o += ROW_FIXED;
    }
  }
  view.setInt16(o, -1);
  return out;
}

/** Distinct (sensor_id, hour) pairs of the rows, as two arrays (hours since 1970-01-01 UTC). */
export function hourBuckets(cols: ReadingColumns): { sensors: number[]; hours: number[] } {
  const seen = new Set<number>();
  for (let r = 0; r < cols.count; r++) {
    const hour = Math.floor(cols.timeUs[r]! / 3_600_000_000);
    seen.add(hour * TWO_32 + (cols.sensor[r]! >>> 0));
  }
  const sensors: number[] = [];
  const hours: number[] = [];
  for (const k of seen) {
    const hour = Math.floor(k / TWO_32);
    sensors.push((k - hour * TWO_32) | 0);
    hours.push(hour);
  }
  return { sensors, hours };
}
