import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import { ConfigError } from "../pipeline/runtime/errors.js";
import { projectPath } from "../pipeline/runtime/paths.js";

// Schema migrations: numbered, forward-only SQL files in db/migrations/
// (NNNN_name.sql), applied in order, each in one transaction together with its
// row in cea_schema_migration (version, name, sha256 of the file). A file that
// was applied and has changed since stops everything: a published migration is
// never edited, the change goes into a new file. db/cea_schema.sql is the
// one-file view of the result and records the versions it covers in the same
// table (tests/integration/schema-migrations.test.ts proves the two equal).

export const MIGRATIONS_DIR = "db/migrations";
const FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS cea_schema_migration (
  version     integer PRIMARY KEY,
  name        text NOT NULL,
  checksum    text NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT now()
)`;
// One migrator at a time per database (two `cea schema apply` at once wait in line).
const LOCK = "SELECT pg_advisory_lock(hashtext('cea_schema_migration'))";
const UNLOCK = "SELECT pg_advisory_unlock(hashtext('cea_schema_migration'))";

export interface Migration {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

export interface AppliedMigration {
  version: number;
  name: string;
  checksum: string;
}

export const checksum = (sql: string): string => createHash("sha256").update(sql).digest("hex");

/**
 * A statement that changes TimescaleDB's job catalog or drops a continuous
 * aggregate (re-creating it, replacing a policy) can meet a background job
 * working on the same objects: the scheduler updating the job's statistics row
 * ("tuple concurrently deleted/updated", XX000) or a refresh holding locks in
 * the other order (deadlock, 40P01). The transaction rolls back whole, so
 * running it again is safe.
 */
export function isCatalogRace(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (e.code === "40P01") return true;
  return e.code === "XX000" && typeof e.message === "string" && /tuple concurrently (deleted|updated)/.test(e.message);
}

/** Run `fn` again (up to 5 times, briefly apart) while it fails with a catalog race. */
export async function retryCatalogRace<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || !isCatalogRace(err)) throw err;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

/** The migration files, in order; numbering must be 1, 2, 3, … without gaps or repeats. */
export async function loadMigrations(dir = projectPath(MIGRATIONS_DIR)): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const out: Migration[] = [];
  for (const f of names) {
    const m = FILE.exec(f);
    if (!m) throw new ConfigError(`${join(dir, f)}: a migration file is named NNNN_name.sql (lower case, digits, _)`);
    const version = Number(m[1]);
    const expected = out.length + 1;
    if (version !== expected)
      throw new ConfigError(`${join(dir, f)}: expected migration number ${String(expected).padStart(4, "0")} here`);
    const sql = await readFile(join(dir, f), "utf8");
    out.push({ version, name: m[2]!, file: join(dir, f), sql, checksum: checksum(sql) });
  }
  return out;
}

/** Why the database's record and the files disagree, or null. */
export function checkApplied(files: readonly Migration[], applied: readonly AppliedMigration[]): string | null {
  for (const a of applied) {
    const f = files[a.version - 1];
    if (!f)
      return `the database has migration ${a.version} (${a.name}) that ${MIGRATIONS_DIR} does not: it was set up by a newer version of the platform`;
    if (f.checksum !== a.checksum)
      return `${f.file} changed after it was applied to this database (recorded sha256 ${a.checksum.slice(0, 12)}…, file ${f.checksum.slice(0, 12)}…): applied migrations are never edited; put the change in a new migration`;
  }
  return null;
}

export interface MigrateResult {
  applied: Migration[];
  alreadyApplied: number;
}

async function readApplied(c: pg.ClientBase): Promise<AppliedMigration[]> {
  const { rows } = await c.query<AppliedMigration>(
    "SELECT version, name, checksum FROM cea_schema_migration ORDER BY version",
  );
  return rows;
}

/** Migrations recorded in the database, or [] when it has none. */
export async function appliedMigrations(db: pg.Pool | pg.ClientBase): Promise<AppliedMigration[]> {
  const { rows } = await db.query<{ present: boolean }>(
    "SELECT to_regclass('cea_schema_migration') IS NOT NULL AS present",
  );
  if (!rows[0]?.present) return [];
  const r = await db.query<AppliedMigration>(
    "SELECT version, name, checksum FROM cea_schema_migration ORDER BY version",
  );
  return r.rows;
}

/**
 * Apply every migration the database lacks, in order, one transaction each.
 * Throws ConfigError when an applied migration's file changed or is missing.
 */
export async function migrate(db: pg.Pool | pg.ClientBase, files?: readonly Migration[]): Promise<MigrateResult> {
  const all = files ?? (await loadMigrations());
  const client = db instanceof pg.Pool ? await db.connect() : db;
  try {
    await client.query(LOCK);
    try {
      await client.query("SET client_min_messages = warning");
      await client.query(CREATE_TABLE);
      const applied = await readApplied(client);
      const wrong = checkApplied(all, applied);
      if (wrong) throw new ConfigError(wrong);
      const done = new Set(applied.map((a) => a.version));
      const result: MigrateResult = { applied: [], alreadyApplied: applied.length };
      for (const m of all) {
        if (done.has(m.version)) continue;
        try {
          await retryCatalogRace(async () => {
            await client.query("BEGIN");
            try {
              await client.query(m.sql);
              await client.query("INSERT INTO cea_schema_migration (version, name, checksum) VALUES ($1, $2, $3)", [
                m.version,
                m.name,
                m.checksum,
              ]);
              await client.query("COMMIT");
            } catch (err) {
              await client.query("ROLLBACK").catch(() => undefined);
              throw err;
            }
          });
        } catch (err) {
          const e = err as Error & { code?: string };
          throw Object.assign(new Error(`${m.file}: ${e.message}${e.code ? ` (${e.code})` : ""}`), { cause: err });
        }
        result.applied.push(m);
      }
      return result;
    } finally {
      await client.query(UNLOCK).catch(() => undefined);
    }
  } finally {
    if (client !== db) (client as pg.PoolClient).release();
  }
}
