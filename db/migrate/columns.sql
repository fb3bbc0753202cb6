-- Legacy migration: the legacy table and its columns, for detection.
--
-- Inputs:      $1 schema (NULL = the first schema of the search path that has
--              the table, else the only schema that has it), $2 table.
-- Writes:      nothing.
-- Idempotency: a pure query.
--
-- Read from pg_catalog, not information_schema: information_schema hides the
-- columns of a table the role may not read, and "table not found" would then
-- hide the real cause (a missing privilege), which is returned here instead.

WITH candidates AS (
  SELECT c.oid, n.oid AS nsp, n.nspname,
         coalesce(array_position(current_schemas(true), n.nspname::text), 1000) AS rank
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND ($1::text IS NULL OR n.nspname = $1::text)
), chosen AS (
  SELECT * FROM candidates
  WHERE $1::text IS NOT NULL OR rank < 1000 OR (SELECT count(*) FROM candidates) = 1
  ORDER BY rank LIMIT 1
)
SELECT k.nspname AS schema, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       has_schema_privilege(k.nsp, 'USAGE') AS usage,
       has_table_privilege(k.oid, 'SELECT') AS can_select,
       current_user AS role
FROM chosen k JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
