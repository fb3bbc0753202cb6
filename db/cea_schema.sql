-- CEA Telemetry Platform: the whole schema in one file.
--
-- Contract:
--   * The one-file view of the schema that the numbered migrations in
--     db/migrations/ build (`cea schema apply` runs those). Applied to an empty
--     database it gives the same catalog as the migrations do, and it records
--     the migrations it covers in cea_schema_migration with their checksums
--     (tests/integration/schema-migrations.test.ts proves both).
--   * Self-contained: `psql -v ON_ERROR_STOP=1 -f db/cea_schema.sql` works on its
--     own, on the TimescaleDB Community edition and on the Apache edition; the
--     edition checks live in this file.
--   * Idempotent: applying it again changes nothing and raises no error. Every
--     statement is IF NOT EXISTS or guarded by a catalog check.
--   * It never drops or rewrites data. A schema change is a new migration file
--     plus the same change here, in the place where it reads best.
--   * Community edition: compression (segment by sensor_id, order by time DESC,
--     policy at 90 days) and continuous aggregates measurement_hourly/daily with
--     refresh policies and real-time aggregation.
--     Apache edition: measurement_hourly/daily are ordinary tables with the same
--     columns, kept current by cea_refresh_aggregates() from the buckets queued
--     in measurement_agg_pending by the platform's writers.

SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- ---------------------------------------------------------------- metadata

CREATE TABLE IF NOT EXISTS facility (
  facility_id  integer PRIMARY KEY,
  name         text NOT NULL UNIQUE CHECK (name <> ''),
  timezone     text NOT NULL DEFAULT 'UTC',
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS zone (
  zone_id      integer PRIMARY KEY,
  facility_id  integer NOT NULL REFERENCES facility (facility_id),
  name         text NOT NULL CHECK (name <> ''),
  UNIQUE (facility_id, name),
  -- target of room's composite key: a room's zone is in the room's facility
  UNIQUE (zone_id, facility_id)
);

CREATE TABLE IF NOT EXISTS room (
  room_id      integer PRIMARY KEY,
  facility_id  integer NOT NULL REFERENCES facility (facility_id),
  zone_id      integer,
  name         text NOT NULL CHECK (name <> ''),
  target_vpd   double precision CHECK (target_vpd IS NULL OR target_vpd > 0),
  target_temp  double precision,
  UNIQUE (facility_id, name),
  UNIQUE (room_id, facility_id),
  FOREIGN KEY (zone_id, facility_id) REFERENCES zone (zone_id, facility_id)
);

CREATE TABLE IF NOT EXISTS rack (
  rack_id      integer PRIMARY KEY,
  room_id      integer NOT NULL REFERENCES room (room_id),
  name         text NOT NULL CHECK (name <> ''),
  UNIQUE (room_id, name),
  UNIQUE (rack_id, room_id)
);

-- A device always knows its room; its rack is optional but, when given, must be
-- a rack of that same room (composite key).
CREATE TABLE IF NOT EXISTS device (
  device_id      integer PRIMARY KEY,
  room_id        integer NOT NULL REFERENCES room (room_id),
  rack_id        integer,
  name           text NOT NULL UNIQUE CHECK (name <> ''),
  device_type    text NOT NULL CHECK (device_type <> ''),
  node_id        integer UNIQUE CHECK (node_id IS NULL OR node_id >= 0),
  ip_address     inet,
  serial_number  text UNIQUE,
  FOREIGN KEY (rack_id, room_id) REFERENCES rack (rack_id, room_id)
);

CREATE TABLE IF NOT EXISTS sensor (
  sensor_id           integer PRIMARY KEY,
  device_id           integer NOT NULL REFERENCES device (device_id),
  name                text NOT NULL UNIQUE CHECK (name <> ''),
  unit                text NOT NULL,
  data_type           text NOT NULL DEFAULT 'float' CHECK (data_type IN ('float', 'integer', 'boolean')),
  channel             integer NOT NULL CHECK (channel >= 0),
  calibration_offset  double precision NOT NULL DEFAULT 0,
  UNIQUE (device_id, channel)
);
CREATE INDEX IF NOT EXISTS sensor_device_idx ON sensor (device_id);
CREATE INDEX IF NOT EXISTS device_room_idx ON device (room_id);

-- ---------------------------------------------------------------- time series

CREATE TABLE IF NOT EXISTS measurement (
  time       timestamptz NOT NULL,
  sensor_id  integer NOT NULL REFERENCES sensor (sensor_id),
  value      double precision NOT NULL,
  status     text
);

-- One chunk per day: 50 sensors at 1 Hz is 4.3M rows/day, about 0.4 GB with
-- indexes, which keeps the chunk being written (and its index) in memory on a
-- 4 GB appliance; see db/REQUIREMENTS.md.
SELECT create_hypertable('measurement', 'time', chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => true, create_default_indexes => false);

-- The idempotency key, (sensor_id, time): a redelivered or retried reading
-- writes nothing new. Ordered DESC because history reads newest first, so this
-- one index serves both and ingest maintains one index less.
CREATE UNIQUE INDEX IF NOT EXISTS measurement_sensor_time_key ON measurement (sensor_id, time DESC);
-- No index on time alone: every index costs ingest (a time index took about a
-- third of the insert time in our measurements), and every query the platform
-- makes names its sensors, so "newest readings" run per sensor over the key
-- above (see db/REQUIREMENTS.md). An index left by an earlier version goes.
DROP INDEX IF EXISTS measurement_time_idx;

-- ---------------------------------------------------------------- optional tables

CREATE TABLE IF NOT EXISTS crop_batch (
  crop_batch_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  room_id        integer NOT NULL REFERENCES room (room_id),
  name           text NOT NULL CHECK (name <> ''),
  cultivar       text,
  started_at     timestamptz NOT NULL,
  ended_at       timestamptz,
  CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX IF NOT EXISTS crop_batch_room_idx ON crop_batch (room_id, started_at DESC);

-- Room-level setpoints; the row with the latest effective_from <= now() is the
-- one in force for (room, quantity).
CREATE TABLE IF NOT EXISTS setpoints (
  setpoint_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  room_id         integer NOT NULL REFERENCES room (room_id),
  quantity        text NOT NULL CHECK (quantity <> ''),
  target          double precision NOT NULL,
  tolerance       double precision CHECK (tolerance IS NULL OR tolerance >= 0),
  effective_from  timestamptz NOT NULL DEFAULT now(),
  created_by      text,
  UNIQUE (room_id, quantity, effective_from)
);

CREATE TABLE IF NOT EXISTS actuator_events (
  event_id    bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  time        timestamptz NOT NULL DEFAULT now(),
  device_id   integer NOT NULL REFERENCES device (device_id),
  actuator    text NOT NULL CHECK (actuator <> ''),
  action      text NOT NULL CHECK (action <> ''),
  value       double precision,
  reason      text,
  setpoint_id bigint REFERENCES setpoints (setpoint_id)
);
CREATE INDEX IF NOT EXISTS actuator_events_device_time_idx ON actuator_events (device_id, time DESC);

-- ---------------------------------------------------------------- platform state

-- Settings the platform reads at run time (raw-data retention, ...).
CREATE TABLE IF NOT EXISTS cea_setting (
  key    text PRIMARY KEY,
  value  text
);
-- NULL = keep raw data forever (the default).
INSERT INTO cea_setting (key, value) VALUES ('raw_retention', NULL) ON CONFLICT (key) DO NOTHING;

-- Hour buckets touched by the platform's writers since the last aggregate
-- refresh (Apache edition). No unique key on purpose: a writer's mark commits
-- with its rows, and the refresher deletes only marks it can see, so a mark is
-- never lost to a concurrent refresh.
CREATE TABLE IF NOT EXISTS measurement_agg_pending (
  sensor_id  integer NOT NULL,
  bucket     timestamptz NOT NULL
);

-- ---------------------------------------------------------------- edition-specific

-- 'timescale' = Community edition (TSL); 'apache' = Apache edition.
CREATE OR REPLACE FUNCTION cea_timescale_edition() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN current_setting('timescaledb.license', true) = 'timescale'
              THEN 'community' ELSE 'apache' END
$$;

DO $edition$
DECLARE
  community boolean := cea_timescale_edition() = 'community';
  kind text;
BEGIN
  IF community THEN
    -- compression of chunks older than 90 days
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_name = 'measurement' AND compression_enabled) THEN
      ALTER TABLE measurement SET (timescaledb.compress,
                                   timescaledb.compress_segmentby = 'sensor_id',
                                   timescaledb.compress_orderby = 'time DESC');
    END IF;
    PERFORM add_compression_policy('measurement', INTERVAL '90 days', if_not_exists => true);

    -- continuous aggregates; a table left by an earlier Apache-edition install
    -- under the same name is kept (renamed), never dropped.
    FOREACH kind IN ARRAY ARRAY['hourly', 'daily'] LOOP
      IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relname = 'measurement_' || kind AND c.relkind = 'r') THEN
        EXECUTE format('ALTER TABLE %I RENAME TO %I', 'measurement_' || kind,
                       'measurement_' || kind || '_apache_' || to_char(now(), 'YYYYMMDDHH24MISS'));
      END IF;
      IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                     WHERE view_name = 'measurement_' || kind) THEN
        EXECUTE format($cagg$
          CREATE MATERIALIZED VIEW %I
          WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
          SELECT time_bucket(%L::interval, time) AS bucket,
                 sensor_id,
                 min(value) AS min_value,
                 max(value) AS max_value,
                 avg(value) AS avg_value,
                 count(*)   AS sample_count
          FROM measurement
          GROUP BY 1, 2
          WITH NO DATA $cagg$,
          'measurement_' || kind, CASE kind WHEN 'hourly' THEN '1 hour' ELSE '1 day' END);
      END IF;
    END LOOP;
    -- Real-time aggregation covers everything newer than the last refresh, so
    -- the policies only bound how much the real-time part has to compute.
    PERFORM add_continuous_aggregate_policy('measurement_hourly',
      start_offset => NULL, end_offset => INTERVAL '1 hour',
      schedule_interval => INTERVAL '15 minutes', if_not_exists => true);
    PERFORM add_continuous_aggregate_policy('measurement_daily',
      start_offset => NULL, end_offset => INTERVAL '1 day',
      schedule_interval => INTERVAL '1 hour', if_not_exists => true);
  ELSE
    CREATE TABLE IF NOT EXISTS measurement_hourly (
      bucket        timestamptz NOT NULL,
      sensor_id     integer NOT NULL,
      min_value     double precision NOT NULL,
      max_value     double precision NOT NULL,
      avg_value     double precision NOT NULL,
      sample_count  bigint NOT NULL,
      PRIMARY KEY (sensor_id, bucket)
    );
    CREATE TABLE IF NOT EXISTS measurement_daily (LIKE measurement_hourly INCLUDING ALL);
  END IF;
END
$edition$;

-- Recompute the aggregate buckets queued since the last run (Apache edition);
-- returns the number of hourly buckets recomputed. On the Community edition the
-- continuous aggregates do this work, so the queue is just cleared.
-- Concurrent callers: one works, the others return 0 at once.
CREATE OR REPLACE FUNCTION cea_refresh_aggregates() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('cea_refresh_aggregates')) THEN
    RETURN 0;
  END IF;
  IF cea_timescale_edition() = 'community' THEN
    DELETE FROM measurement_agg_pending;
    RETURN 0;
  END IF;

  CREATE TEMP TABLE IF NOT EXISTS cea_touched (sensor_id integer, bucket timestamptz) ON COMMIT DROP;
  WITH taken AS (DELETE FROM measurement_agg_pending RETURNING sensor_id, bucket)
  INSERT INTO cea_touched SELECT DISTINCT sensor_id, bucket FROM taken;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n = 0 THEN
    RETURN 0;
  END IF;

  -- hourly: recompute each touched hour from the raw rows
  EXECUTE $q$
    INSERT INTO measurement_hourly AS h (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
    SELECT t.bucket, t.sensor_id, min(m.value), max(m.value), avg(m.value), count(*)
    FROM cea_touched t
    JOIN measurement m ON m.sensor_id = t.sensor_id
                      AND m.time >= t.bucket AND m.time < t.bucket + INTERVAL '1 hour'
    GROUP BY t.bucket, t.sensor_id
    ON CONFLICT (sensor_id, bucket) DO UPDATE
      SET min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
          avg_value = EXCLUDED.avg_value, sample_count = EXCLUDED.sample_count
  $q$;
  -- daily: recompute each touched day from the raw rows (exact avg, not an
  -- average of averages)
  EXECUTE $q$
    INSERT INTO measurement_daily AS d (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
    SELECT t.day, t.sensor_id, min(m.value), max(m.value), avg(m.value), count(*)
    FROM (SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 day', bucket) AS day FROM cea_touched) t
    JOIN measurement m ON m.sensor_id = t.sensor_id
                      AND m.time >= t.day AND m.time < t.day + INTERVAL '1 day'
    GROUP BY t.day, t.sensor_id
    ON CONFLICT (sensor_id, bucket) DO UPDATE
      SET min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
          avg_value = EXCLUDED.avg_value, sample_count = EXCLUDED.sample_count
  $q$;
  DROP TABLE cea_touched;
  RETURN n;
END
$$;

-- Raw-data retention (off unless cea_setting.raw_retention is set). Community:
-- a retention policy; Apache: cea_apply_retention() drops old chunks when the
-- platform's maintenance loop calls it.
CREATE OR REPLACE FUNCTION cea_apply_retention() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  keep interval := (SELECT value::interval FROM cea_setting WHERE key = 'raw_retention');
  dropped integer;
BEGIN
  IF keep IS NULL THEN
    RETURN 0;
  END IF;
  SELECT count(*) INTO dropped FROM drop_chunks('measurement', older_than => keep);
  RETURN dropped;
END
$$;

-- ---------------------------------------------------------------- roles

-- One role per kind of client, each with only the rights it needs (created
-- NOLOGIN when missing; LOGIN and passwords are a deployment step):
-- cea_writer (can-worker, its maintenance only through the SECURITY DEFINER
-- functions), cea_api (cea-backend), cea_reader (Grafana, monitors),
-- cea_automation (reads; records actuator events and setpoints). The owner
-- owns every object and is none of these.

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
-- continuous aggregate re-created in another time zone) grants it again.
CREATE OR REPLACE FUNCTION cea_grant_roles() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  -- metadata and history: read by every client
  FOREACH t IN ARRAY ARRAY['facility', 'zone', 'room', 'rack', 'device', 'sensor', 'measurement',
                           'measurement_hourly', 'measurement_daily', 'crop_batch', 'setpoints',
                           'actuator_events', 'cea_setting'] LOOP
    EXECUTE format('GRANT SELECT ON %I TO cea_reader, cea_api, cea_writer, cea_automation', t);
  END LOOP;
  -- measurements: written by the worker and the API, never updated or deleted by them
  GRANT INSERT ON measurement, measurement_agg_pending TO cea_writer, cea_api;
  -- decisions of the automation service
  GRANT INSERT ON actuator_events, setpoints TO cea_automation;
  -- maintenance: only through the SECURITY DEFINER functions, only for the worker
  REVOKE ALL ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() TO cea_writer;
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

-- ---------------------------------------------------------------- migrations covered

CREATE TABLE IF NOT EXISTS cea_schema_migration (
  version     integer PRIMARY KEY,
  name        text NOT NULL,
  checksum    text NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT now()
);
-- The migrations this file equals (sha256 of each file in db/migrations/).
INSERT INTO cea_schema_migration (version, name, checksum) VALUES
  (1, 'baseline', '20ba9942533f0647550b6584eb8faebf15978c575bf2c7a2218562dbbc61441e'),
  (2, 'roles', 'a49087cda442f3ad38f9a8a5576143d7a6ab35e15e5591ce2065e0d53d0150ee')
ON CONFLICT (version) DO NOTHING;
