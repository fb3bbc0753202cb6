-- 0003 facility-local days, good readings only, and aggregates that stay true.
--
-- * measurement_daily buckets are the facility's local days (time_bucket with
--   the zone; 23- and 25-hour days at DST changes); measurement_hourly stays in
--   UTC hours. One zone per database: cea_setting 'daily_timezone', set from the
--   facility by `cea site sync` (cea_set_daily_timezone()); facilities with
--   different zones are refused. A continuous aggregate needs a constant zone,
--   so a zone change re-creates measurement_daily (Community) or recomputes it
--   (Apache).
-- * Readings with status out_of_range are left out of both aggregates.
-- * The mean is the sum of the readings scaled by 2^-40, over the count, scaled
--   back: the same value as avg() for every reading of magnitude above 1e-290
--   (scaling by a power of two is exact), but a sum of readings near ±1.8e308
--   no longer overflows (which stopped every later refresh); below 1e-290 the
--   mean loses precision. min, max and count are exact.
-- * Refreshes never reach raw rows that retention has dropped, or may be about
--   to drop (cea_aggregate_horizon()), and the Community refreshes the platform
--   runs stop at the start of the current bucket (cea_refresh_window()), so the
--   current bucket stays live through real-time aggregation.
-- * The Apache refresh is set-based: one scan per bulk-loaded day, index probes
--   for a few touched hours, and days combined from the hourly rows.
--
-- An aggregate that is rebuilt here (Community: both, to add the status filter;
-- Apache: the daily table) and holds buckets that end before the oldest raw
-- chunk (retention dropped what they were made from) is kept under the name
-- <aggregate>_kept_<UTC time>, never dropped.

SET client_min_messages = warning;

INSERT INTO cea_setting (key, value) VALUES ('daily_timezone', 'UTC') ON CONFLICT (key) DO NOTHING;

-- ---------------------------------------------------------------- zone and windows

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

-- ---------------------------------------------------------------- this migration's data work

DO $rebuild$
DECLARE
  zones text[] := (SELECT array_agg(DISTINCT timezone ORDER BY timezone) FROM facility);
  tz text;
BEGIN
  IF cardinality(zones) > 1 THEN
    RAISE EXCEPTION 'daily aggregates follow one time zone per database, and the facilities have %', zones
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'give every facility the same time zone (the site file''s facility.timezone), then apply again';
  END IF;
  tz := coalesce(zones[1], 'UTC');
  PERFORM now() AT TIME ZONE tz;
  UPDATE cea_setting SET value = tz WHERE key = 'daily_timezone';
  IF cea_timescale_edition() = 'community' THEN
    -- both continuous aggregates anew: the status filter, the numeric mean, the
    -- zone (until now, daily buckets were UTC days)
    PERFORM cea_retire_aggregate('measurement_hourly', 'UTC');
    PERFORM cea_create_continuous_aggregate('measurement_hourly');
    PERFORM cea_retire_aggregate('measurement_daily', 'UTC');
    PERFORM cea_create_continuous_aggregate('measurement_daily');
  ELSE
    -- the hourly rows of the stored raw rows again (without out_of_range), the
    -- daily table in local days
    PERFORM cea_retire_aggregate('measurement_daily', 'UTC');
    PERFORM cea_recompute_aggregates(NULL, NULL);
  END IF;
END
$rebuild$;

REVOKE ALL ON FUNCTION cea_set_daily_timezone(text), cea_set_retention(interval), cea_retire_aggregate(text, text),
  cea_create_continuous_aggregate(text), cea_apply_refresh_policies(), cea_recompute_aggregates(timestamptz, timestamptz),
  cea_recompute_touched(), cea_recompute_days(), cea_temp_table(text, text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE cea_refresh_aggregate(text, timestamptz, timestamptz) FROM PUBLIC;
-- re-created above: SECURITY DEFINER again
SELECT cea_secure_definer('cea_refresh_aggregates()');
