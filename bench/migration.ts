import { randomBytes } from "node:crypto";
import pg from "pg";
import { runMigration } from "../db/migrate/migrate.js";
import type { ProgressSink } from "../db/migrate/progress.js";
import { applySchema } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { projectPath } from "../pipeline/paths.js";
import { framesForRows, generateLegacy } from "./legacy-gen.js";
import type { Bench, BenchRow } from "./lib.js";

// Issue 5's benchmark: the legacy migration on 10 million generated legacy rows
// (x scale) in a fresh database, against a plain INSERT … SELECT of the same
// values without any checks (no conversion of strings, no conflict handling,
// no checkpoint, no aggregates) into an empty copy of measurement: the ceiling.
// Both read the same legacy table after the same warm-up scan.

const TARGET_RATE = 300_000;
const TARGET_RATIO = 0.7;

// The ceiling's copy of measurement: same columns, hypertable, same indexes
// but the key index not unique (duplicate frames would abort a statement
// without conflict handling).
const CEILING_TABLE = `
CREATE TABLE measurement_ceiling (LIKE measurement INCLUDING DEFAULTS);
SELECT create_hypertable('measurement_ceiling', 'time', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
CREATE INDEX ON measurement_ceiling (sensor_id, time DESC);
CREATE INDEX ON measurement_ceiling (time DESC);`;

const CEILING_INSERT = `
INSERT INTO measurement_ceiling (time, sensor_id, value, status)
SELECT l."timestamp", s.sensor_id, kv.value::float8, 'migrated'
FROM can_messages l
JOIN device d ON d.node_id = l.node_id
CROSS JOIN LATERAL jsonb_each(l.decoded_data) AS kv
JOIN sensor s ON s.device_id = d.device_id AND s.name = kv.key
WHERE jsonb_typeof(kv.value) = 'number'`;

const quiet = (log: (m: string) => void): ProgressSink => {
  let last = 0;
  return {
    start() {},
    update(done, measurements, note) {
      if (Date.now() - last < 10_000) return;
      last = Date.now();
      log(`  ${done} legacy rows, ${measurements} measurements (${note})`);
    },
    finish() {},
    line: log,
  };
};

const bench: Bench = async (ctx) => {
  const rows = Math.round(10_000_000 * ctx.scale);
  const name = `cea_bench_migration_${randomBytes(3).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ctx.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(ctx.databaseUrl);
  u.pathname = `/${name}`;
  const db = new pg.Client({ connectionString: u.toString() });
  await db.connect();
  try {
    const site = await loadSite(projectPath("ops/site.json"));
    await applySchema(db);
    await syncSite(db, site);
    // one frame per node every 5 s: 10 M rows are about 115 days of history
    const frames = framesForRows(rows);
    ctx.log(`generating ${rows} legacy rows (${frames} frames) ...`);
    let t = Date.now();
    const written = await generateLegacy(db, site, { frames, intervalMs: 5_000, seed: 1 });
    const genS = (Date.now() - t) / 1000;
    ctx.log(`  ${written} rows in ${genS.toFixed(1)} s`);
    await db.query("VACUUM ANALYZE can_messages");
    // same warm-up for both: one full read of the legacy table
    await db.query("SELECT count(*), sum(length(decoded_data::text)) FROM can_messages");

    ctx.log("migration ...");
    t = Date.now();
    const report = await runMigration(db, site, { batch: "1d", verify: false }, { progress: quiet(ctx.log) });
    const migS = (Date.now() - t) / 1000;
    const migrated = report.this_run.inserted;
    const moveS = report.this_run.seconds;
    ctx.log(`  ${migrated} measurements in ${migS.toFixed(1)} s (batches ${moveS.toFixed(1)} s)`);

    ctx.log("verification ...");
    t = Date.now();
    const verified = await runMigration(db, site, { batch: "1d", verifyOnly: true }, { progress: quiet(ctx.log) });
    const verS = (Date.now() - t) / 1000;
    if (!verified.verification?.ok) throw new Error("benchmark migration did not verify");

    ctx.log("ceiling: plain INSERT … SELECT ...");
    await db.query(CEILING_TABLE);
    t = Date.now();
    const ceil = await db.query(CEILING_INSERT);
    const ceilS = (Date.now() - t) / 1000;
    const ceilRows = ceil.rowCount ?? 0;
    ctx.log(`  ${ceilRows} rows in ${ceilS.toFixed(1)} s`);

    const ceilRate = ceilRows / ceilS;
    const migRate = migrated / migS;
    const out: BenchRow[] = [
      { case: "ceiling: plain INSERT … SELECT, no checks", value: Math.round(ceilRate), unit: "measurements/s" },
      {
        case: "migration (whole command, no verification)",
        value: Math.round(migRate),
        unit: "measurements/s",
        baseline: "ceiling: plain INSERT … SELECT, no checks",
        ratio: migRate / ceilRate,
        target: `>= ${TARGET_RATE.toLocaleString("en-US")}/s and >= ${TARGET_RATIO} of the ceiling`,
        met: migRate >= TARGET_RATE && migRate / ceilRate >= TARGET_RATIO,
        note: "includes the legacy scans (nodes, keys), site sync, checkpoints and aggregate refresh",
      },
      {
        case: "migration batches only",
        value: Math.round(migrated / moveS),
        unit: "measurements/s",
        baseline: "ceiling: plain INSERT … SELECT, no checks",
        ratio: migrated / moveS / ceilRate,
      },
      {
        case: "verification (--verify-only)",
        value: Math.round(verified.verification.legacy_values / verS),
        unit: "values/s",
        note: "per sensor per day, legacy against measurement",
      },
      { case: "generator", value: Math.round(written / genS), unit: "legacy rows/s" },
    ];
    return {
      rows: out,
      params: { legacy_rows: written, measurements: migrated, ceiling_rows: ceilRows, batches: report.batches.total },
    };
  } finally {
    await db.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
};

export default bench;
