-- Legacy migration: the facility-local days (cea_daily_bucket, the days of the
-- daily aggregates) that the planned windows touch, for the verification.
--
-- Inputs:      $1 window starts, $2 window ends (timestamptz[]).
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     each day's start and end (23 to 25 hours later at DST changes), in order.

SELECT to_char(d AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS start,
       to_char(cea_next_day(d, cea_daily_timezone()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "end"
FROM (
  SELECT DISTINCT cea_daily_bucket(t) AS d
  FROM unnest($1::timestamptz[], $2::timestamptz[]) AS w(s, e)
  CROSS JOIN LATERAL (SELECT generate_series(w.s, w.e, INTERVAL '1 hour') AS t
                      UNION ALL SELECT w.e - INTERVAL '1 microsecond') p
  WHERE p.t < w.e
) days
ORDER BY d
