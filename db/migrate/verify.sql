-- Legacy migration: verification of one range of whole UTC days.
--
-- Inputs:      $1, $2 the range [start, end) (day-aligned); $3, $4 the first and
--              last legacy timestamps; $5 the node ids that were migrated; the
--              session view and functions.
-- Writes:      nothing.
-- Idempotency: a pure query.
--
-- Per sensor per day: the legacy side is every numeric value counted once per
-- timestamp (duplicates collapse; on a conflict the smallest value, as the
-- batch keeps), with min, max and time range; the measurement side is every
-- row of that sensor in that day within the legacy time range. A missing side
-- comes back as NULLs.

WITH keyed AS (
  SELECT s.sensor_id, l.ts AS time, min(pg_temp.cea_legacy_value(kv.value, pg_temp.cea_legacy_kind(kv.value)) + s.off) AS value
  FROM cea_legacy_src l
  CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
  JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
  WHERE l.ts >= $1::timestamptz AND l.ts < $2::timestamptz
    AND pg_temp.cea_legacy_kind(kv.value) IN ('number', 'numeric_string')
  GROUP BY s.sensor_id, l.ts
), legacy AS (
  SELECT sensor_id, time_bucket(INTERVAL '1 day', time) AS day, count(*)::bigint AS n,
         min(value) AS lo, max(value) AS hi, min(time) AS t0, max(time) AS t1
  FROM keyed GROUP BY 1, 2
), meas AS (
  SELECT m.sensor_id, time_bucket(INTERVAL '1 day', m.time) AS day, count(*)::bigint AS n,
         min(m.value) AS lo, max(m.value) AS hi, min(m.time) AS t0, max(m.time) AS t1
  FROM measurement m
  WHERE m.time >= $1::timestamptz AND m.time < $2::timestamptz
    AND m.time >= $3::timestamptz AND m.time <= $4::timestamptz
    AND m.sensor_id IN (SELECT sensor_id FROM cea_legacy_map WHERE node_id = ANY ($5::int[]))
  GROUP BY 1, 2
)
SELECT coalesce(l.sensor_id, m.sensor_id) AS sensor_id,
       to_char(coalesce(l.day, m.day) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       l.n AS legacy_n, m.n AS measured_n, l.lo AS legacy_min, m.lo AS measured_min,
       l.hi AS legacy_max, m.hi AS measured_max,
       to_char(l.t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS legacy_first,
       to_char(m.t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS measured_first,
       to_char(l.t1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS legacy_last,
       to_char(m.t1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS measured_last
FROM legacy l FULL JOIN meas m ON m.sensor_id = l.sensor_id AND m.day = l.day
ORDER BY 1, 2
