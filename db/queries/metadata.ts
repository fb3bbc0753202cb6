import type { Queryable } from "../pool.js";

// Read queries over the metadata chain facility ← zone ← room ← rack ← device ← sensor.

export interface SensorInfo {
  id: number;
  name: string;
  unit: string;
  data_type: string;
  channel: number;
  calibration_offset: number;
  device_id: number;
  device_name: string;
  room_id: number;
  room_name: string;
  rack_id: number | null;
  /** What it measures (sensor_kind), NULL when the site file gives it none. */
  kind: string | null;
  quantity: string | null;
}

const SENSOR_SELECT = `SELECT s.sensor_id AS id, s.name, s.unit, s.data_type, s.channel, s.calibration_offset,
       d.device_id, d.name AS device_name, r.room_id, r.name AS room_name, d.rack_id, s.kind, k.quantity
FROM sensor s JOIN device d ON d.device_id = s.device_id JOIN room r ON r.room_id = d.room_id
LEFT JOIN sensor_kind k ON k.kind = s.kind`;

export interface SensorFilter {
  room_id?: number | undefined;
  device_id?: number | undefined;
  unit?: string | undefined;
  kind?: string | undefined;
}

export async function listSensors(db: Queryable, f: SensorFilter = {}): Promise<SensorInfo[]> {
  const { rows } = await db.query<SensorInfo>(
    `${SENSOR_SELECT}
     WHERE ($1::int IS NULL OR r.room_id = $1) AND ($2::int IS NULL OR d.device_id = $2) AND ($3::text IS NULL OR s.unit = $3)
       AND ($4::text IS NULL OR s.kind = $4)
     ORDER BY s.sensor_id`,
    [f.room_id ?? null, f.device_id ?? null, f.unit ?? null, f.kind ?? null],
  );
  return rows;
}

export async function getSensor(db: Queryable, id: number): Promise<SensorInfo | undefined> {
  const { rows } = await db.query<SensorInfo>(`${SENSOR_SELECT} WHERE s.sensor_id = $1`, [id]);
  return rows[0];
}

export interface Facility {
  id: number;
  name: string;
  timezone: string;
}

/** The appliance serves one facility: the one with the lowest id. */
export async function getFacility(db: Queryable): Promise<Facility | undefined> {
  const { rows } = await db.query<Facility>(
    "SELECT facility_id AS id, name, timezone FROM facility ORDER BY facility_id LIMIT 1",
  );
  return rows[0];
}

export interface RoomRow {
  id: number;
  name: string;
  zone_id: number | null;
  target_vpd: number | null;
  target_temp: number | null;
}
export interface RackRow {
  id: number;
  room_id: number;
  name: string;
}
export interface DeviceRow {
  id: number;
  room_id: number;
  rack_id: number | null;
  name: string;
  type: string;
  node_id: number | null;
}

export interface FacilityRows {
  facility: Facility | undefined;
  rooms: RoomRow[];
  racks: RackRow[];
  devices: DeviceRow[];
  sensors: SensorInfo[];
}

/** Everything the facility tree needs, one query per level. */
export async function facilityRows(db: Queryable): Promise<FacilityRows> {
  const facility = await getFacility(db);
  const rooms = await db.query<RoomRow>(
    `SELECT room_id AS id, name, zone_id, target_vpd, target_temp FROM room
     WHERE facility_id = $1 ORDER BY room_id`,
    [facility?.id ?? null],
  );
  const racks = await db.query<RackRow>("SELECT rack_id AS id, room_id, name FROM rack ORDER BY rack_id");
  const devices = await db.query<DeviceRow>(
    "SELECT device_id AS id, room_id, rack_id, name, device_type AS type, node_id FROM device ORDER BY device_id",
  );
  return {
    facility,
    rooms: rooms.rows,
    racks: racks.rows,
    devices: devices.rows,
    sensors: await listSensors(db),
  };
}

/** Ids of every sensor with its room, for the API's sensor cache. */
export async function sensorRooms(db: Queryable): Promise<{ id: number; room_id: number }[]> {
  const { rows } = await db.query<{ id: number; room_id: number }>(
    "SELECT s.sensor_id AS id, d.room_id FROM sensor s JOIN device d ON d.device_id = s.device_id",
  );
  return rows;
}

export async function roomIds(db: Queryable): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>("SELECT room_id AS id FROM room");
  return rows.map((r) => r.id);
}

export async function getRoom(db: Queryable, id: number): Promise<{ id: number; name: string } | undefined> {
  const { rows } = await db.query<{ id: number; name: string }>(
    "SELECT room_id AS id, name FROM room WHERE room_id = $1",
    [id],
  );
  return rows[0];
}
