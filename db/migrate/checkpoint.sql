-- Legacy migration: the checkpoint table.
--
-- Inputs:      none.
-- Writes:      creates table migration_checkpoint if it does not exist. One row
--              per committed batch, inserted in the same transaction as the
--              batch's measurements, so a batch is either moved and recorded or
--              neither. `source` names the legacy table and its columns (see
--              db/migrate/source.ts); a resumed run starts at max(batch_end).
--              `stats` holds the batch's counts (per-sensor value kinds,
--              conflicts) so the report can total them over resumed runs.
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
