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
  /** effective_from in UTC to the microsecond (a Date keeps milliseconds) */
  effective_from_utc: string;
  created_by: string | null;
}

const UTC_TEXT = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const SETPOINT_COLUMNS = `setpoint_id::float8 AS setpoint_id, room_id, quantity, period, target, tolerance,
  effective_from, ${UTC_TEXT("effective_from")} AS effective_from_utc, created_by`;

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
  /** NULL = now (the database's clock); a string keeps microseconds (RFC 3339). */
  effective_from: Date | string | null;
  created_by: string | null;
}

/**
 * A setpoint that cannot be stored: the room already has one for the same
 * quantity, period and effective_from with another target or band. Setpoints
 * are a history that events refer to, so a stored one is never rewritten.
 * `existing` is null when another writer stored that key while this statement ran.
 */
export class SetpointClash extends Error {
  constructor(readonly clashes: readonly { index: number; existing: SetpointRow | null }[]) {
    super(`${clashes.length} setpoint(s) clash with stored ones`);
    this.name = "SetpointClash";
  }
}

/**
 * Store setpoints as history, all or none, in one statement. One equal to a
 * stored one (same key, target and band) is that row: repeating a request
 * stores nothing twice. A different one at a stored key stores nothing and
 * throws SetpointClash. Rows come back in input order.
 */
export async function insertSetpoints(db: Queryable, rows: readonly NewSetpoint[]): Promise<SetpointRow[]> {
  const keys = new Set(rows.map((r) => `${r.room_id}|${r.quantity}|${r.period}|${r.effective_from?.valueOf() ?? ""}`));
  if (keys.size !== rows.length) throw new Error("insertSetpoints: two setpoints with the same key in one call");
  const { rows: out } = await db.query<SetpointRow & { i: number; how: "inserted" | "same" | "clash" }>(
    `WITH x AS (
       SELECT x.*, coalesce(x.effective_from, now()) AS ef
       FROM jsonb_to_recordset($1::jsonb) AS x(i int, room_id int, quantity text, period text, target float8,
                                               tolerance float8, effective_from timestamptz, created_by text)),
     stored AS (
       SELECT x.i, s.target = x.target AND s.tolerance IS NOT DISTINCT FROM x.tolerance AS same,
              s.setpoint_id::float8 AS setpoint_id, s.room_id, s.quantity, s.period, s.target, s.tolerance,
              s.effective_from, ${UTC_TEXT("s.effective_from")} AS effective_from_utc, s.created_by
       FROM x JOIN setpoints s
         ON (s.room_id, s.quantity, s.period, s.effective_from) = (x.room_id, x.quantity, x.period, x.ef)),
     ins AS (
       INSERT INTO setpoints (room_id, quantity, period, target, tolerance, effective_from, created_by)
       SELECT room_id, quantity, period, target, tolerance, ef, created_by FROM x
       WHERE NOT EXISTS (SELECT FROM stored WHERE NOT same)
       ON CONFLICT (room_id, quantity, period, effective_from) DO NOTHING
       RETURNING ${SETPOINT_COLUMNS})
     SELECT x.i, 'inserted' AS how, ins.* FROM x
       JOIN ins ON (ins.room_id, ins.quantity, ins.period, ins.effective_from) = (x.room_id, x.quantity, x.period, x.ef)
     UNION ALL
     SELECT i, CASE WHEN same THEN 'same' ELSE 'clash' END, setpoint_id, room_id, quantity, period, target, tolerance,
            effective_from, effective_from_utc, created_by FROM stored
     ORDER BY i`,
    [JSON.stringify(rows.map((r, i) => ({ ...r, i })))],
  );
  const byIndex = new Map(out.map((r) => [r.i, r]));
  const clashes: { index: number; existing: SetpointRow | null }[] = out
    .filter((r) => r.how === "clash")
    .map((r) => ({ index: r.i, existing: strip(r) }));
  // a key stored by another writer after this statement's snapshot: neither inserted nor seen
  if (!clashes.length)
    rows.forEach((_, i) => {
      if (!byIndex.has(i)) clashes.push({ index: i, existing: null });
    });
  if (clashes.length) throw new SetpointClash(clashes);
  return out.map(strip);
}

function strip({ i: _i, how: _how, ...row }: SetpointRow & { i: number; how: string }): SetpointRow {
  return row;
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
