-- 0005 automation: what the climate controller (automation-service) needs from
-- setpoints and actuator_events.
--
-- setpoints: a period (day | night | any) chosen by the room's lights-on
--   schedule, and quantities named like the sensor kinds the controller reads
--   (air_temperature, relative_humidity, air_vpd, co2). The latest row with
--   effective_from <= now() wins per (room, quantity, period); a day or night row
--   beats an `any` row.
-- actuator_events: one row per decision that changed or could have changed an
--   actuator, with its room, what it observed against which target and band,
--   the output state it leaves, whether it was a dry run, and the command it
--   sent (command_id, ack_status). Append-only: an acknowledgement (or its
--   absence after the retries) is a row of its own with the same command_id.
-- Rights: the automation service reads setpoints and records events (it no
-- longer writes setpoints); the API reads and writes setpoints and reads events.

SET client_min_messages = warning;

ALTER TABLE setpoints
  ADD COLUMN IF NOT EXISTS period text NOT NULL DEFAULT 'any' CHECK (period IN ('day', 'night', 'any'));
ALTER TABLE setpoints DROP CONSTRAINT IF EXISTS setpoints_room_id_quantity_effective_from_key;
ALTER TABLE setpoints
  ADD CONSTRAINT setpoints_room_id_quantity_period_effective_from_key UNIQUE (room_id, quantity, period, effective_from);
ALTER TABLE setpoints
  ADD CONSTRAINT setpoints_quantity_kind_check
  CHECK (quantity IN ('air_temperature', 'relative_humidity', 'air_vpd', 'co2'));

ALTER TABLE actuator_events
  ADD COLUMN IF NOT EXISTS room_id integer REFERENCES room (room_id),
  ADD COLUMN IF NOT EXISTS quantity text,
  ADD COLUMN IF NOT EXISTS setpoint double precision,
  ADD COLUMN IF NOT EXISTS band double precision CHECK (band IS NULL OR band >= 0),
  ADD COLUMN IF NOT EXISTS state boolean,
  ADD COLUMN IF NOT EXISTS dry_run boolean NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS command_id text,
  ADD COLUMN IF NOT EXISTS ack_status text
    CHECK (ack_status IS NULL OR ack_status IN ('not_sent', 'sent', 'acked', 'unacknowledged'));
CREATE INDEX IF NOT EXISTS actuator_events_room_time_idx ON actuator_events (room_id, time DESC);

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

SELECT cea_grant_roles();
