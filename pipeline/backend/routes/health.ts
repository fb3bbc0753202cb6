import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { classifyDbError } from "../../../db/pg-errors.js";
import { dbHealth } from "../../../db/queries/health.js";
import { lastMeasurementTime } from "../../../db/queries/measurement.js";
import { verifySchema } from "../../../db/schema.js";
import type { ApiContext } from "../context.js";
import { databaseUnavailable, HttpError, redisCall } from "../http-errors.js";
import { type Health, health } from "../schemas.js";

const FEATURES_TTL_MS = 5 * 60_000;

async function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(databaseUnavailable(new Error(`${what} did not answer within ${ms} ms`))), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Flat [k, v, k, v] reply of XINFO GROUPS → one object per group. */
function groupsOf(reply: unknown): Record<string, unknown>[] {
  if (!Array.isArray(reply)) return [];
  return reply.map((g) => {
    const o: Record<string, unknown> = {};
    if (Array.isArray(g)) for (let i = 0; i + 1 < g.length; i += 2) o[String(g[i])] = g[i + 1];
    return o;
  });
}
const intOrNull = (v: unknown) => (v === null || v === undefined || Number.isNaN(Number(v)) ? null : Number(v));

/**
 * GET /health: PostgreSQL (edition, features, newest reading) and Redis (raw
 * stream length, consumer group pending and lag). 503 naming what is down.
 * Open without a token, so monitoring needs no secret; it reveals no data.
 */
export const healthRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  // each check ends well inside the request's deadline, so health always answers in its own shape
  const checkMs = Math.min(3_000, Math.floor(ctx.config.CEA_API_REQUEST_TIMEOUT_MS * 0.6));
  // verifySchema is a dozen catalog queries: its feature summary is cached
  let features: { at: number; value: Record<string, string> } | undefined;

  const postgres = async (): Promise<Health["postgres"]> => {
    try {
      return await deadline(
        (async () => {
          const { read_only, ...h } = await dbHealth(ctx.pool);
          if (!features || Date.now() - features.at > FEATURES_TTL_MS)
            features = { at: Date.now(), value: (await verifySchema(ctx.pool)).features };
          return {
            // reachable but refusing every write is no healthy database for this service
            ok: !read_only,
            ...(read_only ? { error: "25006 read-only (every write is refused)" } : {}),
            ...h,
            features: features.value,
            last_measurement_time: await lastMeasurementTime(ctx.pool),
          };
        })(),
        checkMs,
        "postgres",
      );
    } catch (err) {
      app.log.warn({ err }, "health: postgres check failed");
      // the SQLSTATE and what it means (read-only, missing grant, …) help the operator and reveal no data
      const f = classifyDbError(err instanceof HttpError ? err.underlying : err);
      return { ok: false, error: f.code && /^[0-9A-Z]{5}$/.test(f.code) ? `${f.code} ${f.what}` : "unreachable" };
    }
  };

  const redis = async (): Promise<Health["redis"]> => {
    const key = ctx.keys.raw;
    const group = ctx.config.CEA_GROUP;
    try {
      const [length, groups] = await redisCall(
        ctx.redis.status,
        async () => {
          const len = await ctx.redis.xlen(key);
          if (len === 0 && (await ctx.redis.exists(key)) === 0) return [0, []] as const;
          return [len, groupsOf(await ctx.redis.xinfo("GROUPS", key))] as const;
        },
        checkMs,
      );
      const g = groups.find((x) => x.name === group);
      return {
        ok: true,
        stream: { key, length },
        group: {
          name: group,
          exists: g !== undefined,
          pending: intOrNull(g?.pending),
          lag: intOrNull(g?.lag),
          consumers: intOrNull(g?.consumers),
        },
      };
    } catch (err) {
      app.log.warn({ err }, "health: redis check failed");
      return { ok: false, error: err instanceof HttpError ? "unreachable" : "command failed (see the service log)" };
    }
  };

  app.get(
    "/health",
    {
      schema: {
        tags: ["health"],
        summary:
          "Dependencies, pipeline backlog, silent sensors and active alerts; 503 when PostgreSQL or Redis is down",
        response: { 200: health, 503: health },
      },
    },
    async (_req, reply) => {
      const [pg, rd] = await Promise.all([postgres(), redis()]);
      const down: Health["down"] = [];
      if (!pg.ok) down.push("postgres");
      if (!rd.ok) down.push("redis");
      const a = ctx.alerts.state;
      return reply.code(down.length ? 503 : 200).send({
        status: down.length ? "unavailable" : "ok",
        down,
        postgres: pg,
        redis: rd,
        alerts: {
          evaluated_at: a.evaluated_at,
          incomplete: a.incomplete,
          active: a.alerts,
          silent_sensors: a.silent_sensors,
        },
      });
    },
  );
};
