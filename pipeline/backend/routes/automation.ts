import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import {
  type ActuatorEventRow,
  insertSetpoints,
  listActuatorEvents,
  SetpointClash,
  type SetpointRow,
  setpointsInForce,
} from "../../../db/queries/automation.js";
import { getRoom } from "../../../db/queries/metadata.js";
import type { SiteActuator } from "../../../db/site.js";
import type { ApiContext } from "../context.js";
import { csvText, wantsCsv } from "../history.js";
import { dbCall, HttpError } from "../http-errors.js";
import {
  actuatorEventsResponse,
  errorBody,
  eventsQuery,
  historyResponse,
  idParams,
  type SetpointIn,
  setpointsBody,
  setpointsResponse,
} from "../schemas.js";
import { utcOf } from "../time.js";

// A room's setpoints (read and written; automation-service applies a change at
// its next decision) and its actuator events (what the controller decided and
// why). A setpoint is checked against the room's actuators in the site file:
// a band no wider than an actuator's hysteresis cannot be met, and a target
// outside an actuator's limits cannot be reached.

/** Most events one answer holds. */
const EVENTS_MAX = 10_000;

/** What is wrong with each setpoint for this room's actuators: [path, message]. */
export function setpointProblems(
  actuators: readonly SiteActuator[],
  roomId: number,
  setpoints: readonly SetpointIn[],
): [string, string][] {
  const out: [string, string][] = [];
  setpoints.forEach((s, i) => {
    const serving = actuators.filter((a) => a.room_id === roomId && a.quantity === s.quantity);
    if (!serving.length) {
      out.push([`setpoints.${i}.quantity`, `room ${roomId} has no actuator for ${s.quantity}`]);
      return;
    }
    for (const a of serving) {
      if (s.band <= a.hysteresis)
        out.push([
          `setpoints.${i}.band`,
          `band ${s.band} cannot be met: ${a.id} switches with a hysteresis of ${a.hysteresis}; give more than that`,
        ]);
      if (a.target_min !== undefined && s.target < a.target_min)
        out.push([`setpoints.${i}.target`, `below what ${a.id} allows (${a.target_min} … ${a.target_max ?? "∞"})`]);
      if (a.target_max !== undefined && s.target > a.target_max)
        out.push([`setpoints.${i}.target`, `above what ${a.id} allows (${a.target_min ?? "-∞"} … ${a.target_max})`]);
    }
  });
  return out;
}

const setpointOut = (r: SetpointRow) => ({
  setpoint_id: r.setpoint_id,
  quantity: r.quantity,
  period: r.period,
  target: r.target,
  band: r.tolerance,
  effective_from: r.effective_from_utc,
  created_by: r.created_by,
});

const eventOut = (e: ActuatorEventRow) => ({
  event_id: e.event_id,
  time: utcOf(e.time.getTime()),
  device_id: e.device_id,
  actuator: e.actuator,
  action: e.action,
  quantity: e.quantity,
  value: e.value,
  setpoint: e.setpoint,
  band: e.band,
  setpoint_id: e.setpoint_id,
  state: e.state,
  reason: e.reason,
  dry_run: e.dry_run,
  command_id: e.command_id,
  ack_status: e.ack_status,
});

async function knownRoom(ctx: ApiContext, id: number): Promise<void> {
  const room = await dbCall(["id"], () => getRoom(ctx.pool, id));
  if (!room) throw new HttpError(404, "not_found", `no room with id ${id}`);
}

export const setpointReadRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  app.get(
    "/rooms/:id/setpoints",
    {
      schema: {
        tags: ["automation"],
        summary: "The room's setpoints: per quantity and period the one in force, then those scheduled later",
        params: idParams,
        response: { 200: setpointsResponse, 400: errorBody, 404: errorBody, 409: errorBody, 503: errorBody },
      },
    },
    async (req) => {
      await knownRoom(ctx, req.params.id);
      const rows = await dbCall([], () => setpointsInForce(ctx.pool, new Date(), req.params.id));
      return { room_id: req.params.id, setpoints: rows.map(setpointOut) };
    },
  );

  app.get(
    "/rooms/:id/actuator-events",
    {
      schema: {
        tags: ["automation"],
        summary: "The room's actuator decisions over [start, end): action, observed value, setpoint, band, reason",
        description: "JSON, or CSV with Accept: text/csv or format=csv. Times are UTC.",
        params: idParams,
        querystring: eventsQuery,
        response: {
          200: historyResponse(actuatorEventsResponse),
          400: errorBody,
          404: errorBody,
          503: errorBody,
        },
      },
    },
    async (req, reply) => {
      await knownRoom(ctx, req.params.id);
      const { start, end } = req.query;
      const rows = await dbCall(["start", "end"], () =>
        listActuatorEvents(ctx.pool, req.params.id, new Date(start), new Date(end), EVENTS_MAX + 1),
      );
      const truncated = rows.length > EVENTS_MAX;
      const events = rows.slice(0, EVENTS_MAX).map(eventOut);
      if (wantsCsv(req.query.format, req.headers.accept)) {
        reply.type("text/csv; charset=utf-8");
        const cols = [
          "time",
          "actuator",
          "action",
          "state",
          "quantity",
          "value",
          "setpoint",
          "band",
          "reason",
          "dry_run",
          "command_id",
          "ack_status",
        ] as const;
        const cell = (v: unknown) => (v === null ? "" : typeof v === "string" ? csvText(v) : String(v));
        const lines = [
          `# room ${req.params.id}; window: [${start}, ${end})${truncated ? `; truncated at ${EVENTS_MAX} events` : ""}`,
          cols.join(","),
          ...events.map((e) => cols.map((c) => cell(e[c])).join(",")),
        ];
        return `${lines.join("\n")}\n`;
      }
      return { room_id: req.params.id, start, end, truncated, events };
    },
  );
};

export const setpointWriteRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  app.put(
    "/rooms/:id/setpoints",
    {
      schema: {
        tags: ["automation"],
        summary: "New setpoints for the room (kept with their history; the latest in force wins)",
        description:
          "Each applies from effective_from (default now) at automation-service's next decision. 400 names the field: an unknown quantity, a band no wider than an actuator's hysteresis, a target outside an actuator's limits.",
        params: idParams,
        body: setpointsBody,
        response: { 200: setpointsResponse, 400: errorBody, 404: errorBody, 409: errorBody, 503: errorBody },
      },
    },
    async (req) => {
      await knownRoom(ctx, req.params.id);
      const problems = setpointProblems(ctx.actuators, req.params.id, req.body.setpoints);
      if (problems.length)
        throw new HttpError(400, "validation_failed", problems.map(([p, m]) => `${p}: ${m}`).join("; "), {
          issues: problems.map(([path, message]) => ({ path, message })),
        });
      const rows = await dbCall(["setpoints"], () =>
        insertSetpoints(
          ctx.pool,
          req.body.setpoints.map((s) => ({
            room_id: req.params.id,
            quantity: s.quantity,
            period: s.period,
            target: s.target,
            tolerance: s.band,
            // the normalized RFC 3339 text, not a Date: a Date would drop the microseconds
            effective_from: s.effective_from ?? null,
            created_by: "api",
          })),
        ).catch((err: unknown) => {
          if (!(err instanceof SetpointClash)) throw err;
          const issues = err.clashes.map(({ index, existing }) => ({
            path: `setpoints.${index}.effective_from`,
            message: existing
              ? `room ${req.params.id} already has the ${existing.quantity} setpoint (${existing.period}) from ${existing.effective_from_utc} with target ${existing.target}, band ${existing.tolerance ?? "none"}; stored setpoints are history and are not rewritten: give another effective_from`
              : "another request stored a setpoint with this key at the same time; repeat the request",
          }));
          throw new HttpError(409, "conflict", issues.map((i) => `${i.path}: ${i.message}`).join("; "), { issues });
        }),
      );
      return { room_id: req.params.id, setpoints: rows.map(setpointOut) };
    },
  );
};
