import type pg from "pg";
import type { Site } from "../site.js";
import { type Options, sql } from "./options.js";
import type { NodeReport, UnknownKey } from "./report.js";
import { type LegacySource, openSource } from "./source.js";

// Mapping: legacy node ids and keys to the site file's devices and sensors
// (the site file is the only source of metadata), and what the legacy table
// holds per node.

/** name: the legacy key (the sensor's legacy_key, else its name) */
export type SensorMapping = { node_id: number; name: string; sensor_id: number; off: number }[];

export function siteMapping(site: Site): SensorMapping {
  return site.devices.flatMap((d) =>
    d.sensors.map((s) => ({
      node_id: d.node_id,
      name: s.legacy_key ?? s.name,
      sensor_id: s.id,
      off: s.calibration_offset,
    })),
  );
}

/** One session's private objects: classification functions, the view over the legacy table, the mapping. */
export async function prepareSession(db: pg.ClientBase, o: Options, mapping: SensorMapping): Promise<LegacySource> {
  await db.query(await sql("functions"));
  const src = await openSource(db, o);
  await db.query(await sql("map"), [JSON.stringify(mapping)]);
  return src;
}

interface NodeRow {
  node_id: string | null;
  message_type: string | null;
  legacy_rows: string;
  first: string | null;
  last: string | null;
  not_object: string;
  no_time: string;
  ambiguous: string;
  nonexistent: string;
  nul: string;
  dup_keys: string;
}

export interface LegacyContent {
  nodes: NodeReport[];
  /** first and last instant of the mapped nodes' rows */
  first: string | null;
  last: string | null;
  noTime: number;
  notObject: number;
  ambiguous: number;
  nonexistent: number;
  nul: number;
  dupKeys: number;
}

/** One scan of the legacy table: rows per node and message type, matched to the site's devices. */
export async function scanNodes(db: pg.ClientBase, site: Site): Promise<LegacyContent> {
  const { rows } = await db.query<NodeRow>(await sql("nodes"));
  const deviceByNode = new Map(site.devices.map((d) => [d.node_id, d]));
  const nodes = new Map<number | null, NodeReport>();
  const c: LegacyContent = {
    nodes: [],
    first: null,
    last: null,
    noTime: 0,
    notObject: 0,
    ambiguous: 0,
    nonexistent: 0,
    nul: 0,
    dupKeys: 0,
  };
  for (const r of rows) {
    c.noTime += Number(r.no_time);
    c.notObject += Number(r.not_object);
    c.ambiguous += Number(r.ambiguous);
    c.nonexistent += Number(r.nonexistent);
    c.nul += Number(r.nul);
    c.dupKeys += Number(r.dup_keys);
    const nodeId = r.node_id === null ? null : Number(r.node_id);
    const dev = nodeId === null ? undefined : deviceByNode.get(nodeId);
    const room = dev ? site.rooms.find((x) => x.id === dev.room_id) : undefined;
    const n = nodes.get(nodeId) ?? {
      node_id: nodeId,
      mapped: dev !== undefined,
      device: dev?.name ?? null,
      device_type: dev?.type ?? null,
      room: room?.name ?? null,
      rack: room?.racks.find((k) => k.id === dev?.rack_id)?.name ?? null,
      message_types: {},
      legacy_rows: 0,
      not_object_rows: 0,
      first: null,
      last: null,
    };
    n.message_types[r.message_type ?? "(none)"] = Number(r.legacy_rows);
    n.legacy_rows += Number(r.legacy_rows);
    n.not_object_rows += Number(r.not_object);
    if (r.first && (n.first === null || r.first < n.first)) n.first = r.first;
    if (r.last && (n.last === null || r.last > n.last)) n.last = r.last;
    nodes.set(nodeId, n);
    if (dev && r.first && (c.first === null || r.first < c.first)) c.first = r.first;
    if (dev && r.last && (c.last === null || r.last > c.last)) c.last = r.last;
  }
  c.nodes = [...nodes.values()];
  return c;
}

/** Keys of mapped nodes that name no sensor of the node's device. */
export async function unknownKeys(db: pg.ClientBase, site: Site, mapping: SensorMapping): Promise<UnknownKey[]> {
  const { rows } = await db.query<{ node_id: string | null; key: string; n: string }>(await sql("keys"));
  const known = new Set(mapping.map((s) => `${s.node_id}\u0000${s.name}`));
  const owner = new Map(mapping.map((s) => [s.name, s.node_id]));
  const nodes = new Set(site.devices.map((d) => d.node_id));
  return rows
    .filter((k) => k.node_id !== null && nodes.has(Number(k.node_id)) && !known.has(`${k.node_id}\u0000${k.key}`))
    .map((k) => ({ node_id: Number(k.node_id), key: k.key, n: Number(k.n), sensor_of_node: owner.get(k.key) ?? null }));
}

/** What syncing the site file would add (dry run): ids the database does not have yet. */
export async function wouldCreate(
  db: pg.ClientBase,
  site: Site,
): Promise<{ rooms: string[]; devices: string[]; sensors: string[] }> {
  const have = async (table: "room" | "device" | "sensor") =>
    new Set((await db.query<{ id: number }>(`SELECT ${table}_id AS id FROM ${table}`)).rows.map((r) => r.id));
  const [rooms, devices, sensors] = [await have("room"), await have("device"), await have("sensor")];
  return {
    rooms: site.rooms.filter((r) => !rooms.has(r.id)).map((r) => r.name),
    devices: site.devices.filter((d) => !devices.has(d.id)).map((d) => d.name),
    sensors: site.devices
      .flatMap((d) => d.sensors)
      .filter((s) => !sensors.has(s.id))
      .map((s) => s.name),
  };
}
