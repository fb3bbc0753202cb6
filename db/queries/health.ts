import type { Queryable } from "../pool.js";

// The database part of the API's health report: one light round trip.

export interface DbHealth {
  timescaledb_version: string | null;
  edition: "community" | "apache";
  /** the session is read-only (default_transaction_read_only, a standby): every write is refused */
  read_only: boolean;
}

export async function dbHealth(db: Queryable): Promise<DbHealth> {
  const { rows } = await db.query<DbHealth>(
    `SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb_version,
            CASE WHEN current_setting('timescaledb.license', true) = 'timescale'
                 THEN 'community' ELSE 'apache' END AS edition,
            current_setting('transaction_read_only') = 'on' AS read_only`,
  );
  const r = rows[0];
  if (!r) throw new Error("health query returned no row");
  return r;
}
