-- Legacy migration: the DDL of the session's view over the legacy table.
--
-- Inputs:      $1 schema, $2 table, $3 time column, $4 true when the time column
--              is timestamptz (else it is read as local time in zone $8),
--              $5 node column, $6 data column, $7 message-type column or NULL.
-- Writes:      nothing; returns the text of a CREATE TEMP VIEW cea_legacy_src
--              (ts, node_id, data, message_type) that the caller executes. The
--              view is session-local and only reads the legacy table. Every
--              identifier goes through format('%I').
-- Idempotency: CREATE OR REPLACE; the legacy table is never written.
--
-- With a timestamptz column the view exposes it unchanged, so the batches'
-- range predicates reach an index on it.

SELECT format(
  'CREATE OR REPLACE TEMP VIEW cea_legacy_src AS SELECT %s AS ts, %I::integer AS node_id, %I::jsonb AS data, %s AS message_type FROM %I.%I',
  CASE WHEN $4::boolean THEN format('%I', $3::text) ELSE format('(%I AT TIME ZONE %L)', $3::text, $8::text) END,
  $5::text,
  $6::text,
  CASE WHEN $7::text IS NULL THEN 'NULL::text' ELSE format('%I::text', $7::text) END,
  $1::text,
  $2::text
) AS ddl
