import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import type { ApiContext } from "../context.js";
import { dbCall, HttpError, redisCall } from "../http-errors.js";
import { errorBody, idParam, idParams, liveEntry, liveValue, liveValues } from "../schemas.js";

/**
 * Live values from the Redis live hash (kept current by can-scanner even while
 * PostgreSQL is down), each with its age so a silent sensor shows as stale.
 */
export const liveRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  const staleAfter = ctx.config.CEA_LIVE_STALE_S;
  // a Redis that does not answer gives a 503 naming Redis, inside the request's deadline
  const redisMs = Math.min(1_000, Math.floor(ctx.config.CEA_API_REQUEST_TIMEOUT_MS * 0.6));

  const present = (fields: [string, string | null][]) => {
    const now = Date.now();
    const values: ReturnType<typeof liveValues.parse>["values"] = [];
    const unreadable: string[] = [];
    for (const [field, raw] of fields) {
      if (raw === null) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        unreadable.push(field);
        continue;
      }
      const entry = liveEntry.safeParse(parsed);
      const t = entry.success ? Date.parse(entry.data.time) : Number.NaN;
      const sensorId = idParam.safeParse(field);
      if (!entry.success || !Number.isFinite(t) || !sensorId.success) {
        unreadable.push(field);
        continue;
      }
      const age = Math.max(0, (now - t) / 1000);
      const labels = ctx.labels.get(sensorId.data);
      // judged by the response's own item schema: an entry the answer could not carry is unreadable, not a 500
      const item = liveValue.safeParse({
        sensor_id: sensorId.data,
        name: entry.data.name,
        value: entry.data.value,
        time: entry.data.time,
        status: entry.data.status ?? null,
        ...(labels ? { label: labels.of(entry.data.value) } : {}),
        age_s: Math.round(age * 1000) / 1000,
        stale: age > staleAfter,
      });
      if (item.success) values.push(item.data);
      else unreadable.push(field);
    }
    values.sort((a, b) => a.sensor_id - b.sensor_id);
    return { stale_after_s: staleAfter, values, unreadable };
  };

  app.get(
    "/live",
    {
      schema: {
        tags: ["live"],
        summary: "Latest value of every sensor, with its age in seconds and a stale flag",
        response: { 200: liveValues, 401: errorBody, 503: errorBody },
      },
    },
    async () => {
      const all = await redisCall(ctx.redis.status, () => ctx.redis.hgetall(ctx.keys.live), redisMs);
      return present(Object.entries(all));
    },
  );

  app.get(
    "/rooms/:id/live",
    {
      schema: {
        tags: ["live"],
        summary: "Latest value of every sensor of a room",
        params: idParams,
        response: { 200: liveValues, 400: errorBody, 401: errorBody, 404: errorBody, 503: errorBody },
      },
    },
    async (req) => {
      const ids = await dbCall(["id"], () => ctx.directory.roomSensors(req.params.id));
      if (!ids) throw new HttpError(404, "not_found", `no room with id ${req.params.id}`);
      if (ids.length === 0) return present([]);
      const fields = ids.map(String);
      const got = await redisCall(ctx.redis.status, () => ctx.redis.hmget(ctx.keys.live, ...fields), redisMs);
      return present(fields.map((f, i) => [f, got[i] ?? null]));
    },
  );
};
