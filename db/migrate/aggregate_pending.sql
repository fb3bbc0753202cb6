-- Legacy migration: the ranges whose aggregates are not yet up to date.
--
-- Inputs:      $1 source.
-- Writes:      nothing.
-- Idempotency: a pure query. No row when every committed batch is aggregated.
-- Returns:     the committed, not yet aggregated batch ranges, in order (the
--              caller merges neighbours: one stray batch decades away is one
--              more small range, not a recompute of every day in between).

SELECT (extract(epoch FROM batch_start) * 1000)::bigint::text AS start,
       (extract(epoch FROM batch_end) * 1000)::bigint::text AS "end"
FROM migration_checkpoint
WHERE source = $1 AND NOT aggregated
ORDER BY batch_start
