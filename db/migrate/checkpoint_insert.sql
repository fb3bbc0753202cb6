-- Legacy migration: record one committed batch.
--
-- Inputs:      $1 source, $2 batch_start, $3 batch_end, $4 legacy_rows,
--              $5 values_seen, $6 keys_numeric, $7 inserted, $8 stats (jsonb),
--              $9 the legacy time zone (NULL for a timestamptz column).
-- Writes:      one migration_checkpoint row, in the transaction of the batch
--              it describes (db/migrate/checkpoint.sql).
-- Idempotency: a batch range is recorded once; recording it again (a run with
--              --ignore-checkpoint) keeps the first record, and marks it for
--              the aggregate update again only if the batch wrote rows.

INSERT INTO migration_checkpoint (source, batch_start, batch_end, legacy_rows, values_seen, keys_numeric, inserted, stats, time_zone)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (source, batch_end) DO UPDATE SET aggregated = false
  WHERE EXCLUDED.inserted > 0
