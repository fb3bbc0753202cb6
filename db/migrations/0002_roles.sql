-- 0002 roles: one database role per kind of client, each with only the rights
-- it needs, so that no service runs as the owner or a superuser.
--
--   cea_writer      can-worker: reads the metadata, writes measurements (COPY or
--                   INSERT … ON CONFLICT, RETURNING) and queues aggregate buckets;
--                   its maintenance (aggregate refresh, raw-data retention) runs
--                   through SECURITY DEFINER functions with a fixed search_path.
--   cea_api         cea-backend: reads everything the API serves, writes
--                   measurements and queues aggregate buckets.
--   cea_reader      Grafana and the monitors: reads, nothing else.
--   cea_automation  the automation service: reads, and records actuator events
--                   and setpoints.
-- The owner (the role that applies migrations, syncs the site file and runs the
-- legacy migration) owns every object and is none of these.
--
-- Roles belong to the cluster, not to the database: they are created NOLOGIN
-- when missing (which needs CREATEROLE; an owner without it gets a message
-- saying what to create). Giving them LOGIN and a password is a deployment step
-- (ops/IMPLEMENTATION_SUMMARY.md, "Database roles").

SET client_min_messages = warning;

DO $roles$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['cea_writer', 'cea_api', 'cea_reader', 'cea_automation'] LOOP
    CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    EXCEPTION
      -- created meanwhile by the migration of another database of the cluster
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role % does not exist and % may not create roles', r, current_user
          USING ERRCODE = 'insufficient_privilege',
                HINT = 'as a superuser: CREATE ROLE cea_writer NOLOGIN; CREATE ROLE cea_api NOLOGIN; '
                       'CREATE ROLE cea_reader NOLOGIN; CREATE ROLE cea_automation NOLOGIN; '
                       '(or give the owner CREATEROLE), then apply the schema again';
    END;
  END LOOP;
END
$roles$;

-- The grants, in one function so that a step which re-creates an object (a
-- continuous aggregate re-created in another time zone) grants it again. A
-- relation not there yet (while the schema is being built) is granted by the
-- call that follows its creation. Every statement is dynamic (EXECUTE): a GRANT
-- whose plan plpgsql cached crashes the TimescaleDB 2.19 backend when the
-- function runs a second time in a session.
CREATE OR REPLACE FUNCTION cea_grant_roles() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  -- metadata and history: read by every client
  FOREACH t IN ARRAY ARRAY['facility', 'zone', 'room', 'rack', 'device', 'sensor', 'measurement',
                           'measurement_hourly', 'measurement_daily', 'crop_batch', 'setpoints',
                           'actuator_events', 'cea_setting'] LOOP
    CONTINUE WHEN to_regclass(t) IS NULL;
    EXECUTE format('GRANT SELECT ON %I TO cea_reader, cea_api, cea_writer, cea_automation', t);
  END LOOP;
  -- measurements: written by the worker and the API, never updated or deleted by them
  EXECUTE 'GRANT INSERT ON measurement, measurement_agg_pending TO cea_writer, cea_api';
  -- decisions of the automation service
  EXECUTE 'GRANT INSERT ON actuator_events, setpoints TO cea_automation';
  -- maintenance: only through the SECURITY DEFINER functions, only for the worker
  EXECUTE 'REVOKE ALL ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() FROM PUBLIC';
  EXECUTE 'GRANT EXECUTE ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() TO cea_writer';
END
$$;

-- The maintenance functions run as their owner with a search_path nobody else
-- can write to: this schema, TimescaleDB's, then pg_temp (last, so a temporary
-- object never shadows a real one).
CREATE OR REPLACE FUNCTION cea_secure_definer(fn regprocedure) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %s', fn,
                 (SELECT string_agg(quote_ident(s), ', ' ORDER BY o) || ', pg_temp'
                  FROM (SELECT DISTINCT ON (s) s, o
                        FROM (VALUES (current_schema()::text, 1),
                                     ((SELECT n.nspname::text FROM pg_extension e
                                       JOIN pg_namespace n ON n.oid = e.extnamespace
                                       WHERE e.extname = 'timescaledb'), 2)) v(s, o)
                        WHERE s IS NOT NULL ORDER BY s, o) d));
END
$$;

-- schema administration: the owner's alone
REVOKE ALL ON FUNCTION cea_grant_roles(), cea_secure_definer(regprocedure) FROM PUBLIC;

SELECT cea_secure_definer('cea_refresh_aggregates()');
SELECT cea_secure_definer('cea_apply_retention()');
SELECT cea_grant_roles();
