import type pg from "pg";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { type Options, sql } from "./options.js";

// Source discovery: the legacy table's columns (overrides win), the privileges
// the run needs, the legacy time zone, and the session's view over the table.
//
// The view cea_legacy_src exposes
//   raw           the time column in its own type (what every range predicate
//                 compares, so an index on the column serves);
//   ts            the instant (timestamptz): the column itself, or a local time
//                 read in the legacy zone (ambiguous fall-back times as
//                 --ambiguous says, nonexistent spring-forward times moved
//                 forward by the gap);
//   dst           'ambiguous' | 'nonexistent' | NULL, for the report;
//   node_id       bigint (a node id beyond integer is an unmapped node, not an error);
//   data          jsonb (a json \u0000, which jsonb cannot hold, becomes U+FFFD:
//                 a non-numeric string, counted);
//   nul, dup_keys the row had a \u0000 / a duplicated json key (json keeps the last);
//   message_type.
// and the functions pg_temp.cea_raw_lo(ts) / cea_raw_hi(ts): for an instant
// range [s, e), the bounds of raw that can hold it (raw >= lo(s) AND raw < hi(e)
// AND ts >= s AND ts < e selects it exactly, through the index).

export interface LegacySource {
  schema: string;
  table: string;
  timeColumn: string;
  timeWithZone: boolean;
  nodeColumn: string;
  dataColumn: string;
  typeColumn: string | null;
  dataType: "json" | "jsonb";
  timeIndexed: boolean;
  /** the zone local times are read in; null for a timestamptz column */
  timeZone: string | null;
  /** which instant an ambiguous local time is read as; null for a timestamptz column */
  ambiguous: Options["ambiguous"] | null;
  /** the checkpoint key */
  key: string;
}

interface ColumnRow {
  schema: string;
  name: string;
  type: string;
  usage: boolean;
  can_select: boolean;
  role: string;
}

/** Stops with the reason when the zone name is not one PostgreSQL knows. */
export async function checkZone(db: pg.ClientBase, zone: string): Promise<void> {
  try {
    await db.query("SELECT now() AT TIME ZONE $1", [zone]);
  } catch (err) {
    if ((err as { code?: string }).code === "22023")
      throw new ConfigError(
        `--legacy-time-zone: unknown time zone ${JSON.stringify(zone)}; use an IANA name such as Europe/Berlin or America/New_York`,
      );
    throw err;
  }
}

/** Find the legacy table's columns (overrides win) and create the session view over it. */
export async function openSource(db: pg.ClientBase, o: Options): Promise<LegacySource> {
  await checkZone(db, o.legacyTimeZone);
  const dot = o.table.indexOf(".");
  const schemaArg = dot > 0 ? o.table.slice(0, dot) : null;
  const table = dot > 0 ? o.table.slice(dot + 1) : o.table;
  const { rows: cols } = await db.query<ColumnRow>(await sql("columns"), [schemaArg, table]);
  if (cols.length === 0) throw new ConfigError(`legacy table ${o.table} not found (use --table to name it)`);
  const first = cols[0]!;
  const schema = first.schema;
  const qualified = `${db.escapeIdentifier(schema)}.${db.escapeIdentifier(table)}`;
  if (!first.usage)
    throw new ConfigError(
      `role ${first.role} lacks the USAGE privilege on schema ${schema}: GRANT USAGE ON SCHEMA ${db.escapeIdentifier(schema)} TO ${db.escapeIdentifier(first.role)}, or connect as the owner (--database-url)`,
    );
  if (!first.can_select)
    throw new ConfigError(
      `role ${first.role} lacks the SELECT privilege on the legacy table ${schema}.${table}: GRANT SELECT ON ${qualified} TO ${db.escapeIdentifier(first.role)}, or connect as the owner (--database-url)`,
    );
  const found = cols.map((c) => `${c.name} (${c.type})`).join(", ");
  const col = (name: string | undefined, what: string, flag: string, types: RegExp) => {
    const c = cols.find((x) => x.name === name);
    if (!c)
      throw new ConfigError(
        `legacy table ${schema}.${table}: no ${what} column ${name ?? "(timestamp, created_at or time)"}; ` +
          `columns found: ${found}. Name it with ${flag}.`,
      );
    if (!types.test(c.type))
      throw new ConfigError(
        `legacy table ${schema}.${table}: ${what} column ${c.name} has type ${c.type}; columns found: ${found}`,
      );
    return c;
  };
  const timeName = o.timeColumn ?? ["timestamp", "created_at", "time"].find((n) => cols.some((c) => c.name === n));
  const time = col(timeName, "time", "--time-column", /^timestamp/);
  const node = col(o.nodeColumn, "node", "--node-column", /^(smallint|integer|bigint)$/);
  const data = col(o.dataColumn, "data", "--data-column", /^jsonb?$/);
  const typeName = o.typeColumn ?? (cols.some((c) => c.name === "message_type") ? "message_type" : undefined);
  const type = typeName === undefined ? null : col(typeName, "message type", "--type-column", /./);
  const withZone = /with time zone$/.test(time.type);
  const idx = await db.query<{ indexed: boolean }>(await sql("time_index"), [schema, table, time.name]);
  const indexed = idx.rows[0]?.indexed === true;
  const t = db.escapeIdentifier(time.name);
  const tsExpr = withZone
    ? { ts: t, dst: "NULL::text", lo: "$1", hi: "$1", rawType: "timestamptz" }
    : await naiveTime(db, qualified, t, o, indexed);
  const d = db.escapeIdentifier(data.name);
  const json = data.type === "json";
  const dataExpr = json ? `pg_temp.cea_legacy_jsonb(${d})` : d;
  await db.query(`
    CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_json_clean(j json) RETURNS json
    LANGUAGE sql IMMUTABLE AS $f$
      SELECT CASE WHEN strpos(j::text, '\\u0000') = 0 THEN j
             ELSE regexp_replace(j::text, '(?<!\\\\)((?:\\\\\\\\)*)\\\\u0000', '\\1\\\\ufffd', 'g')::json END
    $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_jsonb(j json) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $f$ SELECT pg_temp.cea_legacy_json_clean(j)::jsonb $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_raw_lo(s timestamptz) RETURNS ${tsExpr.rawType}
    LANGUAGE sql IMMUTABLE AS $f$ SELECT ${tsExpr.lo.replace("$1", "s")} $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_raw_hi(s timestamptz) RETURNS ${tsExpr.rawType}
    LANGUAGE sql IMMUTABLE AS $f$ SELECT ${tsExpr.hi.replace("$1", "s")} $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_raw_of(ms bigint) RETURNS ${tsExpr.rawType}
    LANGUAGE sql IMMUTABLE AS $f$ SELECT to_timestamp(ms / 1000.0)${withZone ? "" : " AT TIME ZONE 'UTC'"} $f$;
    CREATE OR REPLACE TEMP VIEW cea_legacy_src AS
    SELECT ${t} AS raw, ${tsExpr.ts} AS ts, ${tsExpr.dst} AS dst,
           ${db.escapeIdentifier(node.name)}::bigint AS node_id, ${dataExpr} AS data,
           ${json ? `strpos(${d}::text, '\\u0000') > 0` : "false"} AS nul,
           ${
             json
               ? `CASE WHEN json_typeof(${d}) = 'object' THEN (SELECT count(*) FROM json_object_keys(pg_temp.cea_legacy_json_clean(${d}))) <> (SELECT count(*) FROM jsonb_object_keys(${dataExpr})) ELSE false END`
               : "false"
           } AS dup_keys,
           ${type ? `${db.escapeIdentifier(type.name)}::text` : "NULL::text"} AS message_type
    FROM ${qualified}`);
  return {
    schema,
    table,
    timeColumn: time.name,
    timeWithZone: withZone,
    nodeColumn: node.name,
    dataColumn: data.name,
    typeColumn: type?.name ?? null,
    dataType: json ? "json" : "jsonb",
    timeIndexed: indexed,
    timeZone: withZone ? null : o.legacyTimeZone,
    ambiguous: withZone ? null : o.ambiguous,
    key: `${schema}.${table}(${time.name},${node.name},${data.name})`,
  };
}

/**
 * A local time column: the instant of a local time, exact near the zone's
 * offset changes (pg_temp.cea_legacy_utc) and a plain AT TIME ZONE elsewhere
 * (one conversion per row where nothing can be ambiguous).
 */
async function naiveTime(db: pg.ClientBase, qualified: string, t: string, o: Options, indexed: boolean) {
  const z = db.escapeLiteral(o.legacyTimeZone);
  const { rows: b } = await db.query<{ lo: string | null; hi: string | null }>(
    `SELECT min(${t})::text AS lo, max(${t})::text AS hi FROM ${qualified}`,
  );
  const lo = b[0]?.lo ?? null;
  const hi = b[0]?.hi ?? null;
  let minOff = 0;
  let maxOff = 0;
  let windows: string[] = [];
  if (lo !== null && hi !== null) {
    const { rows } = await db.query<{ min_off_s: number; max_off_s: number; change_days: string[] }>(
      await sql("zone"),
      [o.legacyTimeZone, lo, hi],
    );
    minOff = rows[0]!.min_off_s;
    maxOff = rows[0]!.max_off_s;
    // local times that can be ambiguous or nonexistent lie within a day of the
    // UTC day of a change; keep only windows that hold rows (an index probe each)
    windows = rows[0]!.change_days;
    if (indexed && windows.length) {
      const { rows: held } = await db.query<{ d: string }>(
        `SELECT to_char(d, 'YYYY-MM-DD') AS d FROM unnest($1::date[]) AS d
         WHERE EXISTS (SELECT 1 FROM ${qualified} WHERE ${t} >= d - 1 AND ${t} < d + 2)`,
        [windows],
      );
      windows = held.map((r) => r.d);
    }
  }
  const later = o.ambiguous === "later";
  await db.query(`
    CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_candidates(x timestamp) RETURNS timestamptz[]
    LANGUAGE sql IMMUTABLE AS $f$
      -- the instants whose local time is x: the offsets a day before and after
      -- (a change in between is the only way there can be two, or none)
      SELECT array(SELECT DISTINCT c FROM (VALUES
          ((x - ((((x AT TIME ZONE 'UTC') - INTERVAL '1 day') AT TIME ZONE ${z}) - (x - INTERVAL '1 day'))) AT TIME ZONE 'UTC'),
          ((x - ((((x AT TIME ZONE 'UTC') + INTERVAL '1 day') AT TIME ZONE ${z}) - (x + INTERVAL '1 day'))) AT TIME ZONE 'UTC')
        ) AS v(c) WHERE (c AT TIME ZONE ${z}) = x ORDER BY c)
    $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_utc(x timestamp) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE AS $f$
      SELECT CASE cardinality(c)
        WHEN 0 THEN x AT TIME ZONE ${z}  -- nonexistent: PostgreSQL moves it forward by the gap
        WHEN 1 THEN c[1]
        ELSE c[${later ? "cardinality(c)" : "1"}] END
      FROM (SELECT pg_temp.cea_legacy_candidates(x) AS c) s
    $f$;
    CREATE OR REPLACE FUNCTION pg_temp.cea_legacy_dst(x timestamp) RETURNS text
    LANGUAGE sql IMMUTABLE AS $f$
      SELECT CASE cardinality(pg_temp.cea_legacy_candidates(x)) WHEN 0 THEN 'nonexistent' WHEN 1 THEN NULL ELSE 'ambiguous' END
    $f$`);
  const near = windows.map((d) => `(${t} >= DATE '${d}' - 1 AND ${t} < DATE '${d}' + 2)`).join(" OR ");
  return {
    ts: near
      ? `CASE WHEN ${near} THEN pg_temp.cea_legacy_utc(${t}) ELSE ${t} AT TIME ZONE ${z} END`
      : `${t} AT TIME ZONE ${z}`,
    dst: near ? `CASE WHEN ${near} THEN pg_temp.cea_legacy_dst(${t}) END` : "NULL::text",
    // raw = instant + the offset in use, which lies between the zone's smallest and largest
    lo: `($1 AT TIME ZONE 'UTC') + INTERVAL '${minOff} seconds'`,
    hi: `($1 AT TIME ZONE 'UTC') + INTERVAL '${maxOff} seconds'`,
    rawType: "timestamp",
  };
}
