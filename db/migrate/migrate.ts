import { readFile } from "node:fs/promises";
import type pg from "pg";
import { z } from "zod";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { edition } from "../schema.js";
import { type Site, syncSite } from "../site.js";
import type { ProgressSink } from "./progress.js";
import {
  type BatchStats,
  type MigrationReport,
  type NodeReport,
  type SensorReport,
  unknownKeysMessage,
  unmappedMessage,
  type VerifyMismatch,
} from "./report.js";

// The legacy migration: every numeric reading of `can_messages` (or however an
// installation named it) into `measurement`, set-based inside PostgreSQL in
// bounded time-range batches, each committed with its checkpoint. The SQL is in
// db/migrate/*.sql, each file with its contract. The view over the legacy
// table, the classification functions and the sensor mapping are
// session-local: every session that runs batches sets them up first. Batches
// can run on more than one session at once (`parallel`, with `io.connect`);
// the aggregates are brought up to date once at the end, over the migrated range.

export const migrateOptionsSchema = z.object({
  /** "table" or "schema.table" */
  table: z.string().min(1).default("can_messages"),
  /** default: the first of timestamp, created_at, time that exists */
  timeColumn: z.string().min(1).optional(),
  nodeColumn: z.string().min(1).default("node_id"),
  dataColumn: z.string().min(1).default("decoded_data"),
  /** default: message_type when the table has it */
  typeColumn: z.string().min(1).optional(),
  /** zone of a time column without time zone */
  legacyTimeZone: z.string().default("UTC"),
  /** batch length: <n>s, <n>m, <n>h or <n>d */
  batch: z
    .string()
    .regex(/^[1-9][0-9]*[smhd]$/, "expected <n>s, <n>m, <n>h or <n>d, e.g. 1d or 6h")
    .default("1d"),
  /** stop after this many batches (resume later); for staged runs and the interruption test */
  maxBatches: z.number().int().positive().optional(),
  dryRun: z.boolean().default(false),
  verifyOnly: z.boolean().default(false),
  verify: z.boolean().default(true),
  skipUnmapped: z.boolean().default(false),
  skipUnknownKeys: z.boolean().default(false),
  /** run every batch again (idempotent) instead of resuming after the checkpoint */
  ignoreCheckpoint: z.boolean().default(false),
  workMem: z
    .string()
    .regex(/^[1-9][0-9]*(kB|MB|GB)$/)
    .default("128MB"),
  /** batches in flight at once, each on its own session (needs io.connect for more than 1) */
  parallel: z.number().int().min(1).max(8).default(2),
});
export type MigrateOptions = z.input<typeof migrateOptionsSchema>;
type Options = z.infer<typeof migrateOptionsSchema>;

const SQL_CACHE = new Map<string, string>();
async function sql(name: string): Promise<string> {
  let text = SQL_CACHE.get(name);
  if (text === undefined) {
    text = await readFile(projectPath(`db/migrate/${name}.sql`), "utf8");
    SQL_CACHE.set(name, text);
  }
  return text;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DAY = 86_400_000;
export function batchMs(batch: string): number {
  return Number(batch.slice(0, -1)) * UNITS[batch.slice(-1)]!;
}
const iso = (ms: number) => new Date(ms).toISOString();

export interface LegacySource {
  schema: string;
  table: string;
  timeColumn: string;
  timeWithZone: boolean;
  nodeColumn: string;
  dataColumn: string;
  typeColumn: string | null;
  timeIndexed: boolean;
  /** the checkpoint key */
  key: string;
}

/** Find the legacy table's columns (overrides win) and create the session view over it. */
export async function openSource(db: pg.ClientBase, o: Options): Promise<LegacySource> {
  const dot = o.table.indexOf(".");
  const schemaArg = dot > 0 ? o.table.slice(0, dot) : null;
  const table = dot > 0 ? o.table.slice(dot + 1) : o.table;
  const { rows: cols } = await db.query<{ schema: string; name: string; type: string }>(await sql("columns"), [
    schemaArg,
    table,
  ]);
  if (cols.length === 0) throw new ConfigError(`legacy table ${o.table} not found (use --table to name it)`);
  const schema = cols[0]!.schema;
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
  const withZone = time.type === "timestamp with time zone";
  const { rows } = await db.query<{ ddl: string }>(await sql("source"), [
    schema,
    table,
    time.name,
    withZone,
    node.name,
    data.name,
    type?.name ?? null,
    o.legacyTimeZone,
  ]);
  await db.query(rows[0]!.ddl);
  const idx = await db.query<{ indexed: boolean }>(await sql("time_index"), [schema, table, time.name]);
  return {
    schema,
    table,
    timeColumn: time.name,
    timeWithZone: withZone,
    nodeColumn: node.name,
    dataColumn: data.name,
    typeColumn: type?.name ?? null,
    timeIndexed: idx.rows[0]?.indexed === true,
    key: `${schema}.${table}(${time.name},${node.name},${data.name})`,
  };
}

interface NodeRow {
  node_id: number | null;
  message_type: string | null;
  legacy_rows: string;
  first: string | null;
  last: string | null;
  not_object: string;
  no_time: string;
}
interface BatchRow {
  legacy_rows: string;
  values_seen: string;
  keys_numeric: string;
  kinds: [number, string, number][];
  inserted_by_sensor: [number, number][];
  conflicts: [number, number][];
  conflict_samples: [number, string, number, number][];
}
interface CheckpointRow {
  batch_start: string;
  batch_end: string;
  legacy_rows: string;
  values_seen: string;
  keys_numeric: string;
  inserted: string;
  stats: BatchStats;
}
interface VerifyRow {
  sensor_id: number;
  day: string;
  legacy_n: string | null;
  measured_n: string | null;
  legacy_min: number | null;
  measured_min: number | null;
  legacy_max: number | null;
  measured_max: number | null;
  legacy_first: string | null;
  measured_first: string | null;
  legacy_last: string | null;
  measured_last: string | null;
}

export interface MigrateIo {
  progress: ProgressSink;
  /** checked between batches: a stop request finishes the batches in hand, then stops */
  signal?: AbortSignal;
  /** opens one more session on the same database for batches in parallel; runMigration ends it */
  connect?: () => Promise<pg.Client>;
}

type SensorMapping = { node_id: number; name: string; sensor_id: number; off: number }[];

/** One session's private objects: classification functions, the view over the legacy table, the mapping. */
async function prepareSession(db: pg.ClientBase, o: Options, mapping: SensorMapping): Promise<LegacySource> {
  await db.query(await sql("functions"));
  const src = await openSource(db, o);
  await db.query(await sql("map"), [JSON.stringify(mapping)]);
  return src;
}

/** The parts of the windows that no committed batch covers, in time order. */
export function uncovered(windows: [number, number][], done: [number, number][]): [number, number][] {
  const covered = [...done].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [ws, we] of windows) {
    let s = ws;
    for (const [cs, ce] of covered) {
      if (ce <= s || cs >= we) continue;
      if (cs > s) out.push([s, cs]);
      s = Math.max(s, ce);
      if (s >= we) break;
    }
    if (s < we) out.push([s, we]);
  }
  return out;
}

/** Run the migration (or its dry run, or the verification alone); returns the report. */
export async function runMigration(
  db: pg.ClientBase,
  site: Site,
  input: MigrateOptions,
  io: MigrateIo,
): Promise<MigrationReport> {
  const o = migrateOptionsSchema.parse(input);
  const mode = o.dryRun ? "dry-run" : o.verifyOnly ? "verify-only" : "migrate";
  const startedAt = new Date().toISOString();
  const ed = await edition(db);
  const sensorsBySite: SensorMapping = site.devices.flatMap((d) =>
    d.sensors.map((s) => ({ node_id: d.node_id, name: s.name, sensor_id: s.id, off: s.calibration_offset })),
  );
  const src = await prepareSession(db, o, sensorsBySite);
  const sensorName = new Map(sensorsBySite.map((s) => [s.sensor_id, s.name]));
  const deviceByNode = new Map(site.devices.map((d) => [d.node_id, d]));
  if (!src.timeIndexed)
    io.progress.line(
      `warning: no index leads with ${src.table}.${src.timeColumn}: every batch scans the whole legacy table. ` +
        "Use a larger --batch, or have the DBA add an index (the migration never changes the legacy table).",
    );

  // --- what the legacy table holds
  io.progress.line(`scanning ${src.schema}.${src.table} (time column ${src.timeColumn}) ...`);
  const { rows: nodeRows } = await db.query<NodeRow>(await sql("nodes"));
  const nodes = new Map<number | null, NodeReport>();
  let noTimeRows = 0;
  let notObjectRows = 0;
  let first: string | null = null;
  let last: string | null = null;
  for (const r of nodeRows) {
    noTimeRows += Number(r.no_time);
    notObjectRows += Number(r.not_object);
    const dev = r.node_id === null ? undefined : deviceByNode.get(r.node_id);
    const room = dev ? site.rooms.find((x) => x.id === dev.room_id) : undefined;
    const n = nodes.get(r.node_id) ?? {
      node_id: r.node_id,
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
    nodes.set(r.node_id, n);
    if (dev && r.first && (first === null || r.first < first)) first = r.first;
    if (dev && r.last && (last === null || r.last > last)) last = r.last;
  }
  const nodeList = [...nodes.values()];
  const unmapped = nodeList.filter((n) => !n.mapped).map((n) => ({ node_id: n.node_id, rows: n.legacy_rows }));
  const mappedNodes = nodeList.filter((n) => n.mapped).map((n) => n.node_id as number);

  const report: MigrationReport = {
    mode,
    started_at: startedAt,
    finished_at: startedAt,
    edition: ed,
    source: {
      schema: src.schema,
      table: src.table,
      time_column: src.timeColumn,
      time_with_zone: src.timeWithZone,
      node_column: src.nodeColumn,
      data_column: src.dataColumn,
      type_column: src.typeColumn,
      time_indexed: src.timeIndexed,
    },
    range: { first, last },
    nodes: nodeList,
    unmapped_nodes: unmapped,
    unknown_keys: [],
    rows_without_time: noTimeRows,
    rows_not_object: notObjectRows,
    site_sync: null,
    would_create: null,
    batch: o.batch,
    batches: { total: 0, before_this_run: 0, this_run: 0, remaining: 0 },
    this_run: { legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, seconds: 0 },
    totals: { legacy_rows: 0, values_seen: 0, keys_numeric: 0, inserted: 0, already_present: 0, duplicates: 0 },
    sensors: [],
    conflicts: { total: 0, rule: "smallest value kept", samples: [] },
    aggregates: null,
    stopped_early: false,
    verification: null,
    problems: [],
  };

  if (mode !== "verify-only") {
    const { rows: keyRows } = await db.query<{ node_id: number | null; key: string; n: string }>(await sql("keys"));
    const known = new Set(sensorsBySite.map((s) => `${s.node_id}\u0000${s.name}`));
    const owner = new Map(sensorsBySite.map((s) => [s.name, s.node_id]));
    report.unknown_keys = keyRows
      .filter((k) => k.node_id !== null && deviceByNode.has(k.node_id) && !known.has(`${k.node_id}\u0000${k.key}`))
      .map((k) => ({
        node_id: k.node_id as number,
        key: k.key,
        n: Number(k.n),
        sensor_of_node: owner.get(k.key) ?? null,
      }));
  }
  if (unmapped.length && mode !== "verify-only") {
    if (!o.skipUnmapped) report.problems.push(unmappedMessage(unmapped));
    else
      io.progress.line(`skipping ${unmapped.reduce((a, u) => a + u.rows, 0)} rows of unmapped nodes (--skip-unmapped)`);
  }
  if (report.unknown_keys.length && mode !== "verify-only") {
    if (!o.skipUnknownKeys) report.problems.push(unknownKeysMessage(report.unknown_keys, site));
    else io.progress.line(`skipping ${report.unknown_keys.length} unknown key(s) (--skip-unknown-keys)`);
  }

  const step = batchMs(o.batch);
  const firstMs = first ? Date.parse(first) : 0;
  const lastMs = last ? Date.parse(last) : -1;
  const windows: [number, number][] = [];
  for (let s = Math.floor(firstMs / step) * step; first && s <= lastMs; s += step) windows.push([s, s + step]);
  report.batches.total = windows.length;

  if (mode === "dry-run") {
    report.would_create = await wouldCreate(db, site);
    if (first && last) {
      const { rows } = await db.query<{ sensor_id: number; kind: string; n: string; keys: string }>(
        await sql("kinds"),
        [iso(windows[0]![0]), iso(windows.at(-1)![1])],
      );
      const per = new Map<number, SensorReport>();
      for (const r of rows) {
        const s = per.get(r.sensor_id) ?? newSensor(r.sensor_id, sensorName);
        s.kinds[r.kind] = Number(r.n);
        if (r.kind === "number" || r.kind === "numeric_string") s.rows += Number(r.keys);
        per.set(r.sensor_id, s);
      }
      report.sensors = finishSensors([...per.values()]);
    }
    report.finished_at = new Date().toISOString();
    return report;
  }
  if (report.problems.length && mode === "migrate") throw new ConfigError(report.problems.join("\n\n"));

  if (mode === "migrate") {
    await db.query(await sql("checkpoint"));
    report.site_sync = await syncSite(db, site);
    const done = await checkpoints(db, src.key);
    const todo = o.ignoreCheckpoint
      ? windows
      : uncovered(
          windows,
          done.map((c): [number, number] => [Date.parse(c.batch_start), Date.parse(c.batch_end)]),
        );
    report.batches.before_this_run = done.length;
    const totalRows = nodeList.filter((n) => n.mapped).reduce((a, n) => a + n.legacy_rows, 0);
    const doneRows = o.ignoreCheckpoint ? 0 : done.reduce((a, c) => a + Number(c.legacy_rows), 0);
    const t0 = Date.now();
    io.progress.start(totalRows, "legacy rows");
    const at = todo.length ? iso(todo[0]![0]) : "";
    io.progress.update(
      doneRows,
      0,
      !at ? "nothing left to move" : done.length ? `resuming at ${at}` : `starting at ${at}`,
    );
    const batchSql = await sql("batch");
    const cpSql = await sql("checkpoint_insert");
    let rowsNow = doneRows;
    const limit = Math.min(todo.length, o.maxBatches ?? todo.length);

    // One batch: moved and recorded in one transaction, or neither.
    const runBatch = async (c: pg.ClientBase, s: number, e: number) => {
      await c.query("BEGIN");
      try {
        await c.query("SELECT set_config('work_mem', $1, true)", [o.workMem]);
        const b = (await c.query<BatchRow>(batchSql, [iso(s), iso(e)])).rows[0]!;
        const inserted = b.inserted_by_sensor.reduce((a, [, n]) => a + n, 0);
        const stats: BatchStats = {
          kinds: b.kinds,
          inserted: b.inserted_by_sensor,
          conflicts: b.conflicts,
          conflict_samples: b.conflict_samples,
        };
        await c.query(cpSql, [src.key, iso(s), iso(e), b.legacy_rows, b.values_seen, b.keys_numeric, inserted, stats]);
        await c.query("COMMIT");
        return { ...b, inserted };
      } catch (err) {
        await c.query("ROLLBACK").catch(() => undefined);
        throw err;
      }
    };

    // Batches are handed out in time order to `parallel` sessions; a stop
    // request, --max-batches or a failure stops the handing out and the
    // batches in hand finish. What committed is always recorded, so a gap
    // left by a batch that did not commit is moved by the next run.
    const sessions: pg.ClientBase[] = [db];
    const extra: pg.Client[] = [];
    let next = 0;
    let failed = false;
    const worker = async (c: pg.ClientBase) => {
      while (!failed && !io.signal?.aborted && next < limit) {
        const [s, e] = todo[next++]!;
        try {
          const b = await runBatch(c, s, e);
          report.batches.this_run++;
          report.this_run.legacy_rows += Number(b.legacy_rows);
          report.this_run.values_seen += Number(b.values_seen);
          report.this_run.keys_numeric += Number(b.keys_numeric);
          report.this_run.inserted += b.inserted;
          rowsNow += Number(b.legacy_rows);
          io.progress.update(rowsNow, report.this_run.inserted, `batch ${iso(s).slice(0, 16)}`);
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    };
    try {
      for (let i = 1; i < Math.min(o.parallel, limit) && io.connect; i++) {
        const c = await io.connect();
        extra.push(c);
        await prepareSession(c, o, sensorsBySite);
        sessions.push(c);
      }
      const settled = await Promise.allSettled(sessions.map(worker));
      const err = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (err) throw err.reason;
    } finally {
      for (const c of extra) await c.end();
    }
    io.progress.finish();
    report.this_run.seconds = (Date.now() - t0) / 1000;
    report.batches.remaining = todo.length - report.batches.this_run;
    report.stopped_early = report.batches.remaining > 0;
    report.aggregates = await refreshAggregates(db, ed, src.key, io);
  }

  // totals over every committed batch, this run's and earlier ones'
  const all = mode === "migrate" || mode === "verify-only" ? await checkpointsIfAny(db, src.key) : [];
  const per = new Map<number, SensorReport>();
  for (const c of all) {
    report.totals.legacy_rows += Number(c.legacy_rows);
    report.totals.values_seen += Number(c.values_seen);
    report.totals.keys_numeric += Number(c.keys_numeric);
    report.totals.inserted += Number(c.inserted);
    for (const [sid, kind, n] of c.stats.kinds) {
      const s = per.get(sid) ?? newSensor(sid, sensorName);
      s.kinds[kind] = (s.kinds[kind] ?? 0) + n;
      per.set(sid, s);
    }
    for (const [sid, n] of c.stats.inserted) {
      const s = per.get(sid) ?? newSensor(sid, sensorName);
      s.rows += n;
      per.set(sid, s);
    }
    for (const [sid, n] of c.stats.conflicts) {
      const s = per.get(sid) ?? newSensor(sid, sensorName);
      s.conflicts += n;
      report.conflicts.total += n;
      per.set(sid, s);
    }
    for (const [sid, t, kept, other] of c.stats.conflict_samples)
      if (report.conflicts.samples.length < 50)
        report.conflicts.samples.push({
          sensor_id: sid,
          sensor: sensorName.get(sid) ?? null,
          time: t,
          kept,
          also_seen: other,
        });
  }
  const numericOccurrences = [...per.values()].reduce(
    (a, s) => a + (s.kinds.number ?? 0) + (s.kinds.numeric_string ?? 0),
    0,
  );
  report.totals.duplicates = numericOccurrences - report.totals.keys_numeric;
  report.totals.already_present = report.totals.keys_numeric - report.totals.inserted;
  report.sensors = finishSensors([...per.values()]);

  if (!report.stopped_early && o.verify && first && last) {
    report.verification = await verify(db, io, first, last, mappedNodes, step, sensorName);
  }
  report.finished_at = new Date().toISOString();
  return report;
}

function newSensor(sensorId: number, names: Map<number, string>): SensorReport {
  return { sensor_id: sensorId, name: names.get(sensorId) ?? null, rows: 0, kinds: {}, skipped: 0, conflicts: 0 };
}

function finishSensors(list: SensorReport[]): SensorReport[] {
  for (const s of list) {
    s.skipped = Object.entries(s.kinds)
      .filter(([k]) => k !== "number" && k !== "numeric_string")
      .reduce((a, [, n]) => a + n, 0);
  }
  return list.sort((a, b) => a.sensor_id - b.sensor_id);
}

async function checkpoints(db: pg.ClientBase, key: string): Promise<CheckpointRow[]> {
  return (await db.query<CheckpointRow>(await sql("checkpoint_state"), [key])).rows;
}

async function checkpointsIfAny(db: pg.ClientBase, key: string): Promise<CheckpointRow[]> {
  const { rows } = await db.query<{ t: string | null }>("SELECT to_regclass('migration_checkpoint')::text AS t");
  return rows[0]?.t ? checkpoints(db, key) : [];
}

/** What syncing the site file would add (dry run): ids the database does not have yet. */
async function wouldCreate(db: pg.ClientBase, site: Site): Promise<NonNullable<MigrationReport["would_create"]>> {
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

/**
 * The aggregates over every committed batch not yet aggregated (this run's, and
 * those of a run that died before this step), widened to whole UTC days;
 * null when there is nothing to do.
 */
async function refreshAggregates(
  db: pg.ClientBase,
  ed: "community" | "apache",
  key: string,
  io: MigrateIo,
): Promise<MigrationReport["aggregates"]> {
  const { rows } = await db.query<{ start: string | null; end: string | null }>(await sql("aggregate_pending"), [key]);
  const r = rows[0];
  if (!r?.start || !r.end) return null;
  const from = iso(Math.floor(Date.parse(r.start) / DAY) * DAY);
  const to = iso(Math.ceil(Date.parse(r.end) / DAY) * DAY);
  io.progress.line(`aggregates ${from.slice(0, 10)} .. ${to.slice(0, 10)} ...`);
  if (ed === "community") {
    // outside any transaction block: the continuous aggregates over the range
    for (const view of ["measurement_hourly", "measurement_daily"])
      await db.query(await sql("refresh_community"), [view, from, to]);
    await db.query(await sql("aggregate_done"), [key, from, to]);
    return { edition: ed, method: "refresh_continuous_aggregate over the migrated range", from, to };
  }
  await db.query("BEGIN");
  try {
    await db.query(await sql("aggregate_apache"), [from, to]);
    await db.query(await sql("aggregate_done"), [key, from, to]);
    await db.query("COMMIT");
  } catch (err) {
    await db.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
  return {
    edition: ed,
    method: "hourly and daily tables recomputed from measurement over the migrated range",
    from,
    to,
  };
}

async function verify(
  db: pg.ClientBase,
  io: MigrateIo,
  first: string,
  last: string,
  nodes: number[],
  step: number,
  names: Map<number, string>,
): Promise<NonNullable<MigrationReport["verification"]>> {
  const chunk = Math.max(DAY, Math.floor(step / DAY) * DAY);
  const startMs = Math.floor(Date.parse(first) / DAY) * DAY;
  const endMs = Math.floor(Date.parse(last) / DAY) * DAY + DAY;
  const verifySql = await sql("verify");
  const mismatches: VerifyMismatch[] = [];
  let days = 0;
  let legacyValues = 0;
  let measuredRows = 0;
  const sensors = new Set<number>();
  io.progress.start((endMs - startMs) / DAY, "days verified");
  for (let s = startMs; s < endMs; s += chunk) {
    const e = Math.min(s + chunk, endMs);
    const { rows } = await db.query<VerifyRow>(verifySql, [iso(s), iso(e), first, last, nodes]);
    for (const r of rows) {
      days++;
      sensors.add(r.sensor_id);
      const ln = Number(r.legacy_n ?? 0);
      const mn = Number(r.measured_n ?? 0);
      legacyValues += ln;
      measuredRows += mn;
      const diffs: string[] = [];
      if (ln !== mn) diffs.push(`count legacy ${ln} vs measurement ${mn}`);
      if (r.legacy_min !== r.measured_min) diffs.push(`min ${r.legacy_min} vs ${r.measured_min}`);
      if (r.legacy_max !== r.measured_max) diffs.push(`max ${r.legacy_max} vs ${r.measured_max}`);
      if (r.legacy_first !== r.measured_first || r.legacy_last !== r.measured_last)
        diffs.push(`range ${r.legacy_first}..${r.legacy_last} vs ${r.measured_first}..${r.measured_last}`);
      if (diffs.length) mismatches.push({ ...r, sensor: names.get(r.sensor_id) ?? null, problems: diffs });
    }
    io.progress.update((e - startMs) / DAY, 0, `verified up to ${iso(e).slice(0, 10)}`);
  }
  io.progress.finish();
  return {
    ok: mismatches.length === 0,
    sensor_days: days,
    sensors: sensors.size,
    legacy_values: legacyValues,
    measurement_rows: measuredRows,
    mismatch_count: mismatches.length,
    mismatches: mismatches.slice(0, 1000),
  };
}
