import type pg from "pg";
import { type StoredMeasurement, writeMeasurements } from "../measurements.js";
import type { Queryable } from "../pool.js";

// API queries on the measurement family: the hypertable and its hourly/daily
// aggregates. Times leave the database as UTC ISO 8601 text with microseconds,
// so nothing is rounded by a JS Date on the way out.

const UTC = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const iso = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', ${UTC})`;

// Writes live in db/measurements.ts, the one module that writes measurements;
// the API's group insert is re-exported here beside the API's reads.
export { type GroupOutcome, insertGroup, type StoredMeasurement } from "../measurements.js";

export async function getMeasurement(
  db: Queryable,
  sensorId: number,
  time: string,
): Promise<StoredMeasurement | undefined> {
  const { rows } = await db.query<StoredMeasurement>(
    `SELECT ${iso("time")} AS time, sensor_id, value, status FROM measurement
     WHERE sensor_id = $1 AND time = $2::timestamptz`,
    [sensorId, time],
  );
  return rows[0];
}

// The batch route's conflict check: the stored rows under the batch's keys
// that hold another value or status. Keys are looked up by (sensor_id, time)
// with the batch's own time range as bounds, so the planner keeps only the
// chunks that range covers (one or two for a batch of recent readings) instead
// of probing every chunk's index for every reading: a resent batch costs what
// a first write costs, however many days the table holds.
export const BATCH_CONFLICTS = `SELECT m.sensor_id, ${iso("m.time")} AS time, m.value, m.status
FROM unnest($1::timestamptz[], $2::int[], $3::float8[], $4::text[]) AS b(time, sensor_id, value, status)
JOIN measurement m ON m.sensor_id = b.sensor_id AND m.time = b.time
WHERE m.time >= $5::timestamptz AND m.time <= $6::timestamptz
  AND (m.value IS DISTINCT FROM b.value OR m.status IS DISTINCT FROM b.status)
ORDER BY m.time, m.sensor_id
LIMIT $7`;

/** A reading of the batch route: `time` in canonical UTC text (so the batch's range is its min and max text). */
export interface BatchReading {
  time: string;
  sensor_id: number;
  value: number;
  status: string | null;
}

/** The parameters of BATCH_CONFLICTS for a batch (non-empty), with at most `limit` answers. */
export function batchConflictParams(rows: readonly BatchReading[], limit: number): unknown[] {
  const n = rows.length;
  const times = new Array<string>(n);
  const sensors = new Array<number>(n);
  const values = new Array<number>(n);
  const statuses = new Array<string | null>(n);
  let lo = rows[0]?.time ?? "";
  let hi = lo;
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    times[i] = r.time;
    sensors[i] = r.sensor_id;
    values[i] = r.value;
    statuses[i] = r.status;
    if (r.time < lo) lo = r.time;
    if (r.time > hi) hi = r.time;
  }
  return [times, sensors, values, statuses, lo, hi, limit];
}

export interface BatchOutcome {
  /** rows new in this write */
  inserted: number;
  /** stored rows under the batch's keys with another value or status (at most `maxConflicts`); none when all were new */
  conflicts: StoredMeasurement[];
}

/**
 * The batch route's write, inside a transaction of the caller's: COPY into the
 * session's staging table and the shared idempotent merge (db/measurements.ts),
 * then, only when some rows were not new, the conflict check above. The caller
 * commits when there is no conflict and rolls back otherwise.
 */
export async function insertBatch(
  client: pg.ClientBase,
  rows: readonly BatchReading[],
  maxConflicts: number,
): Promise<BatchOutcome> {
  const inserted = await writeMeasurements(client, rows);
  if (inserted === rows.length) return { inserted, conflicts: [] };
  const { rows: conflicts } = await client.query<StoredMeasurement>(
    BATCH_CONFLICTS,
    batchConflictParams(rows, maxConflicts),
  );
  return { inserted, conflicts };
}

export type Resolution = "raw" | "hourly" | "daily";

export interface RawPoint {
  sensor_id: number;
  time: string;
  value: number;
  status: string | null;
}

export interface AggPoint {
  sensor_id: number;
  time: string;
  min: number;
  max: number;
  avg: number;
  count: number;
}

const AGG_TABLE = { hourly: "measurement_hourly", daily: "measurement_daily" } as const;
// the start of the bucket holding a time: UTC hours; the facility's local days (the schema's zone)
const AGG_FLOOR = {
  hourly: (t: string) => `time_bucket(INTERVAL '1 hour', ${t})`,
  daily: (t: string) => `cea_daily_bucket(${t})`,
} as const;

// Raw points come straight off the (sensor_id, time DESC) index; the window is
// [start, end). Aggregate buckets are those whose start lies in the window
// after aligning start down to its bucket.
const RAW_SQL = `SELECT sensor_id, ${iso("time")} AS time, value, status FROM measurement
WHERE sensor_id = ANY($1::int[]) AND time >= $2::timestamptz AND time < $3::timestamptz
ORDER BY sensor_id, time LIMIT $4`;

const aggSql = (r: "hourly" | "daily") =>
  `SELECT sensor_id, ${iso("bucket")} AS time, min_value AS min, max_value AS max, avg_value AS avg,
          sample_count::int AS count
   FROM ${AGG_TABLE[r]}
   WHERE sensor_id = ANY($1::int[]) AND bucket >= ${AGG_FLOOR[r]("$2::timestamptz")}
     AND bucket < $3::timestamptz
   ORDER BY sensor_id, bucket LIMIT $4`;

const AGG_SQL = { hourly: aggSql("hourly"), daily: aggSql("daily") };

export async function rawHistory(
  db: Queryable,
  sensorIds: number[],
  start: string,
  end: string,
  limit: number,
): Promise<RawPoint[]> {
  const { rows } = await db.query<RawPoint>({
    name: "cea_api_raw_history",
    text: RAW_SQL,
    values: [sensorIds, start, end, limit],
  });
  return rows;
}

export async function aggHistory(
  db: Queryable,
  resolution: "hourly" | "daily",
  sensorIds: number[],
  start: string,
  end: string,
  limit: number,
): Promise<AggPoint[]> {
  const { rows } = await db.query<AggPoint>({
    name: `cea_api_${resolution}_history`,
    text: AGG_SQL[resolution],
    values: [sensorIds, start, end, limit],
  });
  return rows;
}

/** Points in the window at a resolution, counted up to `cap` (cheap however large the window). */
export async function countPoints(
  db: Queryable,
  resolution: Resolution,
  sensorIds: number[],
  start: string,
  end: string,
  cap: number,
): Promise<number> {
  const inner =
    resolution === "raw"
      ? `SELECT 1 FROM measurement WHERE sensor_id = ANY($1::int[]) AND time >= $2::timestamptz AND time < $3::timestamptz`
      : `SELECT 1 FROM ${AGG_TABLE[resolution]} WHERE sensor_id = ANY($1::int[])
         AND bucket >= ${AGG_FLOOR[resolution]("$2::timestamptz")} AND bucket < $3::timestamptz`;
  const { rows } = await db.query<{ n: number }>({
    name: `cea_api_count_${resolution}`,
    text: `SELECT count(*)::int AS n FROM (${inner} LIMIT $4) s`,
    values: [sensorIds, start, end, cap],
  });
  return rows[0]?.n ?? 0;
}

/**
 * Time of the newest stored reading (any sensor), or null when the table is
 * empty. Per sensor over the (sensor_id, time DESC) key: there is no time index.
 */
export async function lastMeasurementTime(db: Queryable): Promise<string | null> {
  const { rows } = await db.query<{ time: string | null }>(
    `SELECT ${iso("max(t)")} AS time FROM sensor s
     CROSS JOIN LATERAL (SELECT time AS t FROM measurement m WHERE m.sensor_id = s.sensor_id
                         ORDER BY time DESC LIMIT 1) newest`,
  );
  return rows[0]?.time ?? null;
}
