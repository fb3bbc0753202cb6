import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { getRoom, listSensors } from "../../../db/queries/metadata.js";
import type { ApiContext } from "../context.js";
import { historyCsv, labelHistory, loadHistory, wantsCsv } from "../history.js";
import { dbCall, HttpError } from "../http-errors.js";
import { errorBody, historyQuery, historyResponse, idParams, roomHistory } from "../schemas.js";

export const roomRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  app.get(
    "/rooms/:id/history",
    {
      schema: {
        tags: ["history"],
        summary: "History of every sensor of a room over [start, end)",
        description:
          "Same parameters as /sensors/{id}/history; the point budget of resolution=auto applies to the room's total.",
        params: idParams,
        querystring: historyQuery,
        response: {
          200: historyResponse(roomHistory),
          400: errorBody,
          401: errorBody,
          404: errorBody,
          422: errorBody,
          503: errorBody,
        },
      },
    },
    async (req, reply) => {
      const [room, sensors, timezone] = await dbCall(["id"], () =>
        Promise.all([
          getRoom(ctx.pool, req.params.id),
          listSensors(ctx.pool, { room_id: req.params.id }),
          ctx.directory.timezone(),
        ]),
      );
      if (!room) throw new HttpError(404, "not_found", `no room with id ${req.params.id}`);
      const h = await dbCall(["start", "end"], () =>
        loadHistory(
          ctx.pool,
          ctx.config,
          sensors.map((s) => s.id),
          req.query,
        ),
      );
      labelHistory(h, ctx.labels);
      if (wantsCsv(req.query.format, req.headers.accept)) {
        reply.type("text/csv; charset=utf-8").header("x-facility-timezone", timezone);
        return historyCsv(h, timezone, new Map(sensors.map((s) => [s.id, s.name])));
      }
      const { bySensor, ...meta } = h;
      return {
        ...meta,
        timezone,
        room,
        series: sensors.map((s) => ({ sensor_id: s.id, name: s.name, unit: s.unit, points: bySensor.get(s.id) ?? [] })),
      };
    },
  );
};
