-- Legacy migration: the columns of the legacy table, for detection.
--
-- Inputs:      $1 schema (NULL = the first schema of the search path that has
--              the table), $2 table.
-- Writes:      nothing.
-- Idempotency: a pure query.

SELECT c.table_schema AS schema, c.column_name AS name, c.data_type AS type
FROM information_schema.columns c
WHERE c.table_name = $2
  AND c.table_schema = coalesce($1, (SELECT n.nspname FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
                                     WHERE k.oid = to_regclass(quote_ident($2))))
ORDER BY c.ordinal_position
