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
--   * measurement_hourly buckets are UTC hours, measurement_daily buckets the
--     local days of the facility's time zone (cea_setting daily_timezone, set by
--     `cea site sync`); readings with status out_of_range are left out of both.
--   * Each kind of client has its own role with only the rights it needs
--     (cea_writer, cea_api, cea_reader, cea_automation; see "roles" below).

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

-- ---------------------------------------------------------------- sensor kinds

-- What each sensor measures (migration 0004): its kind names a quantity and
-- the unit readings of that kind are stored in, so the dashboards, the API and
-- the alert conditions select sensors by kind, never by a name pattern. The
-- vocabulary is the platform's (db/kinds.ts holds the same list); the site file
-- gives each sensor its kind. expected_interval_s: how often the sensor reports
-- (site file, else its CAN message's cycle time; NULL = CEA_SENSOR_INTERVAL_S),
-- for the silent-sensor alert. room_band: the band a room's readings of a kind
-- should stay in, and how long they may all be outside it before an alert.
CREATE TABLE IF NOT EXISTS sensor_kind (
  kind         text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
  quantity     text NOT NULL CHECK (quantity <> ''),
  unit         text NOT NULL,
  description  text NOT NULL
);
INSERT INTO sensor_kind (kind, quantity, unit, description) VALUES
  ('air_temperature', 'temperature', '°C', 'dry-bulb air temperature'),
  ('wet_bulb_temperature', 'temperature', '°C', 'wet-bulb temperature'),
  ('dew_point', 'temperature', '°C', 'dew point of the air'),
  ('leaf_temperature', 'temperature', '°C', 'leaf (canopy) surface temperature'),
  ('substrate_temperature', 'temperature', '°C', 'root-zone substrate temperature'),
  ('relative_humidity', 'relative humidity', '%', 'relative humidity of the air'),
  ('co2', 'CO2 concentration', 'ppm', 'CO2 in the air'),
  ('air_vpd', 'vapour pressure deficit', 'kPa', 'vapour pressure deficit of the air'),
  ('leaf_vpd', 'vapour pressure deficit', 'kPa', 'vapour pressure deficit between leaf and air'),
  ('par', 'photosynthetic photon flux density', 'µmol/m²/s', 'PAR light at the canopy (PPFD)'),
  ('substrate_moisture', 'volumetric water content', '%', 'water content of the substrate'),
  ('wind_speed', 'wind speed', 'm/s', 'outside wind speed'),
  ('air_pressure', 'air pressure', 'hPa', 'barometric pressure'),
  ('state', 'on/off state', '', 'an output or status flag: 1 = on, 0 = off')
ON CONFLICT (kind) DO NOTHING;

ALTER TABLE sensor
  ADD COLUMN IF NOT EXISTS kind text REFERENCES sensor_kind (kind),
  ADD COLUMN IF NOT EXISTS expected_interval_s double precision CHECK (expected_interval_s > 0);
CREATE INDEX IF NOT EXISTS sensor_kind_idx ON sensor (kind);

-- Sensors synced before kinds existed follow the legacy naming (quantity +
-- room suffix); `cea site sync` sets every kind the site file names.
UPDATE sensor SET kind = CASE
    WHEN name ~ '^dry_bulb_' THEN 'air_temperature'
    WHEN name ~ '^wet_bulb_' THEN 'wet_bulb_temperature'
    WHEN name ~ '^dew_point_' THEN 'dew_point'
    WHEN name ~ '^leaf_temp_' THEN 'leaf_temperature'
    WHEN name ~ '^substrate_temp_' THEN 'substrate_temperature'
    WHEN name ~ '^rh_' THEN 'relative_humidity'
    WHEN name ~ '^co2_' THEN 'co2'
    WHEN name ~ '^vpd_' THEN 'air_vpd'
    WHEN name ~ '^par_' THEN 'par'
    WHEN name ~ '^substrate_moisture_' THEN 'substrate_moisture'
    WHEN name ~ '^wind_speed_' THEN 'wind_speed'
    WHEN name ~ '^pressure_' THEN 'air_pressure'
  END
WHERE kind IS NULL;

CREATE TABLE IF NOT EXISTS room_band (
  room_id    integer NOT NULL REFERENCES room (room_id),
  kind       text NOT NULL REFERENCES sensor_kind (kind),
  min_value  double precision,
  max_value  double precision,
  -- every reading outside the band for this long raises an alert
  for_s      integer NOT NULL CHECK (for_s > 0),
  PRIMARY KEY (room_id, kind),
  CHECK (min_value IS NOT NULL OR max_value IS NOT NULL),
  CHECK (min_value IS NULL OR max_value IS NULL OR min_value < max_value)
);

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

-- Room-level setpoints of the automation service (migration 0005 added period
-- and the quantity check): the row with the latest effective_from <= now() is
-- the one in force for (room, quantity, period); the room's lights-on schedule
-- picks day or night, and a day/night row beats an `any` row. Quantities are
-- named like the sensor kinds the controller reads.
CREATE TABLE IF NOT EXISTS setpoints (
  setpoint_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  room_id         integer NOT NULL REFERENCES room (room_id),
  quantity        text NOT NULL CHECK (quantity <> ''),
  target          double precision NOT NULL,
  tolerance       double precision CHECK (tolerance IS NULL OR tolerance >= 0),
  effective_from  timestamptz NOT NULL DEFAULT now(),
  created_by      text,
  period          text NOT NULL DEFAULT 'any' CHECK (period IN ('day', 'night', 'any')),
  CONSTRAINT setpoints_room_id_quantity_period_effective_from_key UNIQUE (room_id, quantity, period, effective_from),
  CONSTRAINT setpoints_quantity_kind_check
    CHECK (quantity IN ('air_temperature', 'relative_humidity', 'air_vpd', 'co2'))
);

-- One row per decision of the automation service that changed or could have
-- changed an actuator (0005 added everything after setpoint_id): value is the
-- observed value, setpoint/band the target and tolerance it was compared with,
-- state the output the decision leaves (true = on), command_id/ack_status the
-- command it sent. Append-only: an acknowledgement, or its absence after the
-- retries, is a row of its own with the same command_id.
CREATE TABLE IF NOT EXISTS actuator_events (
  event_id    bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  time        timestamptz NOT NULL DEFAULT now(),
  device_id   integer NOT NULL REFERENCES device (device_id),
  actuator    text NOT NULL CHECK (actuator <> ''),
  action      text NOT NULL CHECK (action <> ''),
  value       double precision,
  reason      text,
  setpoint_id bigint REFERENCES setpoints (setpoint_id),
  room_id     integer REFERENCES room (room_id),
  quantity    text,
  setpoint    double precision,
  band        double precision CHECK (band IS NULL OR band >= 0),
  state       boolean,
  dry_run     boolean NOT NULL DEFAULT false,
  command_id  text,
  ack_status  text CHECK (ack_status IS NULL OR ack_status IN ('not_sent', 'sent', 'acked', 'unacknowledged'))
);
CREATE INDEX IF NOT EXISTS actuator_events_device_time_idx ON actuator_events (device_id, time DESC);
CREATE INDEX IF NOT EXISTS actuator_events_room_time_idx ON actuator_events (room_id, time DESC);

-- ---------------------------------------------------------------- legacy migration

-- One row per committed batch of the legacy migration (db/migrate/), written in
-- the batch's transaction; time_zone and ambiguous say how local times were read
-- (NULL for a timestamptz column). See db/migrations/0006_migration_checkpoint.sql.
CREATE TABLE IF NOT EXISTS migration_checkpoint (
  source        text NOT NULL,
  batch_start   timestamptz NOT NULL,
  batch_end     timestamptz NOT NULL,
  legacy_rows   bigint NOT NULL,
  values_seen   bigint NOT NULL,
  keys_numeric  bigint NOT NULL,
  inserted      bigint NOT NULL,
  stats         jsonb NOT NULL,
  committed_at  timestamptz NOT NULL DEFAULT now(),
  aggregated    boolean NOT NULL DEFAULT false,
  time_zone     text,
  ambiguous     text CHECK (ambiguous IN ('earlier', 'later')),
  PRIMARY KEY (source, batch_end),
  CHECK (batch_end > batch_start)
);

-- ---------------------------------------------------------------- platform state

-- Settings the platform reads at run time (raw-data retention, ...).
CREATE TABLE IF NOT EXISTS cea_setting (
  key    text PRIMARY KEY,
  value  text
);
-- NULL = keep raw data forever (the default).
INSERT INTO cea_setting (key, value) VALUES ('raw_retention', NULL) ON CONFLICT (key) DO NOTHING;
-- The time zone of measurement_daily's buckets: the facility's, set by `cea site
-- sync` through cea_set_daily_timezone().
INSERT INTO cea_setting (key, value) VALUES ('daily_timezone', 'UTC') ON CONFLICT (key) DO NOTHING;

-- Hour buckets touched by the platform's writers since the last aggregate
-- refresh (Apache edition). No unique key on purpose: a writer's mark commits
-- with its rows, and the refresher deletes only marks it can see, so a mark is
-- never lost to a concurrent refresh.
CREATE TABLE IF NOT EXISTS measurement_agg_pending (
  sensor_id  integer NOT NULL,
  bucket     timestamptz NOT NULL
);

-- ---------------------------------------------------------------- edition

-- 'timescale' = Community edition (TSL); 'apache' = Apache edition.
CREATE OR REPLACE FUNCTION cea_timescale_edition() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN current_setting('timescaledb.license', true) = 'timescale'
              THEN 'community' ELSE 'apache' END
$$;

-- ---------------------------------------------------------------- roles

-- One role per kind of client, each with only the rights it needs (created
-- NOLOGIN when missing; LOGIN and passwords are a deployment step):
-- cea_writer (can-worker, its maintenance only through the SECURITY DEFINER
-- functions), cea_api (cea-backend), cea_reader (Grafana, monitors),
-- cea_automation (reads; records actuator events; setpoints come through the
-- API, whose role writes them). The owner
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
                           'actuator_events', 'cea_setting', 'sensor_kind', 'room_band'] LOOP
    CONTINUE WHEN to_regclass(t) IS NULL;
    EXECUTE format('GRANT SELECT ON %I TO cea_reader, cea_api, cea_writer, cea_automation', t);
  END LOOP;
  -- measurements: written by the worker and the API, never updated or deleted by them
  EXECUTE 'GRANT INSERT ON measurement, measurement_agg_pending TO cea_writer, cea_api';
  -- decisions of the automation service; setpoints come through the API
  EXECUTE 'GRANT INSERT ON actuator_events TO cea_automation';
  EXECUTE 'REVOKE INSERT ON setpoints FROM cea_automation';
  EXECUTE 'GRANT INSERT ON setpoints TO cea_api';
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

-- ---------------------------------------------------------------- aggregates: zone and windows

-- The time zone of measurement_daily's buckets.
CREATE OR REPLACE FUNCTION cea_daily_timezone() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT value FROM cea_setting WHERE key = 'daily_timezone'), 'UTC')
$$;

-- The start of the local day (measurement_daily bucket) that holds ts.
CREATE OR REPLACE FUNCTION cea_daily_bucket(ts timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
  SELECT time_bucket(INTERVAL '1 day', ts, cea_daily_timezone())
$$;

-- The start of the local day after the one that starts at day (23 to 25 hours later).
CREATE OR REPLACE FUNCTION cea_next_day(day timestamptz, tz text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
  SELECT time_bucket(INTERVAL '1 day', day + INTERVAL '36 hours', tz)
$$;

-- Aggregate buckets that start before this instant are never recomputed: raw-data
-- retention has dropped (or is about to drop) the rows they were made from, and a
-- refresh over missing rows would erase them. Retention drops whole one-day
-- chunks that end before now() - keep; one more day of margin. NULL = retention off.
CREATE OR REPLACE FUNCTION cea_aggregate_horizon() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
  SELECT time_bucket(INTERVAL '1 day', now() - value::interval) + INTERVAL '1 day'
  FROM cea_setting WHERE key = 'raw_retention' AND value IS NOT NULL
$$;

-- What a refresh of one aggregate over [start, end) may cover: widened to whole
-- buckets (UTC hours; local days), never before cea_aggregate_horizon(), never
-- past the start of the current bucket (a refresh that covered the current
-- bucket would freeze it: later rows would wait for the next policy run instead
-- of showing through real-time aggregation). NULL start or end = unbounded. No
-- row when nothing is left.
CREATE OR REPLACE FUNCTION cea_refresh_window(aggregate text, start timestamptz, "end" timestamptz)
RETURNS TABLE (window_start timestamptz, window_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  tz text := cea_daily_timezone();
  daily boolean;
  horizon timestamptz := cea_aggregate_horizon();
  lo timestamptz;
  hi timestamptz;
  cap timestamptz;
BEGIN
  daily := CASE aggregate WHEN 'measurement_daily' THEN true WHEN 'measurement_hourly' THEN false END;
  IF daily IS NULL THEN
    RAISE EXCEPTION 'no aggregate %: measurement_hourly or measurement_daily', aggregate
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF daily THEN
    cap := time_bucket(INTERVAL '1 day', now(), tz);
    lo := time_bucket(INTERVAL '1 day', start, tz);
    hi := time_bucket(INTERVAL '1 day', "end", tz);
    IF hi < "end" THEN hi := cea_next_day(hi, tz); END IF;
    IF horizon IS NOT NULL THEN
      horizon := CASE WHEN time_bucket(INTERVAL '1 day', horizon, tz) = horizon THEN horizon
                      ELSE cea_next_day(time_bucket(INTERVAL '1 day', horizon, tz), tz) END;
    END IF;
  ELSE
    cap := time_bucket(INTERVAL '1 hour', now());
    lo := time_bucket(INTERVAL '1 hour', start);
    hi := time_bucket(INTERVAL '1 hour', "end");
    IF hi < "end" THEN hi := hi + INTERVAL '1 hour'; END IF;
  END IF;
  hi := least(coalesce(hi, cap), cap);
  IF horizon IS NOT NULL THEN lo := greatest(lo, horizon); END IF;
  IF lo IS NOT NULL AND lo >= hi THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT lo, hi;
END
$$;

-- ---------------------------------------------------------------- Apache edition: recompute

-- A temporary table of this transaction, empty. DDL inside the functions here
-- is dynamic (EXECUTE), never a statement plpgsql caches: TimescaleDB's DDL
-- hook crashes a 2.19 backend on some cached utility statements run again in
-- the same session.
CREATE OR REPLACE FUNCTION cea_temp_table(name text, columns text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TABLE IF EXISTS pg_temp.%I', name);
  EXECUTE format('CREATE TEMP TABLE %I (%s) ON COMMIT DROP', name, columns);
END
$$;

-- Recompute the days in pg_temp.cea_days (sensor_id, day, next_day) of
-- measurement_daily. A day that begins and ends on whole UTC hours (every day,
-- in a zone with whole-hour offsets) is combined from its hourly rows (min of
-- the minima, max of the maxima, the count-weighted mean of the means, the sum
-- of the counts), which also covers hours whose raw rows retention has dropped;
-- any other day is computed from the raw rows, and only after the horizon.
-- Returns the number of daily rows written.
CREATE OR REPLACE FUNCTION cea_recompute_days() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  horizon timestamptz := cea_aggregate_horizon();
  a bigint;
  b bigint;
BEGIN
  DELETE FROM measurement_daily d USING pg_temp.cea_days x
  WHERE d.sensor_id = x.sensor_id AND d.bucket = x.day
    AND (time_bucket(INTERVAL '1 hour', x.day) = x.day AND time_bucket(INTERVAL '1 hour', x.next_day) = x.next_day
         OR horizon IS NULL OR x.day >= horizon);
  INSERT INTO measurement_daily (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT x.day, x.sensor_id, min(h.min_value), max(h.max_value),
         (sum(h.avg_value::numeric * h.sample_count) / sum(h.sample_count))::double precision, sum(h.sample_count)
  FROM pg_temp.cea_days x
  JOIN measurement_hourly h ON h.sensor_id = x.sensor_id AND h.bucket >= x.day AND h.bucket < x.next_day
  WHERE time_bucket(INTERVAL '1 hour', x.day) = x.day AND time_bucket(INTERVAL '1 hour', x.next_day) = x.next_day
  GROUP BY x.day, x.sensor_id;
  GET DIAGNOSTICS a = ROW_COUNT;
  INSERT INTO measurement_daily (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT x.day, x.sensor_id, min(m.value), max(m.value),
         sum(m.value * power(2::double precision, -40)) / count(*) * power(2::double precision, 40), count(*)
  FROM pg_temp.cea_days x
  JOIN measurement m ON m.sensor_id = x.sensor_id AND m.time >= x.day AND m.time < x.next_day
  WHERE NOT (time_bucket(INTERVAL '1 hour', x.day) = x.day AND time_bucket(INTERVAL '1 hour', x.next_day) = x.next_day)
    AND (horizon IS NULL OR x.day >= horizon)
    AND m.status IS DISTINCT FROM 'out_of_range'
  GROUP BY x.day, x.sensor_id;
  GET DIAGNOSTICS b = ROW_COUNT;
  RETURN a + b;
END
$$;

-- Recompute the (sensor, hour) buckets in pg_temp.cea_touched, then every local
-- day that holds one. A UTC day (one chunk) with many touched hours, a bulk
-- load, is recomputed whole, by one scan of that day (the hours not touched
-- come out as they were); a few touched hours by index probes of each hour.
-- Readings with status out_of_range are left out.
CREATE OR REPLACE FUNCTION cea_recompute_touched() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  tz text := cea_daily_timezone();
  -- a quarter of a day's sensor-hours: past it, one scan of the chunk reads less than the probes
  bulk bigint := greatest(24, 6 * (SELECT count(*) FROM sensor));
  d timestamptz;
BEGIN
  PERFORM cea_temp_table('cea_touched_day', 'day timestamptz, n bigint');
  INSERT INTO pg_temp.cea_touched_day
  SELECT time_bucket(INTERVAL '1 day', bucket), count(*) FROM pg_temp.cea_touched GROUP BY 1;
  EXECUTE 'ANALYZE pg_temp.cea_touched_day';
  DELETE FROM measurement_hourly h USING pg_temp.cea_touched t, pg_temp.cea_touched_day x
  WHERE h.sensor_id = t.sensor_id AND h.bucket = t.bucket
    AND x.day = time_bucket(INTERVAL '1 day', t.bucket) AND x.n < bulk;
  FOR d IN SELECT day FROM pg_temp.cea_touched_day WHERE n >= bulk ORDER BY day LOOP
    -- (the queue holds no hour before the horizon, which is a UTC midnight: the whole day is after it)
    DELETE FROM measurement_hourly WHERE bucket >= d AND bucket < d + INTERVAL '1 day';
    EXECUTE $q$
      INSERT INTO measurement_hourly (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
      SELECT time_bucket(INTERVAL '1 hour', m.time), m.sensor_id, min(m.value), max(m.value),
             sum(m.value * power(2::double precision, -40)) / count(*) * power(2::double precision, 40), count(*)
      FROM measurement m
      WHERE m.time >= $1 AND m.time < $1 + INTERVAL '1 day' AND m.status IS DISTINCT FROM 'out_of_range'
      GROUP BY 1, 2 $q$ USING d;
  END LOOP;
  INSERT INTO measurement_hourly (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT t.bucket, t.sensor_id, min(m.value), max(m.value),
         sum(m.value * power(2::double precision, -40)) / count(*) * power(2::double precision, 40), count(*)
  FROM pg_temp.cea_touched t
  JOIN pg_temp.cea_touched_day x ON x.day = time_bucket(INTERVAL '1 day', t.bucket) AND x.n < bulk
  JOIN measurement m ON m.sensor_id = t.sensor_id AND m.time >= t.bucket AND m.time < t.bucket + INTERVAL '1 hour'
  WHERE m.status IS DISTINCT FROM 'out_of_range'
  GROUP BY t.bucket, t.sensor_id;

  PERFORM cea_temp_table('cea_days', 'sensor_id integer, day timestamptz, next_day timestamptz');
  -- an hour can straddle two local days only in a zone with a fractional offset
  INSERT INTO pg_temp.cea_days
  SELECT sensor_id, day, cea_next_day(day, tz)
  FROM (SELECT sensor_id, time_bucket(INTERVAL '1 day', bucket, tz) AS day FROM pg_temp.cea_touched
        UNION
        SELECT sensor_id, time_bucket(INTERVAL '1 day', bucket + INTERVAL '59 minutes 59.999999 seconds', tz)
        FROM pg_temp.cea_touched) u;
  PERFORM cea_recompute_days();
END
$$;

-- Recompute both aggregates over [start, end) (NULL = all stored rows), widened
-- to whole local days, in one scan of the raw rows: for bulk loads (the legacy
-- migration, a backfill) and rebuilds. Never before cea_aggregate_horizon().
-- Returns the hourly and daily rows written.
CREATE OR REPLACE FUNCTION cea_recompute_aggregates(start timestamptz, "end" timestamptz,
                                                    OUT hourly bigint, OUT daily bigint)
LANGUAGE plpgsql AS $$
DECLARE
  tz text := cea_daily_timezone();
  horizon timestamptz := cea_aggregate_horizon();
  lo timestamptz := start;
  hi timestamptz := "end";
  day_lo timestamptz;
  day_hi timestamptz;
BEGIN
  hourly := 0;
  daily := 0;
  IF lo IS NULL OR hi IS NULL THEN
    SELECT coalesce(lo, min(c.range_start)), coalesce(hi, max(c.range_end)) INTO lo, hi
    FROM timescaledb_information.chunks c
    WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = 'measurement';
  END IF;
  IF lo IS NULL OR hi IS NULL THEN
    RETURN;
  END IF;
  day_lo := time_bucket(INTERVAL '1 day', lo, tz);
  day_hi := time_bucket(INTERVAL '1 day', hi, tz);
  IF day_hi < hi THEN day_hi := cea_next_day(day_hi, tz); END IF;
  IF horizon IS NOT NULL AND day_lo < horizon THEN
    day_lo := cea_next_day(time_bucket(INTERVAL '1 day', horizon, tz), tz);
  END IF;
  IF day_lo >= day_hi THEN
    RETURN;
  END IF;
  -- whole hours around the local days (a local midnight falls mid-hour in a zone
  -- with a fractional offset)
  lo := time_bucket(INTERVAL '1 hour', day_lo);
  hi := time_bucket(INTERVAL '1 hour', day_hi);
  IF hi < day_hi THEN hi := hi + INTERVAL '1 hour'; END IF;

  DELETE FROM measurement_hourly WHERE bucket >= lo AND bucket < hi;
  INSERT INTO measurement_hourly (bucket, sensor_id, min_value, max_value, avg_value, sample_count)
  SELECT time_bucket(INTERVAL '1 hour', time), sensor_id, min(value), max(value),
         sum(value * power(2::double precision, -40)) / count(*) * power(2::double precision, 40), count(*)
  FROM measurement
  WHERE time >= lo AND time < hi AND status IS DISTINCT FROM 'out_of_range'
  GROUP BY 1, 2;
  GET DIAGNOSTICS hourly = ROW_COUNT;

  DELETE FROM measurement_daily WHERE bucket >= day_lo AND bucket < day_hi;
  PERFORM cea_temp_table('cea_days', 'sensor_id integer, day timestamptz, next_day timestamptz');
  INSERT INTO pg_temp.cea_days
  SELECT sensor_id, day, cea_next_day(day, tz)
  FROM (SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 day', bucket, tz) AS day
        FROM measurement_hourly WHERE bucket >= lo AND bucket < hi) u
  WHERE day >= day_lo AND day < day_hi;
  daily := cea_recompute_days();
END
$$;

-- Recompute the aggregate buckets queued since the last run (Apache edition);
-- returns the number of hourly buckets recomputed. Queued buckets older than
-- cea_aggregate_horizon() are dropped from the queue: their raw rows are gone
-- or about to go, and their aggregates stay as they are. On the Community
-- edition the continuous aggregates do this work, so the queue is just
-- cleared. Concurrent callers: one works, the others return 0 at once.
CREATE OR REPLACE FUNCTION cea_refresh_aggregates() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  n integer;
  horizon timestamptz := cea_aggregate_horizon();
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('cea_refresh_aggregates')) THEN
    RETURN 0;
  END IF;
  IF cea_timescale_edition() = 'community' THEN
    DELETE FROM measurement_agg_pending;
    RETURN 0;
  END IF;

  PERFORM cea_temp_table('cea_touched', 'sensor_id integer, bucket timestamptz');
  WITH taken AS (DELETE FROM measurement_agg_pending RETURNING sensor_id, bucket)
  INSERT INTO pg_temp.cea_touched
  SELECT DISTINCT sensor_id, bucket FROM taken WHERE horizon IS NULL OR bucket >= horizon;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN
    PERFORM cea_recompute_touched();
  END IF;
  RETURN n;
END
$$;

-- ---------------------------------------------------------------- both editions: refresh, rebuild

-- Refresh one aggregate over [start, end) (NULL = unbounded) within
-- cea_refresh_window(): clear of retention and of the current bucket. Community
-- edition: refresh_continuous_aggregate, so CALL it outside a transaction block;
-- oldest batch first, so that while it runs every bucket stays readable (each
-- committed batch moves the watermark up behind the buckets it materialized;
-- newest first would move it past buckets not materialized yet, and they would
-- be missing from the aggregate until the refresh ends). Apache edition: the
-- set-based recompute (both tables, for measurement_hourly).
CREATE OR REPLACE PROCEDURE cea_refresh_aggregate(aggregate text, start timestamptz, "end" timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  w record;
BEGIN
  IF cea_timescale_edition() = 'community' THEN
    FOR w IN SELECT * FROM cea_refresh_window(aggregate, start, "end") LOOP
      CALL refresh_continuous_aggregate(aggregate::regclass, w.window_start, w.window_end,
                                        options => '{"refresh_newest_first": false}');
    END LOOP;
  ELSIF aggregate = 'measurement_hourly' THEN
    PERFORM cea_recompute_aggregates(start, "end");
  END IF;
END
$$;

-- ---------------------------------------------------------------- Community edition: policies, aggregates

-- The refresh policies: the hourly aggregate every 15 minutes up to an hour ago,
-- the daily one every hour up to a day ago; both from the horizon on (keep - 2
-- days: start_offset is counted back from the run, and the horizon lies at most
-- keep - 1 day back), or over everything when retention is off. Oldest batch
-- first, for the reason given at cea_refresh_aggregate().
CREATE OR REPLACE FUNCTION cea_apply_refresh_policies() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  keep interval := (SELECT value::interval FROM cea_setting WHERE key = 'raw_retention');
  from_offset interval := keep - INTERVAL '2 days';
  p record;
  have jsonb;
BEGIN
  IF cea_timescale_edition() <> 'community' THEN
    RETURN;
  END IF;
  FOR p IN SELECT * FROM (VALUES ('measurement_hourly', INTERVAL '1 hour', INTERVAL '15 minutes'),
                                 ('measurement_daily', INTERVAL '1 day', INTERVAL '1 hour')) v(agg, end_offset, every)
  LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates c
                              WHERE c.view_schema = current_schema() AND c.view_name = p.agg);
    -- a policy names its aggregate by the view (2.28) or by the materialization hypertable (earlier)
    SELECT j.config INTO have
    FROM timescaledb_information.jobs j
    JOIN timescaledb_information.continuous_aggregates c
      ON (j.hypertable_schema, j.hypertable_name) IN ((c.view_schema, c.view_name),
         (c.materialization_hypertable_schema, c.materialization_hypertable_name))
    WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
      AND c.view_schema = current_schema() AND c.view_name = p.agg;
    CONTINUE WHEN have IS NOT NULL
      AND (have ->> 'start_offset')::interval IS NOT DISTINCT FROM from_offset
      AND (have ->> 'end_offset')::interval = p.end_offset
      AND (have ->> 'refresh_newest_first')::boolean IS FALSE;
    PERFORM remove_continuous_aggregate_policy(p.agg, if_exists => true);
    PERFORM add_continuous_aggregate_policy(p.agg, start_offset => from_offset, end_offset => p.end_offset,
                                            schedule_interval => p.every, refresh_newest_first => false);
  END LOOP;
END
$$;

-- Create one continuous aggregate as the platform defines it, with its refresh
-- policy and grants: measurement_hourly in UTC hours, measurement_daily in the
-- days of cea_daily_timezone(); out_of_range readings left out; real-time
-- aggregation on. WITH NO DATA: real-time aggregation answers until a refresh.
CREATE OR REPLACE FUNCTION cea_create_continuous_aggregate(aggregate text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format($cagg$
    CREATE MATERIALIZED VIEW %I
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT %s AS bucket,
           sensor_id,
           min(value) AS min_value,
           max(value) AS max_value,
           sum(value * power(2::double precision, -40)) / count(*) * power(2::double precision, 40) AS avg_value,
           count(*) AS sample_count
    FROM measurement
    WHERE status IS DISTINCT FROM 'out_of_range'
    GROUP BY 1, 2
    WITH NO DATA $cagg$,
    aggregate,
    CASE aggregate
      WHEN 'measurement_hourly' THEN 'time_bucket(INTERVAL ''1 hour'', time)'
      WHEN 'measurement_daily' THEN format('time_bucket(INTERVAL ''1 day'', time, %L)', cea_daily_timezone())
    END);
  PERFORM cea_apply_refresh_policies();
  PERFORM cea_grant_roles();
END
$$;

-- Take an aggregate out of the way before it is rebuilt: dropped (Community) or
-- emptied (Apache) when the raw rows it was made from are still stored; kept
-- under the name <aggregate>_kept_<UTC time> (its refresh policy removed) when
-- it holds a bucket that ends before the oldest raw chunk begins: raw-data
-- retention dropped its rows, and it could not be recomputed. tz: the zone of
-- the aggregate's days (measurement_daily). Returns the name it was kept
-- under, or NULL.
CREATE OR REPLACE FUNCTION cea_retire_aggregate(aggregate text, tz text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  oldest timestamptz;
  older boolean;
  kept text := aggregate || '_kept_' || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS');
  cagg boolean := EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                          WHERE view_schema = current_schema() AND view_name = aggregate);
BEGIN
  SELECT min(range_start) INTO oldest FROM timescaledb_information.chunks
  WHERE hypertable_schema = current_schema() AND hypertable_name = 'measurement';
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE bucket < $1 AND %s <= $1)', aggregate,
                 CASE aggregate WHEN 'measurement_daily' THEN format('cea_next_day(bucket, %L)', tz)
                                ELSE 'bucket + INTERVAL ''1 hour''' END)
    INTO older USING coalesce(oldest, 'infinity');
  IF NOT older THEN
    IF cagg THEN
      EXECUTE format('DROP MATERIALIZED VIEW %I', aggregate);
    ELSE
      EXECUTE format('DELETE FROM %I', aggregate);
    END IF;
    RETURN NULL;
  END IF;
  IF cagg THEN
    PERFORM remove_continuous_aggregate_policy(aggregate, if_exists => true);
    EXECUTE format('ALTER MATERIALIZED VIEW %I RENAME TO %I', aggregate, kept);
  ELSE
    EXECUTE format('ALTER TABLE %I RENAME TO %I', aggregate, kept);
    EXECUTE format('ALTER INDEX %I RENAME TO %I', aggregate || '_pkey', kept || '_pkey');
    EXECUTE format('CREATE TABLE %I (LIKE measurement_hourly INCLUDING ALL)', aggregate);
    PERFORM cea_grant_roles();
  END IF;
  RAISE WARNING '% holds buckets from before the oldest raw row (raw-data retention dropped their rows): kept as %',
    aggregate, kept;
  RETURN kept;
END
$$;

-- Daily buckets in the zone tz from now on: records it, then re-creates the
-- Community continuous aggregate in that zone or recomputes the Apache table.
-- One zone per database: refused while a facility has another. Returns false
-- when tz already was the zone.
CREATE OR REPLACE FUNCTION cea_set_daily_timezone(tz text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  other text;
  was text := cea_daily_timezone();
BEGIN
  PERFORM now() AT TIME ZONE tz; -- an unknown zone raises 22023 here
  SELECT format('facility %s (%s) has time zone %s', facility_id, name, timezone) INTO other
  FROM facility WHERE timezone <> tz ORDER BY facility_id LIMIT 1;
  IF other IS NOT NULL THEN
    RAISE EXCEPTION 'daily aggregates follow one time zone per database: % and not %', other, tz
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'give every facility the same time zone (the site file''s facility.timezone)';
  END IF;
  IF tz = was THEN
    RETURN false;
  END IF;
  PERFORM cea_retire_aggregate('measurement_daily', was);
  UPDATE cea_setting SET value = tz WHERE key = 'daily_timezone';
  IF cea_timescale_edition() = 'community' THEN
    PERFORM cea_create_continuous_aggregate('measurement_daily');
  ELSE
    PERFORM cea_temp_table('cea_days', 'sensor_id integer, day timestamptz, next_day timestamptz');
    INSERT INTO pg_temp.cea_days
    SELECT sensor_id, day, cea_next_day(day, tz)
    FROM (SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 day', bucket, tz) AS day FROM measurement_hourly) u;
    PERFORM cea_recompute_days();
  END IF;
  RETURN true;
END
$$;

-- Raw-data retention: raw rows are kept for `keep` (NULL = forever, the
-- default; at least 7 days, so the refresh window keeps room). The aggregates
-- stay: nothing refreshes a bucket older than cea_aggregate_horizon().
CREATE OR REPLACE FUNCTION cea_set_retention(keep interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF keep IS NOT NULL AND keep < INTERVAL '7 days' THEN
    RAISE EXCEPTION 'raw-data retention of % is too short: at least 7 days', keep
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE cea_setting SET value = keep::text WHERE key = 'raw_retention';
  IF cea_timescale_edition() = 'community' THEN
    PERFORM cea_apply_refresh_policies();
    PERFORM remove_retention_policy('measurement', if_exists => true);
    IF keep IS NOT NULL THEN
      PERFORM add_retention_policy('measurement', keep);
    END IF;
  END IF;
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

-- ---------------------------------------------------------------- aggregates

-- Community edition: compression and the continuous aggregates; Apache
-- edition: the aggregate tables.
DO $edition$
DECLARE
  agg text;
BEGIN
  IF cea_timescale_edition() = 'community' THEN
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
    FOREACH agg IN ARRAY ARRAY['measurement_hourly', 'measurement_daily'] LOOP
      IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relname = agg AND c.relkind = 'r') THEN
        EXECUTE format('ALTER TABLE %I RENAME TO %I', agg, agg || '_apache_' || to_char(now(), 'YYYYMMDDHH24MISS'));
      END IF;
      IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                     WHERE view_schema = current_schema() AND view_name = agg) THEN
        PERFORM cea_create_continuous_aggregate(agg);
      END IF;
    END LOOP;
    PERFORM cea_apply_refresh_policies();
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

-- ---------------------------------------------------------------- privileges

REVOKE ALL ON FUNCTION cea_set_daily_timezone(text), cea_set_retention(interval), cea_retire_aggregate(text, text),
  cea_create_continuous_aggregate(text), cea_apply_refresh_policies(), cea_recompute_aggregates(timestamptz, timestamptz),
  cea_recompute_touched(), cea_recompute_days(), cea_temp_table(text, text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE cea_refresh_aggregate(text, timestamptz, timestamptz) FROM PUBLIC;
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
  (2, 'roles', 'd66cffce92de2e8adf150e54fb704fe91bcd10ec43bf9fbb00ae4109cba7d1f2'),
  (3, 'facility_local_days', 'b31666750396fe1929fbcb40ec880f789a8d3d1a1d511cb3c0c00f07c0875433'),
  (4, 'sensor_kind', '4fb993b97012ecd069106cdc8231070a6c319672225eb62416281e7cdb3256ce'),
  (5, 'automation', 'a8cedda92e7bd82ec4458b034f0030c4b84fc0af6778f9f9147d0d9608008963'),
  (6, 'migration_checkpoint', 'c6d7908b543261390346691fa093a63399f169ecce50cd29dbf7e00bedf68538')
ON CONFLICT (version) DO NOTHING;
