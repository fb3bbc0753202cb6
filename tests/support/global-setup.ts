import pg from "pg";
import type { TestProject } from "vitest/node";
import { applySchema, edition } from "../../db/schema.js";
import { loadSite, syncSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { cycleIntervals } from "../../pipeline/can/intervals.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { withStackEnv } from "../../pipeline/runtime/stack-env.js";
import { enableRoleLogins } from "./roles.js";

// One template per test run: runs started side by side must not drop each other's.
const TEMPLATE_DB = `cea_test_template_${process.pid}`;

/** The stack's URLs: the caller's CEA_* variables win, else ops/stack.sh's stack.env. */
export function stackEnv(): { databaseUrl: string; redisUrl: string; pgBindir: string } {
  const env = withStackEnv();
  const databaseUrl = env.CEA_DATABASE_URL;
  const redisUrl = env.CEA_REDIS_URL;
  if (!databaseUrl || !redisUrl)
    throw new Error("no stack: run ops/stack.sh up (or set CEA_DATABASE_URL and CEA_REDIS_URL)");
  return { databaseUrl, redisUrl, pgBindir: env.CEA_PG_BINDIR ?? "/usr/lib/postgresql/15/bin" };
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/**
 * Build the template database once per run (schema applied, site synced); every
 * test file clones it, which is much faster than applying the schema per file.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const env = stackEnv();
  const admin = new pg.Client({ connectionString: withDatabase(env.databaseUrl, "postgres") });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  } finally {
    await admin.end();
  }
  const tpl = new pg.Client({ connectionString: withDatabase(env.databaseUrl, TEMPLATE_DB) });
  await tpl.connect();
  let ed: string;
  try {
    await applySchema(tpl);
    // the stack's cluster: ops/stack.sh does the same; here too for a cluster given by CEA_DATABASE_URL
    await enableRoleLogins(tpl);
    const site = await loadSite(projectPath("ops/site.json"));
    const defaultIntervalS = cycleIntervals(loadCanDb(projectPath("ops/cea.kcd")), site);
    await syncSite(tpl, site, { defaultIntervalS });
    ed = await edition(tpl);
  } finally {
    await tpl.end();
  }
  if (ed !== "community") {
    process.stdout.write(
      "\n[cea] TimescaleDB Apache edition on the test cluster: the Community-edition tests " +
        "(compression, continuous aggregates, policies) DO NOT RUN in this run; they are reported as skipped.\n" +
        "[cea] To run them, point CEA_PG_BINDIR at PostgreSQL binaries with the Community edition installed.\n\n",
    );
  }
  const teardown = async () => {
    const c = new pg.Client({ connectionString: withDatabase(env.databaseUrl, "postgres") });
    await c.connect();
    try {
      await c.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`);
    } finally {
      await c.end();
    }
  };
  project.provide("templateDb", TEMPLATE_DB);
  project.provide("databaseUrl", env.databaseUrl);
  project.provide("redisUrl", env.redisUrl);
  project.provide("pgBindir", env.pgBindir);
  project.provide("edition", ed);
  return teardown;
}

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
    redisUrl: string;
    pgBindir: string;
    edition: string;
    templateDb: string;
  }
}
