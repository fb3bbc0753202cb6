#!/usr/bin/env node
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { z } from "zod";
import { describeFailure } from "../db/migrate/failures.js";
import { migrateOptionsSchema, runMigration } from "../db/migrate/migrate.js";
import { createProgress } from "../db/migrate/progress.js";
import { formatReport, writeReport } from "../db/migrate/report-text.js";
import { loadSite } from "../db/site.js";
import { loadConfig } from "./runtime/config.js";
import { ConfigError } from "./runtime/errors.js";
import { projectPath } from "./runtime/paths.js";
import { runMain } from "./runtime/shutdown.js";
import { withStackEnv } from "./runtime/stack-env.js";

const USAGE = `usage: migrate_to_normalized_schema [options]
Moves every numeric reading of the legacy can_messages table into measurement,
in batches planned from the data, each committed with a checkpoint (an
interrupted run resumes), then verifies per sensor per day. The legacy table
is only read.

  --table NAME            legacy table, "table" or "schema.table" (default can_messages)
  --time-column NAME      default: the first of timestamp, created_at, time
  --node-column NAME      default node_id
  --data-column NAME      default decoded_data
  --type-column NAME      default message_type (if present)
  --legacy-time-zone TZ   zone of a time column without time zone (default UTC)
  --ambiguous WHICH       a local time the fall-back hour makes ambiguous: earlier
                          (default: the first of the two instants) or later
  --batch-rows N          legacy rows per batch, at most (default 100000; fewer
                          for a small table so each session gets several)
  --batch DURATION        instead: one batch per time range of 6h, 1d, ... that
                          holds rows
  --max-batches N         stop after N batches (run again to resume)
  --dry-run               print what would be created and moved; write nothing
  --verify-only           only compare legacy and measurement per sensor per day
  --undo                  delete what earlier runs of this table wrote (rows with
                          status 'migrated' in their range) and their checkpoints,
                          and recompute the aggregates over that range
  --no-verify             skip the verification after migrating
  --skip-unmapped         leave out rows of node ids the site file does not map (reported)
  --skip-unknown-keys     leave out keys the site file does not name (reported)
  --ignore-checkpoint     run every batch again (writes nothing twice)
  --work-mem SIZE         work_mem per batch (default 128MB)
  --parallel N            batches in flight at once, one session each (default 2)
  --report PATH           report file (JSON; a .txt summary beside it)
                          default: $CEA_STATE_DIR or .state/, migration-report.json
  --database-url URL      default $CEA_DATABASE_URL, else the local stack (ops/stack.sh)
  --site FILE             default $CEA_SITE_FILE

exit status: 0 done and verified (or undone); 1 error, or stopped before the end
(--max-batches, a signal, unmapped nodes, unknown keys, nothing to move, a dry
run that would stop): run again to resume; 2 verification mismatch.`;

const argsSchema = z.object({
  "max-batches": z.coerce.number().int().positive().optional(),
  "batch-rows": z.coerce.number().int().positive().optional(),
  parallel: z.coerce.number().int().positive().optional(),
  "database-url": z
    .string()
    .refine((u) => {
      try {
        return ["postgres:", "postgresql:"].includes(new URL(u).protocol);
      } catch {
        return false;
      }
    }, "expected postgresql://user@host:port/database")
    .optional(),
});

function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        table: { type: "string" },
        "time-column": { type: "string" },
        "node-column": { type: "string" },
        "data-column": { type: "string" },
        "type-column": { type: "string" },
        "legacy-time-zone": { type: "string" },
        batch: { type: "string" },
        "max-batches": { type: "string" },
        "batch-rows": { type: "string" },
        "dry-run": { type: "boolean", default: false },
        "verify-only": { type: "boolean", default: false },
        "no-verify": { type: "boolean", default: false },
        "skip-unmapped": { type: "boolean", default: false },
        "skip-unknown-keys": { type: "boolean", default: false },
        "ignore-checkpoint": { type: "boolean", default: false },
        undo: { type: "boolean", default: false },
        ambiguous: { type: "string" },
        "work-mem": { type: "string" },
        parallel: { type: "string" },
        report: { type: "string" },
        "database-url": { type: "string" },
        site: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    // node's own wording names the option ("Unknown option '--x'", "argument missing")
    throw new ConfigError(`${(err as Error).message.replace(/\s*\n\s*/g, " ")} (--help lists the options)`);
  }
}

async function main(): Promise<void> {
  const { values } = parseCommandLine();
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const config = loadConfig(withStackEnv());
  const args = argsSchema.safeParse(values);
  if (!args.success)
    throw new ConfigError(args.error.issues.map((i) => `--${String(i.path[0])}: ${i.message}`).join("\n"));
  const parsed = migrateOptionsSchema.safeParse({
    table: values.table,
    timeColumn: values["time-column"],
    nodeColumn: values["node-column"],
    dataColumn: values["data-column"],
    typeColumn: values["type-column"],
    legacyTimeZone: values["legacy-time-zone"],
    ambiguous: values.ambiguous,
    undo: values.undo,
    batch: values.batch,
    maxBatches: args.data["max-batches"],
    batchRows: args.data["batch-rows"],
    dryRun: values["dry-run"],
    verifyOnly: values["verify-only"],
    verify: !values["no-verify"],
    skipUnmapped: values["skip-unmapped"],
    skipUnknownKeys: values["skip-unknown-keys"],
    ignoreCheckpoint: values["ignore-checkpoint"],
    workMem: values["work-mem"],
    parallel: args.data.parallel,
  });
  if (!parsed.success)
    throw new ConfigError(parsed.error.issues.map((i) => `--${String(i.path[0])}: ${i.message}`).join("\n"));
  if ([parsed.data.dryRun, parsed.data.verifyOnly, parsed.data.undo].filter(Boolean).length > 1)
    throw new ConfigError("--dry-run, --verify-only and --undo exclude each other");
  const site = await loadSite(projectPath(values.site ?? config.CEA_SITE_FILE));
  const reportPath = values.report ?? join(process.env.CEA_STATE_DIR ?? projectPath(".state"), "migration-report.json");

  // The migration's view, functions and mapping are session-local: one client
  // here, and one more per further batch in flight (runMigration ends those).
  const newClient = async () => {
    const c = new pg.Client({
      connectionString: args.data["database-url"] ?? config.CEA_DATABASE_URL,
      application_name: "cea-migrate",
    });
    await c.connect();
    return c;
  };
  const client = await newClient().catch((err: unknown) => {
    throw describeFailure(err, args.data["database-url"] ?? config.CEA_DATABASE_URL);
  });
  // First signal: finish the batches in hand (each commits with its checkpoint),
  // then stop; a second one exits at once (open batches roll back).
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (abort.signal.aborted) process.exit(1);
    process.stderr.write(`\n${signal}: stopping after the batches in hand (again to abort them)\n`);
    abort.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const report = await runMigration(client, site, parsed.data, {
      progress: createProgress(process.stderr),
      signal: abort.signal,
      connect: newClient,
    }).catch((err: unknown) => {
      throw describeFailure(err, args.data["database-url"] ?? config.CEA_DATABASE_URL);
    });
    const files = await writeReport(report, reportPath);
    process.stdout.write(formatReport(report));
    process.stdout.write(`report: ${files.json} and ${files.text}\n`);
    if (report.verification && !report.verification.ok) process.exitCode = 2;
    else if (report.mode === "dry-run" && report.problems.length) process.exitCode = 1;
    else if (report.stopped_early || abort.signal.aborted) {
      // stopped (--max-batches, a signal): not done yet, one meaning of exit 1
      process.stderr.write(
        `stopped: ${report.batches.remaining} batch(es) remain; run the same command again to resume\n`,
      );
      process.exitCode = 1;
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

runMain(main);
