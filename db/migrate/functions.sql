-- Legacy migration: value classification, shared by the batch move, the dry run
-- and the verification so that all three count the same values.
--
-- Inputs:      none (run once per session before the other db/migrate/*.sql).
-- Writes:      session-local functions in pg_temp and the temp table
--              cea_legacy_map; nothing persistent.
-- Idempotency: CREATE OR REPLACE / DROP + CREATE of temp objects; safe to run
--              any number of times per session.
--
-- cea_legacy_kind(j): number | numeric_string | out_of_range (a number
--   double precision cannot hold) | null | boolean | object | array |
--   non_numeric_string. A string is numeric when, trimmed, it is a plain
--   decimal number ("23.40", " 7 ", "-1e3"); the regex runs before any cast,
--   so a bad string can never abort a batch. NaN/Infinity strings are not
--   numbers here.
-- cea_legacy_value(j, kind): the double precision value of a number or
--   numeric string (NULL for every other kind).
--
-- Each is one IMMUTABLE SQL expression whose argument is a plain column, so
-- the planner inlines it into the calling query (no per-value function call).

CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_kind(j jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE jsonb_typeof(j)
    WHEN 'number' THEN
      CASE WHEN abs(j::numeric) <= 1.7976931348623157e308 AND (abs(j::numeric) >= 2.3e-308 OR j::numeric = 0)
           THEN 'number' ELSE 'out_of_range' END
    WHEN 'string' THEN
      CASE WHEN length(j #>> '{}') > 400
             OR btrim(j #>> '{}', E' \t\r\n') !~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$'
           THEN 'non_numeric_string'
           WHEN abs(btrim(j #>> '{}', E' \t\r\n')::numeric) <= 1.7976931348623157e308
             AND (abs(btrim(j #>> '{}', E' \t\r\n')::numeric) >= 2.3e-308 OR btrim(j #>> '{}', E' \t\r\n')::numeric = 0)
           THEN 'numeric_string'
           ELSE 'out_of_range' END
    ELSE jsonb_typeof(j)
  END
$$;

CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_value(j jsonb, kind text) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE kind
    WHEN 'number' THEN j::float8
    WHEN 'numeric_string' THEN btrim(j #>> '{}', E' \t\r\n')::float8
  END
$$;

-- The (node_id, legacy key) -> sensor mapping of this session, filled from the
-- site file by db/migrate/map.sql; made afresh on every run.
DROP TABLE IF EXISTS pg_temp.cea_legacy_map;
CREATE TEMP TABLE cea_legacy_map (
  node_id    bigint NOT NULL,
  name       text NOT NULL,
  sensor_id  integer NOT NULL,
  off        double precision NOT NULL,
  PRIMARY KEY (node_id, name)
);
