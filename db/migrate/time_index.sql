-- Legacy migration: does an index lead with the time column? Without one every
-- batch scans the whole legacy table, so the command warns.
--
-- Inputs:      $1 schema, $2 table, $3 time column.
-- Writes:      nothing.
-- Idempotency: a pure query.

SELECT EXISTS (
  SELECT 1
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
  WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3
) AS indexed
