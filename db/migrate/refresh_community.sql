-- Legacy migration: refresh a continuous aggregate over the migrated range
-- (Community edition). Must run outside a transaction block.
--
-- Inputs:      $1 the aggregate (measurement_hourly or measurement_daily),
--              $2, $3 the range.
-- Writes:      the aggregate's materialization for that range, through the
--              schema's cea_refresh_aggregate(): widened to whole buckets (local
--              days for measurement_daily), never past the start of the current
--              bucket, never before the raw-data retention horizon.
-- Idempotency: refreshing again recomputes the same buckets.

CALL cea_refresh_aggregate($1, $2::timestamptz, $3::timestamptz)
