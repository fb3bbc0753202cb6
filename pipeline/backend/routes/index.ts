import type { FastifyInstance, RouteOptions } from "fastify";
import type { ApiContext } from "../context.js";
import { errorBody } from "../schemas.js";
import { setpointReadRoutes, setpointWriteRoutes } from "./automation.js";
import { facilityRoutes } from "./facility.js";
import { healthRoutes } from "./health.js";
import { liveRoutes } from "./live.js";
import { measurementRoutes } from "./measurements.js";
import { roomRoutes } from "./rooms.js";
import { sensorRoutes } from "./sensors.js";

/**
 * Every router of the API is registered here (one per resource; a new resource
 * adds its router to the group it belongs to). Writes always need the bearer
 * token; reads need it unless CEA_API_OPEN_READS=true; health and the OpenAPI
 * document are open. Whatever the hook enforces, the document states: every
 * route behind the token carries `security` and a 401 answer.
 */
export async function registerRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const protect = (group: FastifyInstance) => {
    group.addHook("onRoute", (route: RouteOptions) => {
      const schema = (route.schema ?? {}) as { security?: unknown; response?: Record<string, unknown> };
      route.schema = {
        ...schema,
        security: [{ bearer: [] }],
        response: { ...schema.response, 401: schema.response?.[401] ?? errorBody },
      };
    });
    group.addHook("onRequest", ctx.requireToken);
  };
  await app.register(async (writes) => {
    protect(writes);
    await writes.register(measurementRoutes, ctx);
    await writes.register(setpointWriteRoutes, ctx);
  });
  await app.register(async (reads) => {
    if (!ctx.config.CEA_API_OPEN_READS) protect(reads);
    await reads.register(facilityRoutes, ctx);
    await reads.register(sensorRoutes, ctx);
    await reads.register(roomRoutes, ctx);
    await reads.register(liveRoutes, ctx);
    await reads.register(setpointReadRoutes, ctx);
  });
  await app.register(healthRoutes, ctx);
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
}
