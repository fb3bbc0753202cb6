-- Legacy migration: the legacy time zone around the data of a time column
-- without time zone.
--
-- Inputs:      $1 zone, $2 lo, $3 hi: the first and last local time of the data.
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     the smallest and largest UTC offset of the zone over the range
--              (sampled daily; the range of local times an instant range can
--              come from), and the UTC days in which the offset changes (a DST
--              change or a change of the zone's rules): only local times near
--              those can be ambiguous or nonexistent.

WITH days AS (
  SELECT d, ((d AT TIME ZONE 'UTC') AT TIME ZONE $1::text) - d AS off
  FROM generate_series(date_trunc('day', $2::timestamp) - INTERVAL '2 days',
                       date_trunc('day', $3::timestamp) + INTERVAL '2 days', INTERVAL '1 day') AS d
), changes AS (
  SELECT d, off, lead(off) OVER (ORDER BY d) AS next FROM days
)
SELECT extract(epoch FROM min(off))::int AS min_off_s,
       extract(epoch FROM max(off))::int AS max_off_s,
       coalesce(array_agg(to_char(d, 'YYYY-MM-DD')) FILTER (WHERE next IS NOT NULL AND next <> off), '{}') AS change_days
FROM changes
