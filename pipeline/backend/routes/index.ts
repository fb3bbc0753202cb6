import type { FastifyInstance } from "fastify";
import type { ApiContext } from "../context.js";
import { facilityRoutes } from "./facility.js";
import { healthRoutes } from "./health.js";
import { liveRoutes } from "./live.js";
import { measurementRoutes } from "./measurements.js";
import { roomRoutes } from "./rooms.js";
import { sensorRoutes } from "./sensors.js";

/**
 * Every route of the API, registered here and nowhere else. Writes always need
 * the bearer token; reads need it unless CEA_API_OPEN_READS=true; health and
 * the OpenAPI document are open.
 */
export async function registerRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  await app.register(async (writes) => {
    writes.addHook("onRequest", ctx.requireToken);
    await writes.register(measurementRoutes, ctx);
  });
  await app.register(async (reads) => {
    if (!ctx.config.CEA_API_OPEN_READS) reads.addHook("onRequest", ctx.requireToken);
    await reads.register(facilityRoutes, ctx);
    await reads.register(sensorRoutes, ctx);
    await reads.register(roomRoutes, ctx);
    await reads.register(liveRoutes, ctx);
  });
  await app.register(healthRoutes, ctx);
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
}
