import type { Queryable } from "./pool.js";

export type Edition = "community" | "apache";

/** Which TimescaleDB edition the database runs: Community (TSL license) or Apache. */
export async function edition(db: Queryable): Promise<Edition> {
  const { rows } = await db.query<{ license: string | null }>(
    "SELECT current_setting('timescaledb.license', true) AS license",
  );
  return rows[0]?.license === "timescale" ? "community" : "apache";
}
