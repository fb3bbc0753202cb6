-- Legacy migration: what the legacy table holds, per node and message type.
--
-- Inputs:      the session view cea_legacy_src (db/migrate/source.ts).
-- Writes:      nothing (one read-only scan of the legacy table).
-- Idempotency: a pure query. node_id is bigint (text in the answer): a node id
--              beyond integer is reported as an unmapped node, never an error.

SELECT node_id::text AS node_id,
       message_type,
       count(*)::bigint AS legacy_rows,
       to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first,
       to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last,
       count(*) FILTER (WHERE data IS NULL OR jsonb_typeof(data) <> 'object')::bigint AS not_object,
       count(*) FILTER (WHERE ts IS NULL)::bigint AS no_time,
       count(*) FILTER (WHERE dst = 'ambiguous')::bigint AS ambiguous,
       count(*) FILTER (WHERE dst = 'nonexistent')::bigint AS nonexistent,
       count(*) FILTER (WHERE nul)::bigint AS nul,
       count(*) FILTER (WHERE dup_keys)::bigint AS dup_keys
FROM cea_legacy_src
GROUP BY node_id, message_type
ORDER BY node_id NULLS LAST, message_type NULLS LAST
