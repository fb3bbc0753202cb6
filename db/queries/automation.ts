import type { Queryable } from "../pool.js";
import type { ControlledQuantity } from "../site.js";

// Setpoints and actuator events: what automation-service reads and writes, and
// what the API serves.

export interface SetpointRow {
  setpoint_id: number;
  room_id: number;
  quantity: ControlledQuantity;
  period: "day" | "night" | "any";
  target: number;
  tolerance: number | null;
  effective_from: Date;
  created_by: string | null;
}

const SETPOINT_COLUMNS = `setpoint_id::float8 AS setpoint_id, room_id, quantity, period, target, tolerance,
  effective_from, created_by`;

/**
 * The setpoints that can be in force at `at` or later: per (room, quantity,
 * period) the latest that took effect by `at`, and every one that takes effect
 * after it (a scheduled change applies at its time without a new read).
 */
export async function setpointsInForce(db: Queryable, at: Date, roomId?: number): Promise<SetpointRow[]> {
  const { rows } = await db.query<SetpointRow>(
    `(SELECT DISTINCT ON (room_id, quantity, period) ${SETPOINT_COLUMNS}
      FROM setpoints WHERE effective_from <= $1 AND ($2::int IS NULL OR room_id = $2)
      ORDER BY room_id, quantity, period, effective_from DESC, setpoint_id DESC)
     UNION ALL
     (SELECT ${SETPOINT_COLUMNS} FROM setpoints WHERE effective_from > $1 AND ($2::int IS NULL OR room_id = $2))
     ORDER BY room_id, quantity, period, effective_from`,
    [at, roomId ?? null],
  );
  return rows;
}

export interface NewSetpoint {
  room_id: number;
  quantity: ControlledQuantity;
  period: "day" | "night" | "any";
  target: number;
  tolerance: number;
  /** NULL = now (the database's clock). */
  effective_from: Date | null;
  created_by: string | null;
}

export async function insertSetpoints(db: Queryable, rows: readonly NewSetpoint[]): Promise<SetpointRow[]> {
  const { rows: out } = await db.query<SetpointRow>(
    `INSERT INTO setpoints (room_id, quantity, period, target, tolerance, effective_from, created_by)
     SELECT x.room_id, x.quantity, x.period, x.target, x.tolerance, coalesce(x.effective_from, now()), x.created_by
     FROM jsonb_to_recordset($1::jsonb) AS x(room_id int, quantity text, period text, target float8, tolerance float8,
                                            effective_from timestamptz, created_by text)
     RETURNING ${SETPOINT_COLUMNS}`,
    [JSON.stringify(rows)],
  );
  return out;
}

export interface ActuatorEvent {
  time: Date;
  room_id: number;
  device_id: number;
  actuator: string;
  action: string;
  quantity: string | null;
  /** The observed value. */
  value: number | null;
  setpoint: number | null;
  band: number | null;
  setpoint_id: number | null;
  state: boolean | null;
  reason: string;
  dry_run: boolean;
  command_id: string | null;
  ack_status: "not_sent" | "sent" | "acked" | "unacknowledged" | null;
}

/** Record decisions in one statement. */
export async function insertActuatorEvents(db: Queryable, events: readonly ActuatorEvent[]): Promise<void> {
  if (!events.length) return;
  await db.query(
    `INSERT INTO actuator_events (time, room_id, device_id, actuator, action, quantity, value, setpoint, band,
       setpoint_id, state, reason, dry_run, command_id, ack_status)
     SELECT x.time, x.room_id, x.device_id, x.actuator, x.action, x.quantity, x.value, x.setpoint, x.band,
       x.setpoint_id, x.state, x.reason, x.dry_run, x.command_id, x.ack_status
     FROM jsonb_to_recordset($1::jsonb) AS x(time timestamptz, room_id int, device_id int, actuator text, action text,
       quantity text, value float8, setpoint float8, band float8, setpoint_id bigint, state boolean, reason text,
       dry_run boolean, command_id text, ack_status text)`,
    [JSON.stringify(events)],
  );
}

export interface ActuatorEventRow extends ActuatorEvent {
  event_id: number;
}

/** A room's events in [start, end), oldest first, at most `limit`. */
export async function listActuatorEvents(
  db: Queryable,
  roomId: number,
  start: Date,
  end: Date,
  limit: number,
): Promise<ActuatorEventRow[]> {
  const { rows } = await db.query<ActuatorEventRow>(
    `SELECT event_id::float8 AS event_id, time, room_id, device_id, actuator, action, quantity, value, setpoint, band,
       setpoint_id::float8 AS setpoint_id, state, reason, dry_run, command_id, ack_status
     FROM actuator_events WHERE room_id = $1 AND time >= $2 AND time < $3
     ORDER BY time, event_id LIMIT $4`,
    [roomId, start, end, limit],
  );
  return rows;
}

/** The outcome of a command frame as can-scanner reports it (stream can:cmd:ack). */
export interface CommandOutcomeRecord {
  command_id: string;
  /** The command's decision time (its can:cmd entry's ts): the decisions it carries were recorded at it. */
  command_time: Date;
  /** Devices whose actuators the command's message drives (bounds the lookup to the device index). */
  device_ids: number[];
  time: Date;
  ack_status: "acked" | "unacknowledged" | "not_sent";
  reason: string;
  /** Actuator → applied output (1/0) from the node's status frame; null when none came. */
  applied: Record<string, number> | null;
}

/**
 * actuator_events is append-only: the outcome of a command is one new row
 * (action `ack`) per decision row that named it as `sent`, with the applied
 * state when the node answered. A redelivered outcome adds nothing (the row of
 * that outcome is there already). Returns the rows added.
 */
export async function insertCommandOutcome(db: Queryable, o: CommandOutcomeRecord): Promise<number> {
  const { rowCount } = await db.query(
    `INSERT INTO actuator_events (time, room_id, device_id, actuator, action, quantity, value, setpoint, band,
       setpoint_id, state, reason, dry_run, command_id, ack_status)
     SELECT $4, e.room_id, e.device_id, e.actuator, 'ack', e.quantity, NULL, e.setpoint, e.band, e.setpoint_id,
       CASE WHEN $7::jsonb ? e.actuator THEN ($7::jsonb ->> e.actuator)::int = 1 END, $6, e.dry_run, e.command_id, $5
     FROM actuator_events e
     WHERE e.device_id = ANY ($3::int[]) AND e.time = $2 AND e.command_id = $1 AND e.ack_status = 'sent'
       AND NOT EXISTS (SELECT 1 FROM actuator_events x
                       WHERE x.device_id = e.device_id AND x.time = $4 AND x.command_id = $1
                         AND x.actuator = e.actuator AND x.action = 'ack')`,
    [o.command_id, o.command_time, o.device_ids, o.time, o.ack_status, o.reason, JSON.stringify(o.applied ?? {})],
  );
  return rowCount ?? 0;
}
