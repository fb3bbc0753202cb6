-- Legacy migration: value classification, shared by the batch move, the dry run
-- and the verification so that all three count the same values.
--
-- Inputs:      none (run once per session before the other db/migrate/*.sql).
-- Writes:      session-local functions in pg_temp and the temp table
--              cea_legacy_map; nothing persistent.
-- Idempotency: CREATE OR REPLACE / DROP + CREATE of temp objects; safe to run
--              any number of times per session.
--
-- Both are single-expression IMMUTABLE SQL functions, so the planner inlines
-- them into the calling query (no per-value function call).
--
-- cea_legacy_numeric(j): the number a legacy JSON value stands for, or NULL:
--   JSON numbers as they are; strings that are a plain decimal number once
--   trimmed ("23.40", " 7 ", "-1e3"); the regex runs before the cast, so a bad
--   string can never abort a batch. NaN/Infinity strings are not numbers here.
-- cea_legacy_kind(j, n): number | numeric_string | out_of_range (a number
--   double precision cannot hold) | null | boolean | object | array |
--   non_numeric_string.

CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_numeric(j jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE jsonb_typeof(j)
    WHEN 'number' THEN j::numeric
    WHEN 'string' THEN
      CASE WHEN length(j #>> '{}') <= 400
             AND btrim(j #>> '{}', E' \t\r\n') ~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$'
           THEN btrim(j #>> '{}', E' \t\r\n')::numeric
      END
  END
$$;

CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_in_range(n numeric) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT n = 0 OR abs(n) BETWEEN 2.3e-308 AND 1.7976931348623157e308
$$;

CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_kind(j jsonb, n numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN n IS NOT NULL AND NOT pg_temp.cea_legacy_in_range(n) THEN 'out_of_range'
    WHEN n IS NOT NULL AND jsonb_typeof(j) = 'number' THEN 'number'
    WHEN n IS NOT NULL THEN 'numeric_string'
    WHEN jsonb_typeof(j) = 'string' THEN 'non_numeric_string'
    ELSE jsonb_typeof(j)
  END
$$;

-- The (node_id, legacy key) -> sensor mapping of this session, filled from the
-- site file by db/migrate/map.sql; made afresh on every run.
DROP TABLE IF EXISTS pg_temp.cea_legacy_map;
CREATE TEMP TABLE cea_legacy_map (
  node_id    integer NOT NULL,
  name       text NOT NULL,
  sensor_id  integer NOT NULL,
  off        double precision NOT NULL,
  PRIMARY KEY (node_id, name)
);
