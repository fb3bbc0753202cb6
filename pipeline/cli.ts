#!/usr/bin/env node
import { parseArgs } from "node:util";
import { createPool, poolSettings } from "../db/pool.js";
import {
  AGGREGATES,
  applySchema,
  edition,
  formatVerifyReport,
  rebuildAggregates,
  refreshAggregate,
  setRetention,
  verifySchema,
} from "../db/schema.js";
import { loadSite, sensorsWithoutKind, syncSite } from "../db/site.js";
import { loadCanDb } from "./can/candb.js";
import { buildCommandTable } from "./can/commands.js";
import { cycleIntervals } from "./can/intervals.js";
import { buildDecodeTable } from "./can/table.js";
import { loadConfig } from "./runtime/config.js";
import { projectPath } from "./runtime/paths.js";
import { runMain } from "./runtime/shutdown.js";
import { withStackEnv } from "./runtime/stack-env.js";

const USAGE = `usage: cea <command>
  schema apply            apply the migrations the database lacks (db/migrations/), then verify
  schema verify [--json]  check every table, key, index, hypertable, aggregate and policy; exit 1 if anything is missing
  site check              validate the site file, and its signals and actuator commands against the CAN database
  site sync               upsert the site file into the metadata tables (a new facility time zone rebuilds the daily aggregate)
  aggregates refresh      bring the aggregates up to date: Apache edition, the buckets written since the last
                          refresh; Community edition, a refresh of the continuous aggregates
  aggregates rebuild      recompute both aggregates from every stored raw row (after loading data around the
                          platform's writers); never the current bucket, never before the retention horizon
  retention set <interval>  drop raw measurements older than <interval> (at least "7 days"; e.g. "400 days");
                          the aggregates stay: no refresh reaches back to dropped rows
  retention off           keep raw measurements forever (the default)`;

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { json: { type: "boolean", default: false }, help: { type: "boolean", short: "h" } },
  });
  const [group, action] = positionals;
  if (values.help || !group) {
    process.stdout.write(`${USAGE}\n`);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const config = loadConfig(withStackEnv());
  const siteFile = projectPath(config.CEA_SITE_FILE);

  if (group === "site" && action === "check") {
    const site = await loadSite(siteFile);
    // every sensor signal and actuator command must be in the CAN database (ConfigError names each one that is not)
    const candb = loadCanDb(projectPath(config.CEA_CAN_DB_FILE));
    buildDecodeTable(candb, site, siteFile);
    buildCommandTable(candb, site, siteFile);
    const sensors = site.devices.reduce((n, d) => n + d.sensors.length, 0);
    process.stdout.write(
      `${siteFile}: OK (${site.rooms.length} rooms, ${site.devices.length} devices, ${sensors} sensors, ${site.actuators.length} actuators)\n`,
    );
    const kindless = sensorsWithoutKind(site);
    if (kindless.length)
      process.stdout.write(
        `warning: sensors without a kind appear in no panel or alert that selects by kind: ${kindless.join(", ")}\n`,
      );
    return;
  }

  const pool = createPool(config.CEA_DATABASE_URL, {
    max: 2,
    application: "cea-cli",
    // operator commands (schema apply, aggregate rebuilds) may rightly run long: no statement limit
    ...poolSettings(config),
    statementTimeoutMs: 0,
  });
  try {
    const key = `${group} ${action ?? ""}`.trim();
    switch (key) {
      case "schema apply": {
        const m = await applySchema(pool);
        process.stdout.write(
          m.applied.length
            ? `migrations applied: ${m.applied.map((x) => `${String(x.version).padStart(4, "0")}_${x.name}`).join(", ")} (${m.alreadyApplied} were already applied)\n`
            : `migrations: all ${m.alreadyApplied} already applied\n`,
        );
        const report = await verifySchema(pool);
        process.stdout.write(`${formatVerifyReport(report)}\n`);
        if (!report.ok) process.exitCode = 1;
        break;
      }
      case "schema verify": {
        const report = await verifySchema(pool);
        process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatVerifyReport(report)}\n`);
        if (!report.ok) process.exitCode = 1;
        break;
      }
      case "site sync": {
        const site = await loadSite(siteFile);
        const defaultIntervalS = cycleIntervals(loadCanDb(projectPath(config.CEA_CAN_DB_FILE)), site);
        const client = await pool.connect();
        try {
          const r = await syncSite(client, site, { defaultIntervalS });
          process.stdout.write(
            `site synced from ${siteFile}: ${r.rooms} rooms, ${r.racks} racks, ${r.devices} devices, ${r.sensors} sensors\n`,
          );
          process.stdout.write(
            r.daily_timezone.changed
              ? `daily aggregates now in local days of ${r.daily_timezone.zone} (rebuilt)\n`
              : `daily aggregates in local days of ${r.daily_timezone.zone}\n`,
          );
          if (r.unlisted_sensors.length)
            process.stdout.write(`kept (not in the site file, have history): ${r.unlisted_sensors.join(", ")}\n`);
        } finally {
          client.release();
        }
        break;
      }
      case "aggregates refresh": {
        if ((await edition(pool)) === "community") {
          for (const agg of AGGREGATES) await refreshAggregate(pool, agg);
          process.stdout.write("aggregates: continuous aggregates refreshed up to the start of the current bucket\n");
        } else {
          const { rows } = await pool.query<{ n: number }>("SELECT cea_refresh_aggregates() AS n");
          process.stdout.write(`aggregates: ${rows[0]?.n ?? 0} hourly buckets recomputed\n`);
        }
        break;
      }
      case "aggregates rebuild": {
        await rebuildAggregates(pool);
        process.stdout.write("aggregates: rebuilt from the stored raw rows\n");
        break;
      }
      case "retention set":
      case "retention off": {
        const keep = action === "off" ? null : positionals.slice(2).join(" ");
        if (keep === "") throw new Error('retention set needs an interval, e.g. cea retention set "400 days"');
        await setRetention(pool, keep);
        process.stdout.write(keep ? `raw-data retention: drop after ${keep}\n` : "raw-data retention: off\n");
        break;
      }
      default:
        process.stderr.write(`unknown command: ${key}\n${USAGE}\n`);
        process.exitCode = 2;
    }
  } finally {
    await pool.end();
  }
}

runMain(main);
