-- Legacy migration: the legacy rows of some instant ranges, per node (the
-- ranges far from the bulk of the data, reported before anything is written).
--
-- Inputs:      $1 range starts, $2 range ends (timestamptz[]); the session view.
-- Writes:      nothing.
-- Idempotency: a pure query.

SELECT w.i::int AS range, l.node_id, count(*)::bigint AS rows
FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS w(s, e, i)
JOIN cea_legacy_src l ON l.raw >= pg_temp.cea_raw_lo(w.s) AND l.raw < pg_temp.cea_raw_hi(w.e) AND l.ts >= w.s AND l.ts < w.e
GROUP BY 1, 2
ORDER BY 1, 2 NULLS LAST
