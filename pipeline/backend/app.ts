import { randomUUID } from "node:crypto";
import fastifySwagger from "@fastify/swagger";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import type { Redis } from "ioredis";
import type pg from "pg";
import type { PoolOptions } from "../../db/pool.js";
import type { Site } from "../../db/site.js";
import { loadDecodeTable } from "../can/load.js";
import type { Config } from "../runtime/config.js";
import { redisKeys } from "../runtime/keys.js";
import type { Logger } from "../runtime/log.js";
import type { Registry } from "../runtime/metrics.js";
import { projectPath } from "../runtime/paths.js";
import { AlertEvaluator } from "./alerts.js";
import { bearerChecker } from "./auth.js";
import type { ApiContext } from "./context.js";
import { Directory } from "./directory.js";
import { GroupWriter } from "./group-writer.js";
import { databaseUnavailable, frameworkErrors, HttpError, installErrorHandling } from "./http-errors.js";
import { installJsonParser } from "./json-body.js";
import { SensorLabels } from "./labels.js";
import { registerBackendMetrics } from "./metrics.js";
import { registerRoutes } from "./routes/index.js";
import { API_PREFIX } from "./schemas.js";

export interface AppDeps {
  config: Config;
  pool: pg.Pool;
  redis: Redis;
  log: Logger;
  /** the bearer token of the write routes (resolveToken) */
  token: string;
  /** the service's metrics registry; request, group-commit and alert metrics are added to it */
  metrics?: Registry;
  /** the site file (default: loaded from CEA_SITE_FILE): its actuators bound the setpoints */
  site?: Site;
  /** the sensors' value tables (default: from CEA_CAN_DB_FILE joined with CEA_SITE_FILE, as can-worker loads them) */
  labels?: SensorLabels;
}

/**
 * The API pool's limits: nothing a request waits on in the database outlasts
 * the request's own deadline. The server cancels a long statement or lock wait
 * itself; the client-side query timeout, a little later, covers a server that
 * does not answer at all (frozen host or disk) and drops that connection.
 */
export function apiPoolOptions(config: Pick<Config, "CEA_API_REQUEST_TIMEOUT_MS">): PoolOptions {
  const ms = config.CEA_API_REQUEST_TIMEOUT_MS;
  return {
    connectTimeoutMs: ms,
    statementTimeoutMs: ms,
    lockTimeoutMs: Math.max(50, Math.floor(ms / 2)),
    queryTimeoutMs: ms + 500,
    keepAlive: true,
  };
}

/** A route handler's promise, or a 503 naming the database when the request's deadline passes first. */
async function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  // the work goes on after the deadline (its queries end at their own timeouts); its outcome is dropped
  work.catch(() => undefined);
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              databaseUnavailable(
                new Error(`request deadline of ${ms} ms passed`),
                ` (no answer within ${ms} ms; a write may still complete: retry it, 200 means already stored)`,
              ),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The API as a Fastify instance, not listening: the entry point listens, tests
 * drive it with inject(). Nothing here builds a pool or a client.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config } = deps;
  // the same files, loader and refusals as can-worker: a file that cannot be read stops start-up naming it,
  // a message the loader refuses is logged once here
  let { site, labels } = deps;
  if (!site || !labels) {
    const loaded = await loadDecodeTable(
      { siteFile: projectPath(config.CEA_SITE_FILE), canDbFile: projectPath(config.CEA_CAN_DB_FILE) },
      deps.log,
    );
    site ??= loaded.site;
    labels ??= new SensorLabels(loaded.sensors);
  }
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: config.CEA_BODY_LIMIT,
    genReqId: () => randomUUID(),
    return503OnClosing: true,
    frameworkErrors,
  }) as unknown as FastifyInstance;
  // JSON only: a text/plain body would otherwise reach validation as a string;
  // our JSON parser refuses prototype keys naming them (json-body.ts)
  app.removeContentTypeParser("text/plain");
  installJsonParser(app, config.CEA_BODY_LIMIT);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app, config.CEA_BODY_LIMIT);
  // every handler runs under the request deadline (routes are registered below, after this hook)
  const deadlineMs = config.CEA_API_REQUEST_TIMEOUT_MS;
  app.addHook("onRoute", (route) => {
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, req, reply) {
      return withDeadline(Promise.resolve(handler.call(this, req, reply)), deadlineMs);
    };
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "CEA Telemetry Platform API",
        version: "1",
        description: "Ingestion and history of the facility's sensor readings. Routes under /api/v1 keep their shape.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    },
    transform: jsonSchemaTransform,
  });

  const check = bearerChecker(deps.token);
  const keys = redisKeys(config);
  const alerts = new AlertEvaluator({ config, pool: deps.pool, redis: deps.redis, keys, log: deps.log });
  app.addHook("onReady", async () => alerts.start());
  app.addHook("onClose", async () => alerts.stop());
  const metrics = deps.metrics ? await registerBackendMetrics(app, deps.metrics, config, alerts) : undefined;
  const ctx: ApiContext = {
    actuators: site.actuators,
    labels,
    config,
    pool: deps.pool,
    redis: deps.redis,
    keys,
    alerts,
    directory: new Directory(deps.pool),
    writer: new GroupWriter(deps.pool, deps.log, {
      maxGroup: config.CEA_API_GROUP_MAX,
      maxInFlight: config.CEA_API_GROUP_INFLIGHT,
      ...(metrics ? { onGroup: metrics.groupSize } : {}),
    }),
    requireToken: async (req: FastifyRequest, reply: FastifyReply) => {
      // an answer behind the token is for its holder only: no cache keeps it, errors included
      reply.header("cache-control", "no-store");
      if (check(req.headers.authorization)) return;
      reply.header("www-authenticate", 'Bearer realm="cea"');
      throw new HttpError(
        401,
        "unauthorized",
        req.headers.authorization === undefined
          ? "this route needs Authorization: Bearer <token>"
          : "the bearer token is wrong",
      );
    },
  };
  await app.register((api) => registerRoutes(api, ctx), { prefix: API_PREFIX });
  return app;
}
