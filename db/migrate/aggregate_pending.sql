-- Legacy migration: the range whose aggregates are not yet up to date.
--
-- Inputs:      $1 source.
-- Writes:      nothing.
-- Idempotency: a pure query. NULLs when every committed batch is aggregated.

SELECT to_char(min(batch_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS start,
       to_char(max(batch_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "end"
FROM migration_checkpoint
WHERE source = $1 AND NOT aggregated
