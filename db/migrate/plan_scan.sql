-- Legacy migration: the batch windows that hold rows, in one scan (the time
-- column has no index, so a loose index scan would read the table once per
-- window).
--
-- Inputs:      $1 the window length in ms; the session view cea_legacy_src.
-- Writes:      nothing.
-- Idempotency: a pure query.
-- Returns:     as plan_index.sql.

SELECT w.s::text AS s FROM (
  SELECT DISTINCT floor(extract(epoch FROM raw) * 1000 / $1::bigint)::bigint * $1::bigint AS s
  FROM cea_legacy_src WHERE raw IS NOT NULL
) w ORDER BY w.s
