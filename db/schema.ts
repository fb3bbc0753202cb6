import { readFile } from "node:fs/promises";
import type pg from "pg";
import { projectPath } from "../pipeline/runtime/paths.js";
import { edition } from "./edition.js";
import { type MigrateResult, migrate, retryCatalogRace } from "./migrations.js";
import type { Queryable } from "./pool.js";

export { type Edition, edition } from "./edition.js";
export { type Check, formatVerifyReport, type VerifyReport, verifySchema } from "./verify.js";

export const SCHEMA_FILE = "db/cea_schema.sql";

export const AGGREGATES = ["measurement_hourly", "measurement_daily"] as const;

/**
 * Bring the database to the current schema: every migration it lacks
 * (db/migrations.ts). When migrations were applied on the Community edition,
 * the continuous aggregates are then refreshed (a migration may re-create them
 * WITH NO DATA; until this refresh real-time aggregation computes every bucket
 * from the raw rows). Call it outside a transaction block.
 */
export async function applySchema(db: pg.Pool | pg.ClientBase): Promise<MigrateResult> {
  const r = await migrate(db);
  if (r.applied.length > 0 && (await edition(db)) === "community") await rebuildAggregates(db);
  return r;
}

/**
 * Apply the one-file view db/cea_schema.sql, as `psql -f` would: sent as one
 * simple-protocol query, so it runs as one implicit transaction.
 */
export async function applySchemaFile(db: Queryable): Promise<void> {
  const sql = await readFile(projectPath(SCHEMA_FILE), "utf8");
  await db.query(sql);
}

/**
 * Set raw-data retention (NULL = keep forever, the default; at least 7 days).
 * Community edition: a retention policy, and the refresh policies kept clear of
 * it; Apache edition: the setting that cea_apply_retention() reads when the
 * worker's maintenance calls it. Either way no refresh reaches the dropped rows
 * (cea_aggregate_horizon()), so the aggregates stay.
 */
export async function setRetention(db: Queryable, keep: string | null): Promise<void> {
  await retryCatalogRace(() => db.query("SELECT cea_set_retention($1::interval)", [keep]));
}

/**
 * Refresh one aggregate over [start, end) (null = unbounded) through
 * cea_refresh_aggregate(): whole buckets, not past the start of the current
 * one, not before the retention horizon. On the Community edition a refresh
 * that overlaps one already running (a policy's) is refused (55P03) rather than
 * queued: wait and run it again, up to `waitMs`. Call outside a transaction block.
 */
export async function refreshAggregate(
  db: Queryable,
  aggregate: (typeof AGGREGATES)[number],
  start: string | null = null,
  end: string | null = null,
  waitMs = 120_000,
): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (let pause = 200; ; pause = Math.min(pause * 2, 5_000)) {
    try {
      await db.query("CALL cea_refresh_aggregate($1, $2::timestamptz, $3::timestamptz)", [aggregate, start, end]);
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== "55P03" || Date.now() + pause > deadline) throw err;
      await new Promise((r) => setTimeout(r, pause));
    }
  }
}

/**
 * Recompute both aggregates over every stored row: for data loaded around the
 * platform's write path (bulk COPY in benchmarks, test fixtures), whose buckets
 * were never queued. Community edition: a refresh of the continuous aggregates
 * up to the start of the current bucket (which real-time aggregation keeps
 * covering) and not before the retention horizon; Apache edition: one
 * set-based recompute of both tables. Call it outside a transaction block.
 */
export async function rebuildAggregates(db: Queryable): Promise<void> {
  if ((await edition(db)) === "community") {
    for (const agg of AGGREGATES) await refreshAggregate(db, agg);
    return;
  }
  await db.query("SELECT cea_recompute_aggregates(NULL, NULL)");
}
