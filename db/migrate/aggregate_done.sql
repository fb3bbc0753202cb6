-- Legacy migration: mark the batches inside an aggregated range.
--
-- Inputs:      $1 source, $2, $3 the range just aggregated.
-- Writes:      migration_checkpoint.aggregated of those batches.
-- Idempotency: marking again changes nothing.

UPDATE migration_checkpoint SET aggregated = true
WHERE source = $1 AND batch_start >= $2::timestamptz AND batch_end <= $3::timestamptz AND NOT aggregated
