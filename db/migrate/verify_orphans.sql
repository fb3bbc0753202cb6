-- Legacy migration: migrated rows that no legacy row accounts for any more.
--
-- Inputs:      $1 the source (checkpoint key); $2, $3 the ranges the
--              verification compared (starts and ends of its local days); $4,
--              $5 the first and last legacy instants (NULL: the table is empty);
--              $6 the node ids the comparison covered; the mapping cea_legacy_map.
-- Writes:      nothing.
-- Idempotency: a pure query.
--
-- The verification compares the local days the plan touches, between the first
-- and the last legacy instant. Rows with status 'migrated' of the mapped sensors
-- in a range this source's checkpoints cover but the comparison did not (legacy
-- rows deleted after the migration: whole days, or the table's first or last
-- days), and those of sensors whose node has no legacy row left, would pass
-- unseen; they are counted here per sensor and local day. The ranges are
-- subtracted first (multiranges), so when nothing is left this reads no
-- measurement row but those of the sensors the comparison did not cover
-- (through the (sensor_id, time) index).
-- Returns:     per sensor and local day: the rows, the first and last time.

WITH covered AS (
  SELECT range_agg(tstzrange(batch_start, batch_end)) AS r FROM migration_checkpoint WHERE source = $1
), compared AS (
  SELECT coalesce(range_agg(tstzrange(s, e)), '{}'::tstzmultirange)
         * CASE WHEN $4::timestamptz IS NULL THEN '{}'::tstzmultirange
                ELSE tstzmultirange(tstzrange($4::timestamptz, $5::timestamptz, '[]')) END AS r
  FROM unnest($2::timestamptz[], $3::timestamptz[]) AS v(s, e)
), rest AS (
  SELECT unnest(covered.r - compared.r) AS r FROM covered, compared WHERE covered.r IS NOT NULL
), seen AS (
  SELECT unnest(covered.r * compared.r) AS r FROM covered, compared WHERE covered.r IS NOT NULL
), orphans AS (
  -- one (sensor_id, time) index range per sensor and range (LATERAL, and
  -- OFFSET 0 so that it is not flattened: never a scan of every sensor's rows
  -- in the range)
  SELECT m.sensor_id, m.time
  FROM rest CROSS JOIN (SELECT DISTINCT sensor_id FROM cea_legacy_map) s
  CROSS JOIN LATERAL (
    SELECT m.sensor_id, m.time FROM measurement m
    WHERE m.sensor_id = s.sensor_id AND m.time >= lower(rest.r) AND m.time <= upper(rest.r)
      AND m.time <@ rest.r AND m.status = 'migrated' OFFSET 0) m
  UNION ALL
  SELECT m.sensor_id, m.time
  FROM seen CROSS JOIN (SELECT DISTINCT sensor_id FROM cea_legacy_map WHERE NOT node_id = ANY ($6::bigint[])) s
  CROSS JOIN LATERAL (
    SELECT m.sensor_id, m.time FROM measurement m
    WHERE m.sensor_id = s.sensor_id AND m.time >= lower(seen.r) AND m.time <= upper(seen.r)
      AND m.time <@ seen.r AND m.status = 'migrated' OFFSET 0) m
)
SELECT sensor_id,
       to_char(cea_daily_bucket(time) AT TIME ZONE cea_daily_timezone(), 'YYYY-MM-DD') AS day,
       to_char(cea_daily_bucket(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS day_start,
       count(*)::bigint AS n,
       to_char(min(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first,
       to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last
FROM orphans
GROUP BY 1, 2, 3
ORDER BY 1, 3
