import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { facilityRows } from "../../../db/queries/metadata.js";
import type { ApiContext } from "../context.js";
import { dbCall, HttpError } from "../http-errors.js";
import { errorBody, facilityTree } from "../schemas.js";

/** GET /facility: rooms with their racks and devices, each device with its sensors. */
export const facilityRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  app.get(
    "/facility",
    {
      schema: {
        tags: ["metadata"],
        summary: "The facility tree: rooms → racks, devices → sensors",
        response: { 200: facilityTree, 401: errorBody, 404: errorBody, 503: errorBody },
      },
    },
    async () => {
      const rows = await dbCall([], () => facilityRows(ctx.pool));
      if (!rows.facility) throw new HttpError(404, "not_found", "no facility in the database (run: cea site sync)");
      return {
        facility: rows.facility,
        rooms: rows.rooms.map((r) => ({
          ...r,
          racks: rows.racks.filter((k) => k.room_id === r.id).map(({ id, name }) => ({ id, name })),
          devices: rows.devices
            .filter((d) => d.room_id === r.id)
            .map((d) => ({
              id: d.id,
              name: d.name,
              type: d.type,
              node_id: d.node_id,
              rack_id: d.rack_id,
              sensors: rows.sensors
                .filter((s) => s.device_id === d.id)
                .map(({ id, name, unit, data_type, kind }) => ({ id, name, unit, data_type, kind })),
            })),
        })),
      };
    },
  );
};
