import type pg from "pg";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import { classifyDbError } from "../pg-errors.js";

// What the command prints when it cannot go on: one line naming the cause and
// what to do, never a stack trace.

function where(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || "5432"}${u.pathname}`;
  } catch {
    return "the configured server";
  }
}

/** The error as a ConfigError of one line (a ConfigError passes unchanged). */
export function describeFailure(err: unknown, url: string): ConfigError {
  if (err instanceof ConfigError) return err;
  const f = classifyDbError(err);
  const at = where(url);
  const fix = "(--database-url or CEA_DATABASE_URL)";
  switch (f.code) {
    case "ECONNREFUSED":
    case "ENOTFOUND":
    case "EHOSTUNREACH":
    case "ETIMEDOUT":
    case "EAI_AGAIN":
      return new ConfigError(
        `cannot reach PostgreSQL at ${at} (${f.code}): start the server or correct the address ${fix}`,
      );
    case "3D000":
      return new ConfigError(`${f.message} at ${at}: create it or name an existing database ${fix}`);
    case "28000":
    case "28P01":
      return new ConfigError(`${f.message} (${at}): connect as an existing role with its credentials ${fix}`);
    case "42501":
      return new ConfigError(
        `${f.message}: the migration's role lacks a privilege; grant it or connect as the schema owner ${fix}`,
      );
    case "40P01":
    case "40001":
      return new ConfigError(
        `${f.what} with a concurrent writer, still after the retries: ${f.message}. Run again when the other writer is idle (committed batches are kept).`,
      );
  }
  const msg = f.message.split("\n")[0];
  return new ConfigError(
    `${f.code ? `PostgreSQL ${f.code} (${f.what})` : f.what}: ${msg}. Committed batches are kept; run again to resume.`,
  );
}

/**
 * The privileges the run needs that the role lacks, named before anything is
 * written (instead of a failure halfway, or a misleading "table not found").
 */
export async function missingPrivileges(db: pg.ClientBase, mode: "read" | "migrate" | "undo"): Promise<string[]> {
  const writes = mode !== "read";
  const needs: [string, string][] = [["measurement", "SELECT"]];
  if (writes)
    needs.push(
      ["measurement", "INSERT"],
      ["room", "INSERT"],
      ["room", "UPDATE"],
      ["device", "INSERT"],
      ["device", "UPDATE"],
      ["sensor", "INSERT"],
      ["sensor", "UPDATE"],
    );
  if (mode === "undo") needs.push(["measurement", "DELETE"]);
  const { rows } = await db.query<{ missing: string | null }>(
    `SELECT string_agg(format('%s on table %s', p.what, p.t), ', ') FILTER (WHERE NOT has_table_privilege(p.t, p.what)) AS missing
     FROM unnest($1::text[], $2::text[]) AS p(t, what)`,
    [needs.map((n) => n[0]), needs.map((n) => n[1])],
  );
  const out = rows[0]?.missing ? [rows[0].missing] : [];
  if (writes) {
    const { rows: cp } = await db.query<{ missing: string | null }>(
      // a missing table (a schema before migration 0006) is told apart before this
      `SELECT CASE
         WHEN to_regclass('migration_checkpoint') IS NULL THEN NULL
         WHEN NOT has_table_privilege('migration_checkpoint', 'INSERT, UPDATE, DELETE') THEN
           'INSERT, UPDATE and DELETE on table migration_checkpoint'
       END AS missing`,
    );
    if (cp[0]?.missing) out.push(cp[0].missing);
  }
  return out;
}
