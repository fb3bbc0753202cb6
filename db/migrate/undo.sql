-- Legacy migration: undo the runs of one source (--undo).
--
-- Inputs:      $1 source; the session mapping cea_legacy_map.
-- Writes:      deletes the measurement rows with status 'migrated' of the
--              site's mapped sensors inside the range of the source's
--              checkpoints, then the checkpoints. Rows of live writers
--              (any other status) are never touched. In the caller's
--              transaction, with the aggregates recomputed over the range.
-- Idempotency: a second undo finds no checkpoint and deletes nothing.
-- Returns:     rows deleted, checkpoints deleted, the range.

WITH range AS (
  SELECT min(batch_start) AS s, max(batch_end) AS e FROM migration_checkpoint WHERE source = $1
), gone AS (
  DELETE FROM measurement m USING range r
  WHERE m.time >= r.s AND m.time < r.e AND m.status = 'migrated'
    AND m.sensor_id IN (SELECT sensor_id FROM cea_legacy_map)
  RETURNING 1
), cps AS (
  DELETE FROM migration_checkpoint WHERE source = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM gone)::bigint AS rows, (SELECT count(*) FROM cps)::bigint AS checkpoints,
       to_char(r.s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "from",
       to_char(r.e AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "to"
FROM range r
