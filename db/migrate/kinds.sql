-- Legacy migration (dry run): per sensor, how many legacy values of each kind
-- a migration of [$1, $2) would read, and how many distinct numeric keys
-- (rows it would write at most).
--
-- Inputs:      $1, $2 the range; the session view and functions.
-- Writes:      nothing.
-- Idempotency: a pure query.

SELECT s.sensor_id, pg_temp.cea_legacy_kind(kv.value) AS kind, count(*)::bigint AS n,
       count(DISTINCT l.ts)::bigint AS keys
FROM cea_legacy_src l
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
WHERE l.raw >= pg_temp.cea_raw_lo($1::timestamptz) AND l.raw < pg_temp.cea_raw_hi($2::timestamptz)
  AND l.ts >= $1::timestamptz AND l.ts < $2::timestamptz
GROUP BY s.sensor_id, 2
ORDER BY s.sensor_id, 2
