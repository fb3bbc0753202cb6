-- Legacy migration: which of these instant windows hold rows, and how many.
--
-- Inputs:      $1 window starts, $2 window ends (timestamptz[]); the session view
--              cea_legacy_src and pg_temp.cea_raw_lo/hi (source.ts).
-- Writes:      nothing.
-- Idempotency: a pure query. Each count is a range of the raw column (the
--              column in its own type: an index on it serves, index-only when
--              the table is all-visible); for a local time column the window of
--              local times that can hold the instants, then the instants exactly.
-- Returns:     the start (epoch ms) and row count of every window that holds a
--              row, in order.

SELECT (extract(epoch FROM w.s) * 1000)::bigint::text AS s, c.n::text AS n
FROM unnest($1::timestamptz[], $2::timestamptz[]) AS w(s, e)
CROSS JOIN LATERAL (
  SELECT count(*) AS n FROM cea_legacy_src l
  WHERE l.raw >= pg_temp.cea_raw_lo(w.s) AND l.raw < pg_temp.cea_raw_hi(w.e) AND l.ts >= w.s AND l.ts < w.e
) c
WHERE c.n > 0
ORDER BY w.s
