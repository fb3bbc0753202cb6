import { randomBytes } from "node:crypto";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import type pg from "pg";
import { inject } from "vitest";
import { createPool } from "../../db/pool.js";
import { apiPoolOptions, buildApp } from "../../pipeline/backend/app.js";
import { createBackendLogger } from "../../pipeline/backend/logger.js";
import { type Config, databaseUrl, loadConfig } from "../../pipeline/runtime/config.js";
import { freePort } from "../../pipeline/runtime/net.js";
import { createRedis } from "../../pipeline/runtime/redis.js";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { roleUrl } from "../support/roles.js";

// Shared by the api-*.test.ts files: the app on a database and Redis prefix of
// the test file's own, driven with inject(), with its log lines captured.

export interface Api {
  app: FastifyInstance;
  db: TestDatabase;
  pool: pg.Pool;
  redis: Redis;
  config: Config;
  token: string;
  prefix: string;
  logs: string[];
  auth: { authorization: string };
  close(): Promise<void>;
}

export async function startApi(
  env: Record<string, string> = {},
  opts: { db?: TestDatabase; databaseUrl?: string; redisUrl?: string } = {},
): Promise<Api> {
  const db = opts.db ?? (await createTestDatabase());
  const token = randomBytes(18).toString("base64url");
  const prefix = testPrefix();
  const config = loadConfig({
    CEA_DATABASE_URL: opts.databaseUrl ?? db.url,
    // the API as its own role (cea_api), as in production
    CEA_API_DATABASE_URL: roleUrl(opts.databaseUrl ?? db.url, "api"),
    CEA_REDIS_URL: opts.redisUrl ?? inject("redisUrl"),
    CEA_REDIS_PREFIX: prefix,
    CEA_API_TOKEN: token,
    CEA_LOG_LEVEL: "debug",
    ...env,
  });
  const logs: string[] = [];
  const log = createBackendLogger(config.CEA_LOG_LEVEL, { write: (s: string) => void logs.push(s) });
  const pool = createPool(databaseUrl(config, "api"), {
    max: 4,
    application: "cea-backend-test",
    ...apiPoolOptions(config),
  });
  pool.on("error", () => undefined);
  const redis = createRedis(config.CEA_REDIS_URL, undefined, "cea-backend-test");
  const app = await buildApp({ config, pool, redis, log, token });
  await app.ready();
  return {
    app,
    db,
    pool,
    redis,
    config,
    token,
    prefix,
    logs,
    auth: { authorization: `Bearer ${token}` },
    async close() {
      await app.close();
      await pool.end();
      redis.disconnect();
      if (!opts.db) await db.drop();
    },
  };
}

export async function measurementCount(db: TestDatabase): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM measurement");
  return rows[0]!.n;
}

/** An ISO time `secondsAgo` before now, on a whole second. */
export function ago(secondsAgo: number): string {
  return new Date(Math.floor(Date.now() / 1000) * 1000 - secondsAgo * 1000).toISOString();
}

/** A TCP port nothing listens on (bound, then released). */
export const closedPort = (): Promise<number> => freePort();
