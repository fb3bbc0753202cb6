-- Legacy migration: every decoded_data key per node, with its count.
--
-- Inputs:      the session view cea_legacy_src (db/migrate/source.sql).
-- Writes:      nothing (one read-only scan of the legacy table). The caller
--              matches the keys against the site file's sensors.
-- Idempotency: a pure query.

SELECT l.node_id::text AS node_id, k.key, count(*)::bigint AS n
FROM cea_legacy_src l
CROSS JOIN LATERAL jsonb_object_keys(CASE WHEN jsonb_typeof(l.data) = 'object' THEN l.data END) AS k(key)
WHERE l.ts IS NOT NULL
GROUP BY l.node_id, k.key
ORDER BY l.node_id NULLS LAST, k.key
