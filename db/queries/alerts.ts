import type { Queryable } from "../pool.js";

// The database side of the alert conditions: how fresh each sensor's stored
// readings are, which rooms have been outside a band, which TimescaleDB jobs
// failed. Every lookup goes per sensor over the unique key (sensor_id, time
// DESC) within a bounded window, so its cost does not grow with the history.

export interface SensorFreshness {
  sensor_id: number;
  sensor: string;
  kind: string | null;
  room_id: number;
  room: string;
  /** The sensor's expected interval, or the default when it has none. */
  interval_s: number;
  /** Newest stored reading within the lookback window, any status; null = none. */
  last_time: Date | null;
  /** Newest stored reading that is not out_of_range within the window; null = none. */
  last_good_time: Date | null;
  /** The database's clock when it answered (ages are taken against it). */
  now: Date;
}

export async function sensorFreshness(
  db: Queryable,
  opts: { defaultIntervalS: number; lookbackS: number },
): Promise<SensorFreshness[]> {
  const { rows } = await db.query<SensorFreshness>(
    `SELECT s.sensor_id, s.name AS sensor, s.kind, r.room_id, r.name AS room,
            coalesce(s.expected_interval_s, $1::float8) AS interval_s,
            l.time AS last_time, g.time AS last_good_time, now() AS now
     FROM sensor s
     JOIN device d ON d.device_id = s.device_id
     JOIN room r ON r.room_id = d.room_id
     LEFT JOIN LATERAL (
       SELECT m.time FROM measurement m
       WHERE m.sensor_id = s.sensor_id AND m.time > now() - make_interval(secs => $2::float8)
       ORDER BY m.time DESC LIMIT 1) l ON true
     LEFT JOIN LATERAL (
       SELECT m.time FROM measurement m
       WHERE m.sensor_id = s.sensor_id AND m.time > now() - make_interval(secs => $2::float8)
         AND m.status IS DISTINCT FROM 'out_of_range'
       ORDER BY m.time DESC LIMIT 1) g ON true
     ORDER BY s.sensor_id`,
    [opts.defaultIntervalS, opts.lookbackS],
  );
  return rows;
}

export interface BandState {
  room_id: number;
  room: string;
  kind: string;
  min_value: number | null;
  max_value: number | null;
  for_s: number;
  /** Some good reading of the kind in the room within the last for_s seconds. */
  any_reading: boolean;
  /** Some of them inside the band. */
  any_inside: boolean;
}

/**
 * Each room band: whether the room's good readings of the kind (status not
 * out_of_range) over the band's last for_s seconds exist and whether any was
 * inside. Outside for the whole time = readings and none inside. The usual
 * answer (inside) stops at the first reading found.
 */
export async function bandStates(db: Queryable): Promise<BandState[]> {
  const { rows } = await db.query<BandState>(
    `SELECT b.room_id, r.name AS room, b.kind, b.min_value, b.max_value, b.for_s,
            EXISTS (
              SELECT 1 FROM sensor s JOIN device d ON d.device_id = s.device_id
              JOIN measurement m ON m.sensor_id = s.sensor_id
              WHERE d.room_id = b.room_id AND s.kind = b.kind
                AND m.time > now() - make_interval(secs => b.for_s)
                AND m.status IS DISTINCT FROM 'out_of_range') AS any_reading,
            EXISTS (
              SELECT 1 FROM sensor s JOIN device d ON d.device_id = s.device_id
              JOIN measurement m ON m.sensor_id = s.sensor_id
              WHERE d.room_id = b.room_id AND s.kind = b.kind
                AND m.time > now() - make_interval(secs => b.for_s)
                AND m.status IS DISTINCT FROM 'out_of_range'
                AND (b.min_value IS NULL OR m.value >= b.min_value)
                AND (b.max_value IS NULL OR m.value <= b.max_value)) AS any_inside
     FROM room_band b JOIN room r ON r.room_id = b.room_id
     ORDER BY b.room_id, b.kind`,
  );
  return rows;
}

export interface FailingJob {
  job_id: number;
  proc: string;
}

/** TimescaleDB jobs whose last run failed (none when the extension is absent). */
export async function failingJobs(db: Queryable): Promise<FailingJob[]> {
  const { rows } = await db.query<FailingJob>(
    `SELECT s.job_id, j.proc_name AS proc
     FROM timescaledb_information.job_stats s JOIN timescaledb_information.jobs j USING (job_id)
     WHERE s.last_run_status = 'Failed' ORDER BY s.job_id`,
  );
  return rows;
}
