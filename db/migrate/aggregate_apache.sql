-- Legacy migration: the aggregate tables over the migrated range (Apache
-- edition), once at the end of a run instead of a refresh after every batch.
--
-- Inputs:      $1, $2 the range [start, end), whole UTC days.
-- Writes:      measurement_hourly and measurement_daily: every (sensor, hour)
--              and (sensor, day) bucket of the range recomputed from the raw
--              rows in one scan of measurement (set-based, no queue). Buckets
--              queued by live writers in measurement_agg_pending stay queued;
--              the platform's refresh recomputes them again from raw rows.
-- Idempotency: recomputes the same buckets from the same rows.
--
-- The daily average is the sum of the hourly sums over the sum of the counts:
-- the same value as avg() over the raw rows up to floating-point rounding.

WITH hourly AS MATERIALIZED (
  SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, sensor_id,
         min(value) AS lo, max(value) AS hi, sum(value) AS total, count(*) AS n
  FROM measurement
  WHERE time >= $1::timestamptz AND time < $2::timestamptz
  GROUP BY 1, 2
), h AS (
  INSERT INTO measurement_hourly AS a (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT bucket, sensor_id, lo, hi, total / n, n FROM hourly
  ON CONFLICT (sensor_id, bucket) DO UPDATE
    SET min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
        avg_value = EXCLUDED.avg_value, sample_count = EXCLUDED.sample_count
  RETURNING 1
), d AS (
  INSERT INTO measurement_daily AS a (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT time_bucket(INTERVAL '1 day', bucket), sensor_id, min(lo), max(hi), sum(total) / sum(n), sum(n)
  FROM hourly GROUP BY 1, 2
  ON CONFLICT (sensor_id, bucket) DO UPDATE
    SET min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
        avg_value = EXCLUDED.avg_value, sample_count = EXCLUDED.sample_count
  RETURNING 1
)
SELECT (SELECT count(*) FROM h)::bigint AS hourly, (SELECT count(*) FROM d)::bigint AS daily
