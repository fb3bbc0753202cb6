-- Legacy migration: move one time range of the legacy table into measurement.
--
-- Inputs:      $1, $2 the batch's range [start, end); the session view
--              cea_legacy_src (source.sql) and functions (functions.sql); the
--              mapping cea_legacy_map (map.sql) from the site file.
-- Writes:      measurement rows (time, sensor_id, value, status 'migrated') for
--              every numeric value of a legacy row whose node maps to a device
--              and whose key names a sensor of that device; value = the legacy
--              number + the sensor's calibration_offset. On the Apache edition
--              it also queues the touched hour buckets in
--              measurement_agg_pending, committed with the rows (as
--              db/measurements.ts does). Never writes the legacy table.
-- Idempotency: ON CONFLICT (sensor_id, time) DO NOTHING: running a range again
--              writes nothing. Duplicated frames (same node, time and key)
--              collapse to one row; when they disagree (a conflict) the
--              SMALLEST value is kept, which does not depend on the physical
--              order of the legacy rows, and the conflict is counted.
-- Returns:     one row of counts for the report and the checkpoint: legacy
--              rows in range, values seen, distinct numeric keys, rows
--              inserted, per-sensor counts of each value kind and of rows
--              inserted, per-sensor conflict counts and up to 20 conflict samples.

WITH classified AS (
  SELECT l.ts AS time, s.sensor_id, s.off, kv.value AS j, pg_temp.cea_legacy_kind(kv.value) AS kind
  FROM cea_legacy_src l
  CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
  JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
  WHERE l.ts >= $1::timestamptz AND l.ts < $2::timestamptz
), keyed AS (
  SELECT sensor_id, time, min(v) AS value, max(v) AS max_value
  FROM (SELECT sensor_id, time, pg_temp.cea_legacy_value(j, kind) + off AS v
        FROM classified WHERE kind IN ('number', 'numeric_string')) n
  GROUP BY sensor_id, time
), ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  SELECT time, sensor_id, value, 'migrated' FROM keyed
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING sensor_id, time
), marked AS (
  INSERT INTO measurement_agg_pending (sensor_id, bucket)
  SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM ins
  WHERE cea_timescale_edition() = 'apache'
)
SELECT
  (SELECT count(*) FROM cea_legacy_src WHERE ts >= $1::timestamptz AND ts < $2::timestamptz)::bigint AS legacy_rows,
  (SELECT count(*) FROM classified)::bigint AS values_seen,
  (SELECT count(*) FROM keyed)::bigint AS keys_numeric,
  (SELECT count(*) FROM ins)::bigint AS inserted,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, kind, n)), '[]'::jsonb)
     FROM (SELECT sensor_id, kind, count(*) AS n FROM classified GROUP BY sensor_id, kind) k) AS kinds,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, n)), '[]'::jsonb)
     FROM (SELECT sensor_id, count(*) AS n FROM ins GROUP BY sensor_id) i) AS inserted_by_sensor,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, n)), '[]'::jsonb)
     FROM (SELECT sensor_id, count(*) AS n FROM keyed WHERE value <> max_value GROUP BY sensor_id) c) AS conflicts,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, t, value, max_value)), '[]'::jsonb)
     FROM (SELECT sensor_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t, value, max_value
           FROM keyed WHERE value <> max_value ORDER BY sensor_id, time LIMIT 20) s) AS conflict_samples
