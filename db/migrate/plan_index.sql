-- Legacy migration: the batch windows that hold rows, found by a loose index
-- scan of the time column (each step is one probe of its index for the first
-- row at or after the next window), so the cost follows the windows that hold
-- data, not the calendar between the first and the last row.
--
-- Inputs:      $1 the window length in ms; the session view cea_legacy_src and
--              pg_temp.cea_raw_of (source.ts).
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     the start of every window of the raw column (epoch ms, the
--              column's own value read as UTC) that holds a row, in order.

WITH RECURSIVE w(s) AS (
  SELECT floor(extract(epoch FROM (SELECT min(raw) FROM cea_legacy_src)) * 1000 / $1::bigint)::bigint * $1::bigint
  UNION ALL
  SELECT (SELECT floor(extract(epoch FROM min(l.raw)) * 1000 / $1::bigint)::bigint * $1::bigint
          FROM cea_legacy_src l WHERE l.raw >= pg_temp.cea_raw_of(w.s + $1::bigint))
  FROM w WHERE w.s IS NOT NULL
)
SELECT w.s::text AS s FROM w WHERE w.s IS NOT NULL ORDER BY w.s
