import pg from "pg";

/**
 * The platform's connection pool. A connection that dies while checked out
 * (PostgreSQL stopped or restarted mid-query) makes its client emit 'error';
 * without a listener that event would end the process, although the query in
 * flight already rejects and its caller retries. So every client gets a
 * listener for its whole life, and idle clients are covered by the pool's own.
 */
export function createPool(
  url: string,
  opts: { max?: number; application?: string; onError?: (err: Error) => void } = {},
): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.application ?? "cea",
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  const onError = opts.onError ?? (() => undefined);
  pool.on("error", onError);
  pool.on("connect", (client) => client.on("error", onError));
  return pool;
}

export type Queryable = Pick<pg.PoolClient, "query">;
