#!/usr/bin/env node
import { createPool } from "../db/pool.js";
import { applySchema, formatVerifyReport, verifySchema } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { loadConfig } from "./config.js";
import { projectPath } from "./paths.js";
import { runMain } from "./shutdown.js";
import { withStackEnv } from "./stack-env.js";

// `npm run demo`: the whole system on its embedded defaults against the local
// stack that ops/stack.sh brought up.
async function main(): Promise<void> {
  const config = loadConfig(withStackEnv());
  const pool = createPool(config.CEA_DATABASE_URL, { max: 2, application: "cea-demo" });
  try {
    await applySchema(pool);
    const report = await verifySchema(pool);
    process.stdout.write(`${formatVerifyReport(report)}\n`);
    if (!report.ok) throw new Error("schema verification failed");
    const client = await pool.connect();
    try {
      const r = await syncSite(client, await loadSite(projectPath(config.CEA_SITE_FILE)));
      process.stdout.write(`site: ${r.rooms} rooms, ${r.devices} devices, ${r.sensors} sensors\n`);
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
  }
  process.stdout.write(
    [
      "",
      `PostgreSQL + TimescaleDB  ${config.CEA_DATABASE_URL}`,
      `Redis                     ${config.CEA_REDIS_URL}`,
      `site file                 ${projectPath(config.CEA_SITE_FILE)}`,
      "stop the stack with: npm run stack -- down",
      "",
    ].join("\n"),
  );
}

runMain(main);
