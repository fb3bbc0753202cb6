import pg from "pg";
import type { Config } from "../pipeline/runtime/config.js";

/** Limits every pool sets on its connections, so a stuck statement or a dead server becomes an error. */
export interface PoolSettings {
  /** statement_timeout (ms; 0 = none): a stuck statement fails with 57014 instead of holding its batch. */
  statementTimeoutMs: number;
  /** lock_timeout (ms; 0 = none): a lock held by someone else fails the statement with 55P03. */
  lockTimeoutMs: number;
  /** How long a new connection may take. */
  connectTimeoutMs: number;
  /** TCP keepalive idle time (ms). */
  keepAliveIdleMs: number;
}

export const DEFAULT_POOL_SETTINGS: PoolSettings = {
  statementTimeoutMs: 60_000,
  lockTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  keepAliveIdleMs: 10_000,
};

export function poolSettings(
  config: Pick<
    Config,
    "CEA_PG_STATEMENT_TIMEOUT_MS" | "CEA_PG_LOCK_TIMEOUT_MS" | "CEA_PG_CONNECT_TIMEOUT_MS" | "CEA_PG_KEEPALIVE_IDLE_MS"
  >,
): PoolSettings {
  return {
    statementTimeoutMs: config.CEA_PG_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: config.CEA_PG_LOCK_TIMEOUT_MS,
    connectTimeoutMs: config.CEA_PG_CONNECT_TIMEOUT_MS,
    keepAliveIdleMs: config.CEA_PG_KEEPALIVE_IDLE_MS,
  };
}

/**
 * The platform's connection pool. Every connection gets the statement and lock
 * timeouts, a connect timeout and TCP keepalive (PoolSettings). A connection
 * that dies while checked out (PostgreSQL stopped or restarted mid-query) makes
 * its client emit 'error'; without a listener that event would end the
 * process, although the query in flight already rejects and its caller
 * retries. So every client gets a listener for its whole life, and idle
 * clients are covered by the pool's own.
 */
export function createPool(
  url: string,
  opts: { max?: number; application?: string; onError?: (err: Error) => void; settings?: Partial<PoolSettings> } = {},
): pg.Pool {
  const s = { ...DEFAULT_POOL_SETTINGS, ...opts.settings };
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.application ?? "cea",
    connectionTimeoutMillis: s.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: s.keepAliveIdleMs,
    // 0 = no limit (PostgreSQL's own meaning)
    statement_timeout: s.statementTimeoutMs,
    lock_timeout: s.lockTimeoutMs,
  });
  const onError = opts.onError ?? (() => undefined);
  pool.on("error", onError);
  pool.on("connect", (client) => client.on("error", onError));
  return pool;
}

export type Queryable = Pick<pg.PoolClient, "query">;
