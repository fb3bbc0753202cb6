-- Legacy migration: refresh a continuous aggregate over the migrated range
-- (Community edition). Must run outside a transaction block.
--
-- Inputs:      $1 the aggregate (measurement_hourly or measurement_daily),
--              $2, $3 the range, widened by the caller to whole days.
-- Writes:      the aggregate's materialization for that range.
-- Idempotency: refreshing again recomputes the same buckets.

CALL refresh_continuous_aggregate($1::regclass, $2::timestamptz, $3::timestamptz)
