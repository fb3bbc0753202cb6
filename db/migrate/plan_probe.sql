-- Legacy migration: which of these instant windows hold a row (a local time
-- column: a window of local times can hold instants of two windows).
--
-- Inputs:      $1 window starts, $2 window ends (timestamptz[]); the session view.
-- Writes:      nothing.
-- Idempotency: a pure query. Each probe is a range of the raw column (index).

SELECT (extract(epoch FROM s) * 1000)::bigint::text AS s
FROM unnest($1::timestamptz[], $2::timestamptz[]) AS w(s, e)
WHERE EXISTS (SELECT 1 FROM cea_legacy_src l
              WHERE l.raw >= pg_temp.cea_raw_lo(w.s) AND l.raw < pg_temp.cea_raw_hi(w.e) AND l.ts >= w.s AND l.ts < w.e)
ORDER BY w.s
