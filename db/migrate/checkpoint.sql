-- Legacy migration: the checkpoint table.
--
-- Inputs:      none.
-- Writes:      creates table migration_checkpoint if it does not exist. One row
--              per committed batch, inserted in the same transaction as the
--              batch's measurements, so a batch is either moved and recorded or
--              neither. `source` names the legacy table and its columns (see
--              db/migrate/migrate.ts); a resumed run moves every part of the
--              range that no committed batch covers (with batches in flight on
--              two sessions a later batch can commit before an earlier one, so
--              max(batch_end) alone could skip a range). `stats` holds the
--              batch's counts (per-sensor value kinds, conflicts) so the report
--              can total them over resumed runs. `aggregated` turns true once
--              the aggregates have been brought up to date over the batch's
--              range (at the end of a run), so a run that died before that
--              leaves the work to the next run.
-- Idempotency: IF NOT EXISTS; applying it again changes nothing.

CREATE TABLE IF NOT EXISTS migration_checkpoint (
  source        text NOT NULL,
  batch_start   timestamptz NOT NULL,
  batch_end     timestamptz NOT NULL,
  legacy_rows   bigint NOT NULL,
  values_seen   bigint NOT NULL,
  keys_numeric  bigint NOT NULL,
  inserted      bigint NOT NULL,
  stats         jsonb NOT NULL,
  committed_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source, batch_end),
  CHECK (batch_end > batch_start)
);
-- added after the first release; older checkpoints count as not aggregated
ALTER TABLE migration_checkpoint ADD COLUMN IF NOT EXISTS aggregated boolean NOT NULL DEFAULT false;
-- the zone local times were read in (NULL: a timestamptz column, or a
-- checkpoint older than this column); a run in another zone is refused
ALTER TABLE migration_checkpoint ADD COLUMN IF NOT EXISTS time_zone text;
