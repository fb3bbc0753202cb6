import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { getSensor, listSensors, type SensorInfo } from "../../../db/queries/metadata.js";
import type { ApiContext } from "../context.js";
import { historyCsv, labelHistory, loadHistory, wantsCsv } from "../history.js";
import { dbCall, HttpError } from "../http-errors.js";
import {
  errorBody,
  historyQuery,
  historyResponse,
  idParams,
  sensor,
  sensorHistory,
  sensorList,
  sensorQuery,
} from "../schemas.js";

const notFound = (id: number) => new HttpError(404, "not_found", `no sensor with id ${id}`);
const errors = { 400: errorBody, 401: errorBody, 404: errorBody, 422: errorBody, 503: errorBody };

export const sensorRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  const withLabels = (s: SensorInfo) => ({ ...s, labels: ctx.labels.get(s.id)?.table ?? null });
  app.get(
    "/sensors",
    {
      schema: {
        tags: ["metadata"],
        summary: "Sensors, optionally filtered by room, device, unit and kind",
        querystring: sensorQuery,
        response: { 200: sensorList, ...errors },
      },
    },
    async (req) => ({
      sensors: (await dbCall(["room_id", "device_id", "unit"], () => listSensors(ctx.pool, req.query))).map(withLabels),
    }),
  );

  app.get(
    "/sensors/:id",
    {
      schema: {
        tags: ["metadata"],
        summary: "One sensor with its device and room",
        params: idParams,
        response: { 200: sensor, ...errors },
      },
    },
    async (req) => {
      const s = await dbCall(["id"], () => getSensor(ctx.pool, req.params.id));
      if (!s) throw notFound(req.params.id);
      return withLabels(s);
    },
  );

  app.get(
    "/sensors/:id/history",
    {
      schema: {
        tags: ["history"],
        summary: "One sensor's history over [start, end)",
        description:
          "resolution=raw|hourly|daily|auto (auto: the finest whose point count stays within CEA_HISTORY_POINT_BUDGET). " +
          "CSV with Accept: text/csv or format=csv (times UTC; the facility time zone in a comment line and in X-Facility-Timezone).",
        params: idParams,
        querystring: historyQuery,
        response: { 200: historyResponse(sensorHistory), ...errors },
      },
    },
    async (req, reply) => {
      const [s, timezone] = await dbCall(["id"], () =>
        Promise.all([getSensor(ctx.pool, req.params.id), ctx.directory.timezone()]),
      );
      if (!s) throw notFound(req.params.id);
      const h = await dbCall(["start", "end"], () => loadHistory(ctx.pool, ctx.config, [s.id], req.query));
      labelHistory(h, ctx.labels);
      if (wantsCsv(req.query.format, req.headers.accept)) {
        reply.type("text/csv; charset=utf-8").header("x-facility-timezone", timezone);
        return historyCsv(h, timezone, new Map([[s.id, s.name]]));
      }
      const { bySensor, ...meta } = h;
      return { ...meta, timezone, sensor: { id: s.id, name: s.name, unit: s.unit }, points: bySensor.get(s.id) ?? [] };
    },
  );
};
