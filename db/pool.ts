import type { Socket } from "node:net";
import pg from "pg";
import type { Config } from "../pipeline/runtime/config.js";

export interface PoolOptions {
  max?: number;
  application?: string;
  onError?: (err: Error) => void;
  /** Waiting for a connection (from the pool, or a new one to the server); default 10 s. */
  connectTimeoutMs?: number;
  /** Server side: a statement running longer is cancelled (57014). Unset = the server's setting; 0 = none. */
  statementTimeoutMs?: number;
  /** Server side: waiting longer for a lock fails the statement (55P03). Unset = the server's setting; 0 = none. */
  lockTimeoutMs?: number;
  /**
   * Client side: when nothing arrives on a checked-out connection for this
   * long, its query fails and the connection is dropped. The only limit that
   * holds when the server itself does not answer (a frozen host or disk); a
   * statement still at work looks the same from here, so statementTimeoutMs
   * is set no longer. Unset = none.
   */
  queryTimeoutMs?: number;
  /** TCP keepalive, so a connection to a host that vanished is noticed. */
  keepAlive?: boolean;
  /** Idle time before the first keepalive probe (default 10 s). */
  keepAliveIdleMs?: number;
}

/**
 * The limits every service sets on its pool, from the CEA_PG_* settings:
 * statement and lock timeouts (a stuck statement or a lock held elsewhere
 * becomes an error that is retried as an outage, instead of holding a batch
 * until it is claimed away), connect timeout and TCP keepalive.
 */
export function poolSettings(
  config: Pick<
    Config,
    "CEA_PG_STATEMENT_TIMEOUT_MS" | "CEA_PG_LOCK_TIMEOUT_MS" | "CEA_PG_CONNECT_TIMEOUT_MS" | "CEA_PG_KEEPALIVE_IDLE_MS"
  >,
): PoolOptions {
  return {
    statementTimeoutMs: config.CEA_PG_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: config.CEA_PG_LOCK_TIMEOUT_MS,
    connectTimeoutMs: config.CEA_PG_CONNECT_TIMEOUT_MS,
    keepAlive: true,
    keepAliveIdleMs: config.CEA_PG_KEEPALIVE_IDLE_MS,
  };
}

/**
 * The platform's connection pool. A connection that dies while checked out
 * (PostgreSQL stopped or restarted mid-query) makes its client emit 'error';
 * without a listener that event would end the process, although the query in
 * flight already rejects and its caller retries. So every client gets a
 * listener for its whole life, and idle clients are covered by the pool's own.
 */
export function createPool(url: string, opts: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.application ?? "cea",
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
    ...(opts.statementTimeoutMs === undefined ? {} : { statement_timeout: opts.statementTimeoutMs }),
    ...(opts.lockTimeoutMs === undefined ? {} : { lock_timeout: opts.lockTimeoutMs }),
    ...(opts.keepAlive ? { keepAlive: true, keepAliveInitialDelayMillis: opts.keepAliveIdleMs ?? 10_000 } : {}),
  });
  const onError = opts.onError ?? (() => undefined);
  pool.on("error", onError);
  pool.on("connect", (client) => client.on("error", onError));
  if (opts.queryTimeoutMs) dropSilentConnections(pool, opts.queryTimeoutMs);
  return pool;
}

/**
 * queryTimeoutMs: a checked-out connection on which nothing arrives for `ms`
 * is destroyed, which fails its query (an outage to classifyDbError: no
 * SQLSTATE) and keeps the connection out of the pool. The socket's own
 * inactivity timer, armed while checked out, instead of pg's query_timeout:
 * with that option set, pg (8.23) wraps every query's callback in a closure
 * that keeps the query's rows alive past young-generation collections
 * (measured on the API's raw history, 3 600 rows: 4× the promoted bytes, 3×
 * the scavenge time, a fifth to a third fewer requests/s).
 */
function dropSilentConnections(pool: pg.Pool, ms: number): void {
  const socket = (client: pg.PoolClient) => (client as unknown as pg.Client).connection.stream as Socket;
  pool.on("connect", (client) => {
    const s = socket(client);
    s.on("timeout", () => s.destroy(new Error(`no answer from the database within ${ms} ms`)));
  });
  pool.on("acquire", (client) => socket(client).setTimeout(ms));
  pool.on("release", (_err, client) => socket(client).setTimeout(0));
}

export type Queryable = Pick<pg.PoolClient, "query">;
