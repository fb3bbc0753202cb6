-- Legacy migration: the aggregate tables over the migrated range (Apache
-- edition), once at the end of a run instead of a refresh after every batch.
--
-- Inputs:      $1, $2 the range [start, end).
-- Writes:      measurement_hourly and measurement_daily: every (sensor, hour)
--              and (sensor, local day) bucket of the range, widened to whole
--              days of the facility's time zone, recomputed from the raw rows
--              in one scan (set-based, no queue; the schema's
--              cea_recompute_aggregates()). Buckets queued by live writers in
--              measurement_agg_pending stay queued; the platform's refresh
--              recomputes them again from raw rows.
-- Idempotency: recomputes the same buckets from the same rows.

SELECT hourly, daily FROM cea_recompute_aggregates($1::timestamptz, $2::timestamptz)
