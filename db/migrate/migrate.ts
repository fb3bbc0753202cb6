import type pg from "pg";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { edition } from "../schema.js";
import { type Site, syncSite } from "../site.js";
import { refreshAggregates } from "./aggregates.js";
import { runBatches } from "./batches.js";
import { checkpoints, checkpointsIfAny, requireCheckpointTable, totalsFromCheckpoints } from "./checkpoints.js";
import { missingPrivileges } from "./failures.js";
import { prepareSession, scanNodes, siteMapping, unknownKeys, wouldCreate } from "./mapping.js";
import { iso, type MigrateOptions, migrateOptionsSchema, sql } from "./options.js";
import { batchesByRows, findOutliers, planWindows, rowTarget, uncovered, uncoveredRows, type Window } from "./plan.js";
import type { ProgressSink } from "./progress.js";
import { emptyReport, finishSensors, type MigrationReport, newSensor, type SensorReport } from "./report.js";
import { outlierMessage, unknownKeysMessage, unmappedMessage } from "./report-text.js";
import { undoRuns } from "./undo.js";
import { verify } from "./verify.js";

export { batchMs, type MigrateOptions, migrateOptionsSchema } from "./options.js";
export { uncovered } from "./plan.js";

// The legacy migration: every numeric reading of `can_messages` (or however an
// installation named it) into `measurement`, set-based inside PostgreSQL in
// batches planned from the data, each committed with its checkpoint. This
// module puts the steps together: source discovery (source.ts), mapping
// (mapping.ts), planning (plan.ts), batches (batches.ts), aggregates
// (aggregates.ts), verification (verify.ts), undo (undo.ts); the SQL is in
// db/migrate/*.sql, each file with its contract.

export interface MigrateIo {
  progress: ProgressSink;
  /** checked between batches: a stop request finishes the batches in hand, then stops */
  signal?: AbortSignal;
  /** opens one more session on the same database for batches in parallel; runMigration ends it */
  connect?: () => Promise<pg.Client>;
}

/** Run the migration (or its dry run, the verification alone, or the undo); returns the report. */
export async function runMigration(
  db: pg.ClientBase,
  site: Site,
  input: MigrateOptions,
  io: MigrateIo,
): Promise<MigrationReport> {
  const o = migrateOptionsSchema.parse(input);
  const mode = o.dryRun ? "dry-run" : o.verifyOnly ? "verify-only" : o.undo ? "undo" : "migrate";
  const startedAt = new Date().toISOString();
  const ed = await edition(db);
  const mapping = siteMapping(site);
  const src = await prepareSession(db, o, mapping);
  if (mode === "migrate") await requireCheckpointTable(db);
  const missing = await missingPrivileges(db, mode === "migrate" || mode === "undo" ? mode : "read");
  if (missing.length)
    throw new ConfigError(
      `role ${(await db.query<{ r: string }>("SELECT current_user AS r")).rows[0]!.r} lacks the privilege ${missing.join("; ")}: grant it, or connect as the schema owner (--database-url)`,
    );
  const sensorName = new Map(mapping.map((s) => [s.sensor_id, s.name]));
  const report = emptyReport(mode, startedAt, ed, src, o);
  const warn = (w: string) => {
    report.warnings.push(w);
    io.progress.line(`warning: ${w}`);
  };
  if (mode === "undo") {
    report.undone = await undoRuns(db, ed, src.key);
    report.finished_at = new Date().toISOString();
    return report;
  }
  if (!src.timeIndexed)
    warn(
      `no index on ${src.table}.${src.timeColumn}: every batch scans the whole legacy table. ` +
        "Use a larger --batch, or have the DBA add an index on the column (the migration never changes the legacy table).",
    );

  // --- what the legacy table holds, and the plan
  io.progress.line(`scanning ${src.schema}.${src.table} (time column ${src.timeColumn}) ...`);
  const content = await scanNodes(db, site);
  Object.assign(report, {
    range: { first: content.first, last: content.last },
    nodes: content.nodes,
    rows_without_time: content.noTime,
    rows_not_object: content.notObject,
    rows_with_nul: content.nul,
    rows_with_duplicate_keys: content.dupKeys,
  });
  report.local_times.ambiguous = content.ambiguous;
  report.local_times.nonexistent = content.nonexistent;
  if (content.ambiguous)
    warn(
      `${content.ambiguous} local time(s) fall in a fall-back hour of ${src.timeZone} and are ambiguous: ` +
        `read as the ${o.ambiguous} instant (--ambiguous earlier|later); frames of the two hours with the same local time merge`,
    );
  if (content.nonexistent)
    warn(
      `${content.nonexistent} local time(s) fall in a spring-forward gap of ${src.timeZone} and do not exist: ` +
        "moved forward by the gap",
    );
  if (content.nul) warn(`${content.nul} row(s) hold a \\u0000 in their json: counted as non-numeric strings`);
  if (content.dupKeys) warn(`${content.dupKeys} row(s) repeat a json key: the last value of each is the one read`);
  const unmapped = content.nodes.filter((n) => !n.mapped).map((n) => ({ node_id: n.node_id, rows: n.legacy_rows }));
  report.unmapped_nodes = unmapped;
  const mappedNodes = content.nodes.filter((n) => n.mapped).map((n) => n.node_id as number);
  // --verify-only needs the windows only, not their counts
  const plan = await planWindows(db, src, o, mode !== "verify-only");
  const windows = plan.windows;
  // without --batch: batches of about `target` legacy rows
  const target = plan.rows
    ? rowTarget(
        plan.rows.reduce((a, n) => a + n, 0),
        o,
      )
    : null;
  const allBatches = plan.rows && target ? batchesByRows(windows, plan.rows, target).batches : windows;
  if (target) report.batch = `about ${target} legacy rows (windows of 1h)`;
  report.batches.total = allBatches.length;
  report.outliers = await findOutliers(db, windows);
  if (report.outliers.length) io.progress.line(outlierMessage(report.outliers, mode === "dry-run"));

  if (mode !== "verify-only") {
    report.unknown_keys = await unknownKeys(db, site, mapping);
    if (unmapped.length) {
      if (!o.skipUnmapped) report.problems.push(unmappedMessage(unmapped));
      else
        io.progress.line(
          `skipping ${unmapped.reduce((a, u) => a + u.rows, 0)} rows of unmapped nodes (--skip-unmapped)`,
        );
    }
    if (report.unknown_keys.length) {
      if (!o.skipUnknownKeys) report.problems.push(unknownKeysMessage(report.unknown_keys, site));
      else io.progress.line(`skipping ${report.unknown_keys.length} unknown key(s) (--skip-unknown-keys)`);
    }
    const rowsWithTime = content.nodes.reduce((a, n) => a + n.legacy_rows, 0) - content.noTime;
    if (mappedNodes.length === 0 && rowsWithTime > 0 && o.skipUnmapped)
      report.problems.push(
        `nothing to migrate: every node of the ${rowsWithTime} legacy rows is unmapped (node ids ` +
          `${unmapped.map((u) => u.node_id ?? "NULL").join(", ")}). Map them to devices in the site file.`,
      );
  }

  if (mode === "dry-run") {
    report.would_create = await wouldCreate(db, site);
    report.sensors = await dryRunSensors(db, allBatches, sensorName);
    report.finished_at = new Date().toISOString();
    return report;
  }
  if (report.problems.length && mode === "migrate") throw new ConfigError(report.problems.join("\n\n"));

  if (mode === "migrate") {
    const done = await checkpoints(db, src.key);
    const column = `${src.schema}.${src.table}.${src.timeColumn}`;
    const other = done.find((c) => c.time_zone !== null && c.time_zone !== src.timeZone);
    if (other)
      throw new ConfigError(
        `earlier runs read ${column} in time zone ${other.time_zone}, this one in ${src.timeZone}: ` +
          `rerun with --legacy-time-zone ${other.time_zone}, or undo those runs first (--undo --legacy-time-zone ${other.time_zone})`,
      );
    // the same for the reading of fall-back hours (NULL: a checkpoint of a
    // version that did not record it, which cannot be told apart)
    const otherChoice = done.find((c) => c.ambiguous !== null && c.ambiguous !== src.ambiguous);
    if (otherChoice)
      throw new ConfigError(
        `earlier runs read the ambiguous local times of ${column} as the ${otherChoice.ambiguous} instant ` +
          `(--ambiguous ${otherChoice.ambiguous}), this one as the ${src.ambiguous} (--ambiguous ${src.ambiguous}): ` +
          `rerun with --ambiguous ${otherChoice.ambiguous}, or undo those runs first (--undo)`,
      );
    report.site_sync = await syncSite(db, site);
    const doneWindows = done.map((c): Window => [Date.parse(c.batch_start), Date.parse(c.batch_end)]);
    const todo =
      o.ignoreCheckpoint || done.length === 0
        ? allBatches
        : plan.rows && target
          ? (() => {
              const parts = uncoveredRows(windows, plan.rows, doneWindows);
              return batchesByRows(parts.windows, parts.rows, target).batches;
            })()
          : uncovered(windows, doneWindows);
    if (!o.ignoreCheckpoint) report.batches.total = done.length + todo.length;
    report.batches.before_this_run = done.length;
    const totalRows = content.nodes.reduce((a, n) => a + n.legacy_rows, 0) - content.noTime;
    const doneRows = o.ignoreCheckpoint ? 0 : done.reduce((a, c) => a + Number(c.legacy_rows), 0);
    const t0 = Date.now();
    io.progress.start(totalRows, "legacy rows");
    const at = todo.length ? iso(todo[0]![0]) : "";
    io.progress.update(
      doneRows,
      0,
      !at ? "nothing left to move" : done.length ? `resuming at ${at}` : `starting at ${at}`,
    );
    const moved = await runBatches(db, src, o, mapping, {
      todo,
      limit: Math.min(todo.length, o.maxBatches ?? todo.length),
      startRows: doneRows,
      progress: io.progress,
      signal: io.signal,
      connect: io.connect,
      onRetry: (what) => io.progress.line(what),
    });
    io.progress.finish();
    report.batches.this_run = moved.batches;
    report.this_run = {
      legacy_rows: moved.legacy_rows,
      values_seen: moved.values_seen,
      keys_numeric: moved.keys_numeric,
      inserted: moved.inserted,
      seconds: (Date.now() - t0) / 1000,
      retries: moved.retries,
    };
    report.batches.remaining = todo.length - moved.batches;
    report.stopped_early = report.batches.remaining > 0;
    report.aggregates = await refreshAggregates(db, ed, src.key, io.progress);
  }

  // totals over every committed batch, this run's and earlier ones'
  const committed = await checkpointsIfAny(db, src.key);
  Object.assign(report, totalsFromCheckpoints(committed, sensorName));
  // also with an empty legacy table when earlier runs moved rows: those are then all unaccounted for
  if (!report.stopped_early && o.verify && ((content.first && content.last) || committed.length > 0)) {
    report.verification = await verify(
      db,
      io.progress,
      windows,
      content.first,
      content.last,
      mappedNodes,
      sensorName,
      src.key,
    );
  }
  report.finished_at = new Date().toISOString();
  return report;
}

async function dryRunSensors(
  db: pg.ClientBase,
  windows: Window[],
  names: Map<number, string>,
): Promise<SensorReport[]> {
  const per = new Map<number, SensorReport>();
  const kinds = await sql("kinds");
  for (const [s, e] of windows) {
    const { rows } = await db.query<{ sensor_id: number; kind: string; n: string; keys: string }>(kinds, [
      iso(s),
      iso(e),
    ]);
    for (const r of rows) {
      const x = per.get(r.sensor_id) ?? newSensor(r.sensor_id, names);
      x.kinds[r.kind] = (x.kinds[r.kind] ?? 0) + Number(r.n);
      if (r.kind === "number" || r.kind === "numeric_string") x.rows += Number(r.keys);
      per.set(r.sensor_id, x);
    }
  }
  return finishSensors([...per.values()]);
}
