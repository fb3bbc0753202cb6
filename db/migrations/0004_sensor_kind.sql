-- 0004 sensor kinds: each sensor's kind (quantity and unit) and expected
-- reporting interval, and the alarm band of a room per kind; both new tables
-- readable by every client role (cea_grant_roles(), as defined in 0002 plus
-- these two tables).

SET client_min_messages = warning;

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
  -- decisions of the automation service
  EXECUTE 'GRANT INSERT ON actuator_events, setpoints TO cea_automation';
  -- maintenance: only through the SECURITY DEFINER functions, only for the worker
  EXECUTE 'REVOKE ALL ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() FROM PUBLIC';
  EXECUTE 'GRANT EXECUTE ON FUNCTION cea_refresh_aggregates(), cea_apply_retention() TO cea_writer';
END
$$;

SELECT cea_grant_roles();
