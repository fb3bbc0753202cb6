import type { Queryable } from "../../db/pool.js";

// Aggregates computed in JavaScript from raw rows, independently of the SQL
// under test: UTC hours, and local days found with Intl (the runtime's own
// time zone data), not with time_bucket.

const HOUR = 3_600_000;
const DAY = 86_400_000;

const formats = new Map<string, Intl.DateTimeFormat>();

/** The offset of `tz` from UTC at the instant `ms`, in ms (Europe/Amsterdam in summer: +7 200 000). */
export function zoneOffsetMs(ms: number, tz: string): number {
  let f = formats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formats.set(tz, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  const asUtc = Date.UTC(
    Number(p.year),
    Number(p.month) - 1,
    Number(p.day),
    Number(p.hour),
    Number(p.minute),
    Number(p.second),
  );
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** The instant the local day holding `ms` begins (local midnight) in `tz`. */
export function localDayStart(ms: number, tz: string): number {
  const midnightAsUtc = Math.floor((ms + zoneOffsetMs(ms, tz)) / DAY) * DAY;
  // the offset at midnight itself may differ from the one at ms (a DST change that day)
  let t = midnightAsUtc - zoneOffsetMs(midnightAsUtc, tz);
  t = midnightAsUtc - zoneOffsetMs(t, tz);
  return t;
}

export const utcHourStart = (ms: number): number => Math.floor(ms / HOUR) * HOUR;

export interface Reading {
  ms: number;
  sensor_id: number;
  value: number;
  status: string | null;
}

export interface Bucket {
  bucket: number;
  sensor_id: number;
  min: number;
  max: number;
  avg: number;
  count: number;
}

/** min, max, mean and count per (bucket, sensor); readings with status out_of_range left out. */
export function aggregate(rows: readonly Reading[], bucketOf: (ms: number) => number): Bucket[] {
  const acc = new Map<string, Bucket & { sum: number }>();
  for (const r of rows) {
    if (r.status === "out_of_range") continue;
    const bucket = bucketOf(r.ms);
    const key = `${r.sensor_id}/${bucket}`;
    const a = acc.get(key);
    if (!a)
      acc.set(key, { bucket, sensor_id: r.sensor_id, min: r.value, max: r.value, avg: 0, count: 1, sum: r.value });
    else {
      a.min = Math.min(a.min, r.value);
      a.max = Math.max(a.max, r.value);
      a.count++;
      a.sum += r.value;
    }
  }
  return [...acc.values()]
    .map(({ sum, ...b }) => ({ ...b, avg: sum / b.count }))
    .sort((x, y) => x.sensor_id - y.sensor_id || x.bucket - y.bucket);
}

/** Every raw reading of the database. */
export async function rawReadings(db: Queryable): Promise<Reading[]> {
  const { rows } = await db.query<{ ms: string; sensor_id: number; value: number; status: string | null }>(
    `SELECT (extract(epoch FROM time) * 1000)::bigint::text AS ms, sensor_id, value, status FROM measurement`,
  );
  return rows.map((r) => ({ ms: Number(r.ms), sensor_id: r.sensor_id, value: r.value, status: r.status }));
}

/** The rows of an aggregate view or table, in the shape of aggregate(). */
export async function storedBuckets(
  db: Queryable,
  relation: "measurement_hourly" | "measurement_daily",
): Promise<Bucket[]> {
  const { rows } = await db.query<{
    ms: string;
    sensor_id: number;
    min_value: number;
    max_value: number;
    avg_value: number;
    sample_count: string;
  }>(
    `SELECT (extract(epoch FROM bucket) * 1000)::bigint::text AS ms, sensor_id, min_value, max_value, avg_value,
            sample_count::text
     FROM ${relation} ORDER BY sensor_id, bucket`,
  );
  return rows.map((r) => ({
    bucket: Number(r.ms),
    sensor_id: r.sensor_id,
    min: r.min_value,
    max: r.max_value,
    avg: r.avg_value,
    count: Number(r.sample_count),
  }));
}

/**
 * The differences between stored and expected buckets: missing, extra, or with
 * another min, max or count (exact) or mean (relative 1e-12: the sum of a mean
 * may be taken in another order).
 */
export function bucketDifferences(stored: readonly Bucket[], expected: readonly Bucket[]): string[] {
  const key = (b: Bucket) => `${b.sensor_id}@${new Date(b.bucket).toISOString()}`;
  const have = new Map(stored.map((b) => [key(b), b]));
  const out: string[] = [];
  for (const e of expected) {
    const s = have.get(key(e));
    have.delete(key(e));
    if (!s) out.push(`missing ${key(e)}`);
    else if (
      s.min !== e.min ||
      s.max !== e.max ||
      s.count !== e.count ||
      Math.abs(s.avg - e.avg) > 1e-12 * Math.max(1, Math.abs(e.avg))
    )
      out.push(`${key(e)}: stored ${JSON.stringify(s)}, expected ${JSON.stringify(e)}`);
  }
  for (const k of have.keys()) out.push(`extra ${k}`);
  return out;
}
