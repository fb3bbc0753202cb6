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

// A group of readings in one autocommitted statement (the API's group commit):
// the first occurrence of each key (sensor_id, time) in the group is inserted
// unless the key is taken; the same statement queues the touched hour buckets
// for the Apache-edition aggregates (as db/measurements.ts does), so the mark
// commits with the rows. One answer row per input, in input order: the row
// this statement stored under the input's key (by this input or by an earlier
// one of the group) and whether this input created it. A key that was already
// taken comes back without a row: the stored row is read afterwards, by key,
// where the time is a constant and only its chunk is searched (a join here
// would probe every chunk's index for every input, new rows included). Keys go
// in in index order, so two groups sharing keys wait on each other in the same
// order instead of deadlocking.
const INSERT_GROUP = `WITH input AS (
  SELECT u.time, u.sensor_id, u.value, u.status, u.ord,
         min(u.ord) OVER (PARTITION BY u.sensor_id, u.time) AS first_ord
  FROM unnest($1::timestamptz[], $2::int[], $3::float8[], $4::text[])
       WITH ORDINALITY AS u(time, sensor_id, value, status, ord)
), ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  SELECT time, sensor_id, value, status FROM input WHERE ord = first_ord
  ORDER BY sensor_id, time
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING time, sensor_id, value, status
), marked AS (
  INSERT INTO measurement_agg_pending (sensor_id, bucket)
  SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM ins
  WHERE cea_timescale_edition() = 'apache'
)
SELECT i.ord::int AS ord, i.ord = i.first_ord AS inserted,
       ${iso("x.time")} AS time, x.sensor_id, x.value, x.status
FROM input i JOIN ins x ON x.sensor_id = i.sensor_id AND x.time = i.time`;

export type GroupOutcome = (StoredMeasurement & { inserted: boolean }) | undefined;

/**
 * Insert a group of readings in one statement (one transaction, one WAL
 * flush). Returns, per input in order, the row the statement stored under its
 * key and whether that input created it; undefined when the key was already
 * taken (the caller reads the stored row with getMeasurement). A row the
 * database rejects fails the whole statement: the caller isolates.
 */
export async function insertGroup(
  db: Queryable,
  rows: readonly { time: string; sensor_id: number; value: number; status: string | null }[],
): Promise<GroupOutcome[]> {
  const n = rows.length;
  const times = new Array<string>(n);
  const sensors = new Array<number>(n);
  const values = new Array<number>(n);
  const statuses = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    times[i] = r.time;
    sensors[i] = r.sensor_id;
    values[i] = r.value;
    statuses[i] = r.status;
  }
  const res = await db.query<StoredMeasurement & { ord: number; inserted: boolean }>({
    name: "cea_api_insert_group",
    text: INSERT_GROUP,
    values: [times, sensors, values, statuses],
  });
  const out: GroupOutcome[] = new Array(n).fill(undefined);
  for (const r of res.rows) {
    out[r.ord - 1] = { time: r.time, sensor_id: r.sensor_id, value: r.value, status: r.status, inserted: r.inserted };
  }
  return out;
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
