-- Legacy migration: the windows that hold rows and their row counts, in one
-- scan (the time column has no index, so a loose index scan or a count per
-- window would read the table once per window). The windows are of the
-- instant (ts), so for a local time column too they are exact.
--
-- Inputs:      $1 the window length in ms; the session view cea_legacy_src.
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     the start (epoch ms) of every instant window that holds a row,
--              in order, and its rows (n).

SELECT w.s::text AS s, w.n::text AS n FROM (
  SELECT floor(extract(epoch FROM ts) * 1000 / $1::bigint)::bigint * $1::bigint AS s, count(*) AS n
  FROM cea_legacy_src WHERE ts IS NOT NULL
  GROUP BY 1
) w ORDER BY w.s
