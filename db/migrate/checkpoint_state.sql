-- Legacy migration: what earlier runs committed for one source.
--
-- Inputs:      $1 source.
-- Writes:      nothing.
-- Idempotency: a pure query. batch_end is where a resumed run starts; the
--              stats of every committed batch are returned for the report.

SELECT to_char(batch_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS batch_start,
       to_char(batch_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS batch_end,
       legacy_rows, values_seen, keys_numeric, inserted, stats, time_zone, ambiguous
FROM migration_checkpoint
WHERE source = $1
ORDER BY batch_end
