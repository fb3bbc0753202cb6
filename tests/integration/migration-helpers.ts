import pg from "pg";
import type { ProgressSink } from "../../db/migrate/progress.js";
import { loadSite, type Site } from "../../db/site.js";
import { projectPath } from "../../pipeline/paths.js";

// Shared by the migration-*.test.ts files.

export const loadTestSite = (): Promise<Site> => loadSite(projectPath("ops/site.json"));

/** A progress sink that keeps the lines (the tests run without a TTY). */
export function recordingProgress(onUpdate?: (n: number) => void): ProgressSink & { lines: string[] } {
  const lines: string[] = [];
  let updates = 0;
  return {
    lines,
    start() {},
    update() {
      updates++;
      onUpdate?.(updates);
    },
    finish() {},
    line(msg) {
      lines.push(msg);
    },
  };
}

export async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/** The legacy table's full content, hashed in id order: equal before and after means untouched. */
export async function tableHash(db: pg.ClientBase, table: string): Promise<{ md5: string; rows: number }> {
  const { rows } = await db.query<{ md5: string; rows: number }>(
    `SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.id)) AS md5, count(*)::int AS rows FROM ${db.escapeIdentifier(table)} t`,
  );
  return rows[0]!;
}

/** measurement rows per sensor name. */
export async function measuredBySensor(db: pg.ClientBase): Promise<Record<string, number>> {
  const { rows } = await db.query<{ name: string; n: number }>(
    "SELECT s.name, count(*)::int AS n FROM measurement m JOIN sensor s USING (sensor_id) GROUP BY s.name",
  );
  return Object.fromEntries(rows.map((r) => [r.name, r.n]));
}
