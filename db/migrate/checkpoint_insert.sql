-- Legacy migration: record one committed batch.
--
-- Inputs:      $1 source, $2 batch_start, $3 batch_end, $4 legacy_rows,
--              $5 values_seen, $6 keys_numeric, $7 inserted, $8 stats (jsonb),
--              $9 the legacy time zone and $10 the --ambiguous choice (both NULL
--              for a timestamptz column).
-- Writes:      one migration_checkpoint row (the table of schema migration
--              0006), in the transaction of the batch it describes.
-- Idempotency: a batch range is recorded once; recording it again (a run with
--              --ignore-checkpoint) keeps the first record, and marks it for
--              the aggregate update again only if the batch wrote rows.

INSERT INTO migration_checkpoint (source, batch_start, batch_end, legacy_rows, values_seen, keys_numeric, inserted, stats, time_zone, ambiguous)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (source, batch_end) DO UPDATE SET aggregated = false
  WHERE EXCLUDED.inserted > 0
