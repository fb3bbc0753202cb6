-- Legacy migration: verification of one range of whole facility-local days.
--
-- Inputs:      $1, $2 the range [start, end) (starts of local days,
--              cea_daily_bucket); $3, $4 the first and last legacy instants;
--              $5 the node ids that were migrated; the session view and functions.
-- Writes:      nothing.
-- Idempotency: a pure query.
--
-- Per sensor per local day (the days of the daily aggregates): the legacy side
-- is every numeric value counted once per timestamp (duplicates collapse; on a
-- conflict the smallest value, as the batch keeps), the measurement side every
-- row of that sensor in that day within the legacy time range. Both sides give
-- count, min, max, first and last time, the rows not written by the migration
-- (status other than 'migrated'), and an order-independent checksum of the
-- content: the sum of a 64-bit hash of (time to the microsecond, value as
-- stored) over the rows, so a changed value, a moved time or a swapped row is
-- seen even when every summary agrees. Rows are summed per 15 minutes first
-- (every zone's offset is a multiple of 15 minutes), then per local day, so
-- the zone conversion runs per bucket, not per row. A missing side comes back
-- as NULLs.

WITH keyed AS (
  SELECT s.sensor_id, l.ts AS time, min(pg_temp.cea_legacy_value(kv.value, pg_temp.cea_legacy_kind(kv.value)) + s.off) AS value
  FROM cea_legacy_src l
  CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
  JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
  WHERE l.raw >= pg_temp.cea_raw_lo($1::timestamptz) AND l.raw < pg_temp.cea_raw_hi($2::timestamptz)
    AND l.ts >= $1::timestamptz AND l.ts < $2::timestamptz
    AND pg_temp.cea_legacy_kind(kv.value) IN ('number', 'numeric_string')
  GROUP BY s.sensor_id, l.ts
), legacy_q AS (
  SELECT sensor_id, time_bucket(INTERVAL '15 minutes', time) AS q, count(*) AS n,
         min(value) AS lo, max(value) AS hi, min(time) AS t0, max(time) AS t1,
         sum(hashint8extended((extract(epoch FROM time) * 1000000)::bigint # hashfloat8extended(value, 0), 0)) AS h
  FROM keyed GROUP BY 1, 2
), legacy AS (
  SELECT sensor_id, cea_daily_bucket(q) AS day, sum(n)::bigint AS n, min(lo) AS lo, max(hi) AS hi,
         min(t0) AS t0, max(t1) AS t1, sum(h) AS h
  FROM legacy_q GROUP BY 1, 2
), meas_q AS (
  SELECT m.sensor_id, time_bucket(INTERVAL '15 minutes', m.time) AS q, count(*) AS n,
         min(m.value) AS lo, max(m.value) AS hi, min(m.time) AS t0, max(m.time) AS t1,
         sum(hashint8extended((extract(epoch FROM m.time) * 1000000)::bigint # hashfloat8extended(m.value, 0), 0)) AS h,
         count(*) FILTER (WHERE m.status IS DISTINCT FROM 'migrated') AS other
  FROM measurement m
  WHERE m.time >= $1::timestamptz AND m.time < $2::timestamptz
    AND m.time >= $3::timestamptz AND m.time <= $4::timestamptz
    AND m.sensor_id IN (SELECT sensor_id FROM cea_legacy_map WHERE node_id = ANY ($5::bigint[]))
  GROUP BY 1, 2
), meas AS (
  SELECT sensor_id, cea_daily_bucket(q) AS day, sum(n)::bigint AS n, min(lo) AS lo, max(hi) AS hi,
         min(t0) AS t0, max(t1) AS t1, sum(h) AS h, sum(other)::bigint AS other
  FROM meas_q GROUP BY 1, 2
)
SELECT coalesce(l.sensor_id, m.sensor_id) AS sensor_id,
       to_char(coalesce(l.day, m.day) AT TIME ZONE cea_daily_timezone(), 'YYYY-MM-DD') AS day,
       to_char(coalesce(l.day, m.day) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS day_start,
       l.n AS legacy_n, m.n AS measured_n, l.lo AS legacy_min, m.lo AS measured_min,
       l.hi AS legacy_max, m.hi AS measured_max,
       to_char(l.t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS legacy_first,
       to_char(m.t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS measured_first,
       to_char(l.t1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS legacy_last,
       to_char(m.t1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS measured_last,
       l.h::text AS legacy_sum, m.h::text AS measured_sum, coalesce(m.other, 0) AS other
FROM legacy l FULL JOIN meas m ON m.sensor_id = l.sensor_id AND m.day = l.day
ORDER BY 1, 2
