-- Legacy migration: the session's mapping (node_id, legacy key) -> sensor,
-- taken from the site file (the only source of metadata).
--
-- Inputs:      $1 jsonb array of {node_id, name, sensor_id, off}, one per
--              sensor of the site file (off = its calibration_offset).
-- Writes:      the session-local temp table cea_legacy_map only.
-- Idempotency: functions.sql recreates the table empty before each fill.

INSERT INTO cea_legacy_map (node_id, name, sensor_id, off)
SELECT node_id, name, sensor_id, off
FROM jsonb_to_recordset($1::jsonb) AS x(node_id bigint, name text, sensor_id integer, off double precision)
