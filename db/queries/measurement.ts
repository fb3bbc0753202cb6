import type { Queryable } from "../pool.js";

// API queries on the measurement family: the hypertable and its hourly/daily
// aggregates. Times leave the database as UTC ISO 8601 text with microseconds,
// so nothing is rounded by a JS Date on the way out.

const UTC = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const iso = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', ${UTC})`;

export interface StoredMeasurement {
  time: string;
  sensor_id: number;
  value: number;
  status: string | null;
}

// One statement, autocommitted: the row and its aggregate-bucket mark (Apache
// edition, as in db/measurements.ts) commit together. When the key is already
// taken the stored row comes back instead, flagged inserted = false.
const INSERT_ONE = `WITH ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  VALUES ($1::timestamptz, $2::int, $3::float8, $4::text)
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING time, sensor_id, value, status
), marked AS (
  INSERT INTO measurement_agg_pending (sensor_id, bucket)
  SELECT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM ins
  WHERE cea_timescale_edition() = 'apache'
)
SELECT true AS inserted, ${iso("time")} AS time, sensor_id, value, status FROM ins
UNION ALL
SELECT false, ${iso("m.time")}, m.sensor_id, m.value, m.status FROM measurement m
WHERE m.sensor_id = $2::int AND m.time = $1::timestamptz AND NOT EXISTS (SELECT 1 FROM ins)`;

/**
 * Insert one reading unless its key (sensor_id, time) is taken. Returns the
 * stored row and whether this call created it; undefined only in the narrow
 * race where a concurrent writer committed the key after this statement's
 * snapshot (the caller re-reads with getMeasurement).
 */
export async function insertOne(
  db: Queryable,
  m: { time: string; sensor_id: number; value: number; status: string | null },
): Promise<(StoredMeasurement & { inserted: boolean }) | undefined> {
  const { rows } = await db.query<StoredMeasurement & { inserted: boolean }>({
    name: "cea_api_insert_one",
    text: INSERT_ONE,
    values: [m.time, m.sensor_id, m.value, m.status],
  });
  return rows[0];
}

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
const AGG_WIDTH = { hourly: "1 hour", daily: "1 day" } as const;

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
   WHERE sensor_id = ANY($1::int[]) AND bucket >= time_bucket(INTERVAL '${AGG_WIDTH[r]}', $2::timestamptz)
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
         AND bucket >= time_bucket(INTERVAL '${AGG_WIDTH[resolution]}', $2::timestamptz) AND bucket < $3::timestamptz`;
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
