-- Legacy migration: move one time range of the legacy table into measurement.
--
-- Inputs:      $1, $2 the batch's range [start, end); the session view
--              cea_legacy_src (source.ts) and functions (functions.sql); the
--              mapping cea_legacy_map (map.sql) from the site file.
-- Writes:      measurement rows (time, sensor_id, value, status 'migrated') for
--              every numeric value of a legacy row whose node maps to a device
--              and whose key names a sensor of that device; value = the legacy
--              number + the sensor's calibration_offset. Nothing else: the
--              aggregates are brought up to date once, at the end of the run,
--              over the whole migrated range (aggregate_apache.sql,
--              refresh_community.sql). Never writes the legacy table.
-- Idempotency: a stored (sensor_id, time) is kept: running a range again
--              writes nothing. Duplicated frames (same node and time) collapse
--              to one row per key; when they disagree (a conflict) the SMALLEST
--              value is kept, which does not depend on the physical order of
--              the legacy rows, and the conflict is counted.
-- Returns:     one row of counts for the report and the checkpoint: legacy
--              rows in range, values seen, distinct numeric keys, per-sensor
--              counts of each value kind and of rows inserted, per-sensor
--              conflict counts and up to 20 conflict samples.
--
-- Where the time goes (EXPLAIN ANALYZE of a one-day batch, 88k legacy rows,
-- 280k values): the insert itself with its foreign-key check and unique index
-- is most of it, then jsonb_each and the classification. So the legacy range
-- is read once, each value is classified once (classified is materialized and
-- feeds the insert and the statistics), and only values of duplicated frames
-- (a sensor's key can repeat only when its node sent two frames with the same
-- timestamp) go through a GROUP BY; the rest go straight to the insert.

WITH src AS MATERIALIZED (
  SELECT ts, node_id, data, count(*) OVER (PARTITION BY ts, node_id) > 1 AS dup
  FROM cea_legacy_src
  -- the column in its own type first (an index on it serves), then the instant exactly
  WHERE raw >= pg_temp.cea_raw_lo($1::timestamptz) AND raw < pg_temp.cea_raw_hi($2::timestamptz)
    AND ts >= $1::timestamptz AND ts < $2::timestamptz
), classified AS MATERIALIZED (
  SELECT x.time, x.dup, s.sensor_id, s.off, x.j, pg_temp.cea_legacy_kind(x.j) AS kind
  -- OFFSET 0 keeps jsonb_each apart from the mapping, so the mapping is one
  -- hash join instead of a lookup per legacy row
  FROM (SELECT l.ts AS time, l.dup, l.node_id, kv.key, kv.value AS j
        FROM src l
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
        OFFSET 0) x
  JOIN cea_legacy_map s ON s.node_id = x.node_id AND s.name = x.key
), grouped AS MATERIALIZED (
  SELECT sensor_id, time, min(v) AS value, max(v) AS max_value
  FROM (SELECT sensor_id, time, pg_temp.cea_legacy_value(j, kind) + off AS v
        FROM classified WHERE dup AND kind IN ('number', 'numeric_string')) n
  GROUP BY sensor_id, time
), new_rows AS (
  SELECT time, sensor_id, pg_temp.cea_legacy_value(j, kind) + off AS value, 'migrated' AS status
  FROM classified WHERE NOT dup AND kind IN ('number', 'numeric_string')
  UNION ALL
  SELECT time, sensor_id, value, 'migrated' FROM grouped
-- the CTE `ins` that writes new_rows into measurement, from the one write
-- module (db/measurements.ts insertFromSelect: a stored key is kept, RETURNING
-- sensor_id, time); batches.ts puts it in place of the next line
), {{insert}}
SELECT
  (SELECT count(*) FROM src)::bigint AS legacy_rows,
  k.values_seen,
  k.keys_single + (SELECT count(*) FROM grouped)::bigint AS keys_numeric,
  k.kinds,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, n)), '[]'::jsonb)
     FROM (SELECT sensor_id, count(*) AS n FROM ins GROUP BY sensor_id) i) AS inserted_by_sensor,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, n)), '[]'::jsonb)
     FROM (SELECT sensor_id, count(*) AS n FROM grouped WHERE value <> max_value GROUP BY sensor_id) c) AS conflicts,
  (SELECT coalesce(jsonb_agg(jsonb_build_array(sensor_id, t, value, max_value)), '[]'::jsonb)
     FROM (SELECT sensor_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t, value, max_value
           FROM grouped WHERE value <> max_value ORDER BY sensor_id, time LIMIT 20) s) AS conflict_samples
-- the value kinds per sensor, values seen and numeric keys of single frames: one GROUP BY
FROM (SELECT coalesce(sum(n), 0)::bigint AS values_seen,
             coalesce(sum(single), 0)::bigint AS keys_single,
             coalesce(jsonb_agg(jsonb_build_array(sensor_id, kind, n)), '[]'::jsonb) AS kinds
      FROM (SELECT sensor_id, kind, count(*) AS n,
                   count(*) FILTER (WHERE NOT dup AND kind IN ('number', 'numeric_string')) AS single
            FROM classified GROUP BY sensor_id, kind) g) k
