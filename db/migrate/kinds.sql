-- Legacy migration (dry run): per sensor, how many legacy values of each kind
-- a migration of [$1, $2) would read, and how many distinct numeric keys
-- (rows it would write at most).
--
-- Inputs:      $1, $2 the range; the session view and functions.
-- Writes:      nothing.
-- Idempotency: a pure query.

SELECT s.sensor_id, pg_temp.cea_legacy_kind(kv.value, x.n) AS kind, count(*)::bigint AS n,
       count(DISTINCT l.ts) FILTER (WHERE x.n IS NOT NULL AND pg_temp.cea_legacy_in_range(x.n))::bigint AS keys
FROM cea_legacy_src l
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS kv
JOIN cea_legacy_map s ON s.node_id = l.node_id AND s.name = kv.key
CROSS JOIN LATERAL (SELECT pg_temp.cea_legacy_numeric(kv.value) AS n) AS x
WHERE l.ts >= $1::timestamptz AND l.ts < $2::timestamptz
GROUP BY s.sensor_id, 2
ORDER BY s.sensor_id, 2
