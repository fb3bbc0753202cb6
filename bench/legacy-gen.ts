#!/usr/bin/env node
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { z } from "zod";
import type { Site } from "../db/site.js";
import { loadSite } from "../db/site.js";
import { loadConfig } from "../pipeline/runtime/config.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { runMain } from "../pipeline/runtime/shutdown.js";
import { withStackEnv } from "../pipeline/runtime/stack-env.js";

// Realistic legacy data: a `can_messages` table as the old system filled it,
// generated set-based inside PostgreSQL (generate_series), so 10 million rows
// take minutes, not hours. Used by the migration tests and the benchmark.
//
// The layout is a pure function of the frame number f (0-based), documented
// here and reimplemented in `expectedCounts` (JavaScript), so tests get exact
// expected counts without trusting the migration or the SQL below:
//   node      nodes[f % nodes.length]; nodes = the site's node ids ascending, then `extraNodes`
//   tick      floor(f / nodes.length); every node sends one frame per tick
//   message   the node's messages (site signals grouped by message) in turn: messages[tick % count]
//   time      start + tick * intervalMs + nodeIndex * 7 ms + (tick % 1000) µs
//   keys      the message's sensors (legacy names from the site file), j = 0, 1, ...;
//             with `unknownKey`, node index 0 adds "leaf_wetness_b" on every 7th tick
//   kind      h = (f * 7919 + j * 104729) % 997: h < 50 numeric string ("23.40"; h < 10 padded
//             with spaces), < 60 null, < 65 boolean, < 68 nested object, < 70 array,
//             < 73 "ERR", 73 "NaN", 74 "Infinity", else a JSON number
//   copies    f % 53 == 7: the frame is stored twice (exact duplicate);
//             f % 211 == 11: once more with every JSON-number value + 0.5 (a conflict)
// Values are plausible for the sensor (a daily cycle plus seeded noise); only
// the values depend on the seed, so the counts do not.

export const legacyGenOptionsSchema = z.object({
  frames: z.number().int().min(1),
  seed: z.number().int().default(1),
  schema: z.string().default("public"),
  table: z.string().default("can_messages"),
  timeColumn: z.string().default("timestamp"),
  start: z.iso.datetime({ offset: true }).default("2024-01-01T00:00:00Z"),
  intervalMs: z.number().int().min(100).default(10_000),
  /** node ids the site file does not know (their keys are "dry_bulb_x", "rh_x") */
  extraNodes: z.array(z.number().int().min(0)).default([]),
  unknownKey: z.boolean().default(false),
  /** index on the time column, as deployed installations have */
  index: z.boolean().default(true),
});
export type LegacyGenOptions = z.input<typeof legacyGenOptionsSchema>;
type Opts = z.infer<typeof legacyGenOptionsSchema>;

export const VALUE_KINDS = [
  "number",
  "numeric_string",
  "null",
  "boolean",
  "object",
  "array",
  "non_numeric_string",
  "out_of_range",
] as const;
export type ValueKind = (typeof VALUE_KINDS)[number];

interface GenMessage {
  node_ix: number;
  msg_ix: number;
  nmsg: number;
  node_id: number;
  can_id: number;
  message_type: string;
  keys: string[];
  base: number[];
  amp: number[];
  digits: number[];
}

const PROFILES: [RegExp, number, number, number][] = [
  [/^dry_bulb_o$/, 12, 6, 2],
  [/^dry_bulb/, 24, 3, 2],
  [/^wet_bulb/, 19, 2, 2],
  [/^rh/, 60, 10, 1],
  [/^dew_point/, 15, 2, 2],
  [/^co2/, 800, 200, 0],
  [/^vpd/, 1.1, 0.3, 3],
  [/^par/, 600, 500, 1],
  [/^leaf_temp/, 23, 3, 2],
  [/^substrate_temp/, 21, 1, 2],
  [/^substrate_moisture/, 45, 5, 1],
  [/^wind_speed/, 4, 3, 2],
  [/^pressure/, 1013, 5, 1],
];
const profile = (key: string): [number, number, number] => {
  const p = PROFILES.find(([re]) => re.test(key));
  return p ? [p[1], p[2], p[3]] : [10, 1, 2];
};

export const UNKNOWN_KEY = "leaf_wetness_b";
const EXTRA_NODE_KEYS = ["dry_bulb_x", "rh_x"];

/** The per-node message layout the generator and `expectedCounts` share. */
export function legacyMessages(site: Site, opts: Pick<Opts, "extraNodes">): GenMessage[][] {
  const devices = [...site.devices].sort((a, b) => a.node_id - b.node_id);
  const perNode: { node_id: number; msgs: { type: string; keys: string[] }[] }[] = devices.map((d) => {
    const byMsg = new Map<string, string[]>();
    for (const s of d.sensors) {
      const msg = s.signal
        .split(".")[0]!
        .replace(/_N\d+$/, "")
        .toLowerCase();
      byMsg.set(msg, [...(byMsg.get(msg) ?? []), s.name]);
    }
    return { node_id: d.node_id, msgs: [...byMsg].map(([type, keys]) => ({ type, keys })) };
  });
  for (const n of opts.extraNodes) perNode.push({ node_id: n, msgs: [{ type: "climate", keys: EXTRA_NODE_KEYS }] });
  return perNode.map((n, node_ix) =>
    n.msgs.map((m, msg_ix) => {
      const prof = m.keys.map(profile);
      return {
        node_ix,
        msg_ix,
        nmsg: n.msgs.length,
        node_id: n.node_id,
        can_id: 0x100 + n.node_id * 16 + msg_ix,
        message_type: m.type,
        keys: m.keys,
        base: prof.map((p) => p[0]),
        amp: prof.map((p) => p[1]),
        digits: prof.map((p) => p[2]),
      };
    }),
  );
}

export function kindOf(f: number, j: number): ValueKind {
  const h = (f * 7919 + j * 104729) % 997;
  if (h < 50) return "numeric_string";
  if (h < 60) return "null";
  if (h < 65) return "boolean";
  if (h < 68) return "object";
  if (h < 70) return "array";
  if (h < 75) return "non_numeric_string";
  return "number";
}

/** The timestamp of frame f, ISO 8601 with microseconds. */
export function frameTime(o: Pick<Opts, "start" | "intervalMs">, f: number, nodes: number): string {
  const tick = Math.floor(f / nodes);
  const us = Date.parse(o.start) * 1000 + tick * o.intervalMs * 1000 + (f % nodes) * 7000 + (tick % 1000);
  return `${new Date(Math.floor(us / 1000)).toISOString().slice(0, 19)}.${String(us % 1_000_000).padStart(6, "0")}Z`;
}

/** Frames for about `rows` legacy rows (duplicates included). */
export function framesForRows(rows: number): number {
  return Math.max(1, Math.round(rows / (1 + 1 / 53 + 1 / 211)));
}

export interface SensorExpectation {
  /** distinct timestamps with a numeric value: the rows the migration must write */
  numeric: number;
  /** every occurrence in the legacy table (copies included), by kind */
  kinds: Partial<Record<ValueKind, number>>;
  /** timestamps whose copies disagree */
  conflicts: number;
}

export interface Expected {
  rows: number;
  frames: number;
  sensors: Record<string, SensorExpectation>;
  /** legacy rows per unmapped node id */
  unmappedRows: Record<number, number>;
  /** occurrences of keys the site file does not name, on mapped nodes */
  unknownKeys: Record<string, number>;
  first: string;
  last: string;
}

/** Exact counts of the generated data, computed from the layout above in JavaScript. */
export function expectedCounts(site: Site, input: LegacyGenOptions): Expected {
  const o = legacyGenOptionsSchema.parse(input);
  const layout = legacyMessages(site, o);
  const mapped = new Set(site.devices.map((d) => d.node_id));
  const nn = layout.length;
  const sensors: Record<string, SensorExpectation> = {};
  const unmappedRows: Record<number, number> = {};
  const unknownKeys: Record<string, number> = {};
  let rows = 0;
  for (let f = 0; f < o.frames; f++) {
    const ni = f % nn;
    const tick = Math.floor(f / nn);
    const msgs = layout[ni]!;
    const m = msgs[tick % msgs.length]!;
    const dup = f % 53 === 7 ? 1 : 0;
    const conflict = f % 211 === 11 ? 1 : 0;
    const copies = 1 + dup + conflict;
    rows += copies;
    if (!mapped.has(m.node_id)) {
      unmappedRows[m.node_id] = (unmappedRows[m.node_id] ?? 0) + copies;
      continue;
    }
    m.keys.forEach((key, j) => {
      const k = kindOf(f, j);
      const e = sensors[key] ?? { numeric: 0, kinds: {}, conflicts: 0 };
      sensors[key] = e;
      e.kinds[k] = (e.kinds[k] ?? 0) + copies;
      if (k === "number" || k === "numeric_string") e.numeric++;
      if (k === "number" && conflict) e.conflicts++;
    });
    if (o.unknownKey && ni === 0 && tick % 7 === 0) unknownKeys[UNKNOWN_KEY] = (unknownKeys[UNKNOWN_KEY] ?? 0) + copies;
  }
  return {
    rows,
    frames: o.frames,
    sensors,
    unmappedRows,
    unknownKeys,
    first: frameTime(o, 0, nn),
    last: frameTime(o, o.frames - 1, nn),
  };
}

// The value of key j of frame f as JSON, by kind; copy 3 is the conflicting one.
const GENERATE = `
WITH frames AS (
  SELECT f, m.node_id, m.can_id, m.message_type, m.keys, m.base, m.amp, m.digits,
         $2::timestamptz + make_interval(secs => ((f / $3::int) * $4::bigint * 1000 + (f % $3::int) * 7000
                                                  + (f / $3::int) % 1000)::float8 / 1e6) AS ts
  FROM generate_series(0::bigint, $1::bigint - 1) AS f
  JOIN cea_gen_msg m ON m.node_ix = f % $3::int AND m.msg_ix = (f / $3::int) % m.nmsg
)
SELECT fr.ts, fr.node_id, fr.can_id, fr.message_type,
       decode(lpad(to_hex(hashint8extended(fr.f, $5::bigint)), 16, '0'), 'hex') AS raw_data,
       (SELECT jsonb_object_agg(k.key,
          CASE
            WHEN h < 50 AND h < 10 THEN to_jsonb(' ' || round(v::numeric, 2)::text || ' ')
            WHEN h < 50 THEN to_jsonb(round(v::numeric, 2)::text)
            WHEN h < 60 THEN 'null'::jsonb
            WHEN h < 65 THEN to_jsonb(h % 2 = 0)
            WHEN h < 68 THEN jsonb_build_object('value', round(v::numeric, k.digits), 'raw', h)
            WHEN h < 70 THEN jsonb_build_array(round(v::numeric, k.digits))
            WHEN h < 73 THEN '"ERR"'::jsonb
            WHEN h = 73 THEN '"NaN"'::jsonb
            WHEN h = 74 THEN '"Infinity"'::jsonb
            ELSE to_jsonb(round(v::numeric, k.digits) + CASE WHEN c.copy = 3 THEN 0.5 ELSE 0 END)
          END)
        FROM unnest(fr.keys, fr.base, fr.amp, fr.digits) WITH ORDINALITY AS k(key, base, amp, digits, o)
        CROSS JOIN LATERAL (SELECT ((fr.f * 7919 + (k.o - 1) * 104729) % 997)::int AS h,
          k.base + k.amp * sin(2 * pi() * extract(epoch FROM fr.ts)::float8 / 86400.0)
                 + k.amp * 0.1 * ((hashint8extended(fr.f * 64 + k.o, $5::bigint) & 2047) / 1023.5 - 1) AS v) AS x
       ) || CASE WHEN $6::boolean AND fr.f % $3::int = 0 AND (fr.f / $3::int) % 7 = 0
                 THEN jsonb_build_object('${UNKNOWN_KEY}', 0.5) ELSE '{}'::jsonb END AS decoded_data
FROM frames fr
CROSS JOIN LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE fr.f % 53 = 7
                    UNION ALL SELECT 3 WHERE fr.f % 211 = 11) AS c
ORDER BY fr.f, c.copy`;

/** Create and fill the legacy table (it must not exist yet). Returns the rows written. */
export async function generateLegacy(db: pg.ClientBase, site: Site, input: LegacyGenOptions): Promise<number> {
  const o = legacyGenOptionsSchema.parse(input);
  const layout = legacyMessages(site, o).flat();
  const id = (s: string) => db.escapeIdentifier(s);
  const table = `${id(o.schema)}.${id(o.table)}`;
  await db.query(`CREATE TABLE ${table} (
    id bigserial PRIMARY KEY, ${id(o.timeColumn)} timestamptz, node_id integer, can_id integer,
    message_type text, raw_data bytea, decoded_data jsonb)`);
  await db.query("DROP TABLE IF EXISTS pg_temp.cea_gen_msg");
  await db.query(
    `CREATE TEMP TABLE cea_gen_msg AS SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
       node_ix int, msg_ix int, nmsg int, node_id int, can_id int, message_type text,
       keys text[], base float8[], amp float8[], digits int[])`,
    [JSON.stringify(layout)],
  );
  const nodes = new Set(layout.map((m) => m.node_ix)).size;
  const res = await db.query(
    `INSERT INTO ${table} (${id(o.timeColumn)}, node_id, can_id, message_type, raw_data, decoded_data) ${GENERATE}`,
    [o.frames, o.start, nodes, o.intervalMs, o.seed, o.unknownKey],
  );
  if (o.index) await db.query(`CREATE INDEX ON ${table} (${id(o.timeColumn)})`);
  await db.query(`ANALYZE ${table}`);
  await db.query("DROP TABLE cea_gen_msg");
  return res.rowCount ?? 0;
}

const USAGE = `usage: node dist/bench/legacy-gen.js --rows N [--seed S] [--table can_messages] [--time-column timestamp]
       [--start ISO] [--interval-ms 10000] [--extra-node ID]... [--unknown-key] [--no-index]
Creates and fills the legacy table in CEA_DATABASE_URL (the table must not exist).`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: "string" },
      seed: { type: "string", default: "1" },
      table: { type: "string", default: "can_messages" },
      "time-column": { type: "string", default: "timestamp" },
      start: { type: "string", default: "2024-01-01T00:00:00Z" },
      "interval-ms": { type: "string", default: "10000" },
      "extra-node": { type: "string", multiple: true, default: [] },
      "unknown-key": { type: "boolean", default: false },
      "no-index": { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.rows) {
    process.stdout.write(`${USAGE}\n`);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const config = loadConfig(withStackEnv());
  const site = await loadSite(projectPath(config.CEA_SITE_FILE));
  const client = new pg.Client({ connectionString: config.CEA_DATABASE_URL });
  await client.connect();
  try {
    const started = Date.now();
    const rows = await generateLegacy(client, site, {
      frames: framesForRows(Number(values.rows)),
      seed: Number(values.seed),
      table: values.table,
      timeColumn: values["time-column"],
      start: values.start,
      intervalMs: Number(values["interval-ms"]),
      extraNodes: values["extra-node"].map(Number),
      unknownKey: values["unknown-key"],
      index: !values["no-index"],
    });
    process.stdout.write(`${rows} legacy rows written to ${values.table} in ${(Date.now() - started) / 1000}s\n`);
  } finally {
    await client.end();
  }
}

// A CLI when run directly; a library when imported (tests, the benchmark).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) runMain(main);
