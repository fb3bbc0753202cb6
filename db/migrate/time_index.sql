-- Legacy migration: does an index lead with the time column? Without one every
-- batch scans the whole legacy table, so the command warns.
--
-- Inputs:      $1 schema, $2 table, $3 time column.
-- Writes:      nothing.
-- Idempotency: a pure query. Only a plain btree on the column itself counts
--              (an expression or partial index does not serve the batches).

SELECT EXISTS (
  SELECT 1
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_am am ON am.oid = ic.relam
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
  WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3
    AND am.amname = 'btree' AND i.indpred IS NULL AND i.indisvalid
) AS indexed
