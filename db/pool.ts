import pg from "pg";

// timestamptz stays a string end to end unless a caller parses it: readings
// carry microseconds that a JS Date would silently round to milliseconds.
export function createPool(url: string, opts: { max?: number; application?: string } = {}): pg.Pool {
  return new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.application ?? "cea",
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
}

export type Queryable = Pick<pg.PoolClient, "query">;
