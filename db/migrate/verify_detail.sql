-- Legacy migration: the first differing keys of one mismatching sensor-day.
--
-- Inputs:      $1 sensor id, $2, $3 the day [start, end), $4, $5 the first and
--              last legacy instants; the session view, functions and mapping.
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     up to 5 times, in order, where the legacy value (as the batch
--              keeps it) and the stored row differ, either side NULL when absent.

WITH keyed AS (
  SELECT l.ts AS time, min(pg_temp.cea_legacy_value(kv.value, pg_temp.cea_legacy_kind(kv.value)) + s.off) AS value
  FROM cea_legacy_src l
  CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
  JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
  WHERE s.sensor_id = $1
    AND l.raw >= pg_temp.cea_raw_lo($2::timestamptz) AND l.raw < pg_temp.cea_raw_hi($3::timestamptz)
    AND l.ts >= $2::timestamptz AND l.ts < $3::timestamptz
    AND pg_temp.cea_legacy_kind(kv.value) IN ('number', 'numeric_string')
  GROUP BY l.ts
), stored AS (
  SELECT time, value, status FROM measurement
  WHERE sensor_id = $1 AND time >= $2::timestamptz AND time < $3::timestamptz
    AND time >= $4::timestamptz AND time <= $5::timestamptz
)
SELECT to_char(coalesce(k.time, m.time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
       k.value AS legacy, m.value AS stored, m.status
FROM keyed k FULL JOIN stored m ON m.time = k.time
WHERE k.time IS NULL OR m.time IS NULL OR k.value IS DISTINCT FROM m.value OR m.status IS DISTINCT FROM 'migrated'
ORDER BY 1
LIMIT 5
