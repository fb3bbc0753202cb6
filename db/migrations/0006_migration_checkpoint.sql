-- 0006 migration_checkpoint: the legacy migration's record of committed batches
-- (db/migrate/), a table of the schema from now on instead of one the command
-- created on first use.
--
-- One row per committed batch of one legacy source, inserted in the same
-- transaction as the batch's measurements (a batch is moved and recorded, or
-- neither). `source` names the legacy table and its columns; a resumed run
-- moves every part of its plan that no committed batch covers. `stats` holds the
-- batch's counts for the report's totals over resumed runs. `aggregated` turns
-- true once the aggregates cover the batch's range. `time_zone` and `ambiguous`
-- are how local times were read (NULL for a timestamptz column): a run that
-- reads them otherwise is refused until the earlier runs are undone.
--
-- Upgrade: a database where the command already created the table keeps it and
-- its rows; the columns it lacks are added (their order is the fresh table's).

SET client_min_messages = warning;

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
ALTER TABLE migration_checkpoint ADD COLUMN IF NOT EXISTS aggregated boolean NOT NULL DEFAULT false;
ALTER TABLE migration_checkpoint ADD COLUMN IF NOT EXISTS time_zone text;
ALTER TABLE migration_checkpoint
  ADD COLUMN IF NOT EXISTS ambiguous text CHECK (ambiguous IN ('earlier', 'later'));
