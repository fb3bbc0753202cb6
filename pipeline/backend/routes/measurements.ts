import { type FastifyPluginAsyncZod, validatorCompiler } from "fastify-type-provider-zod";
import { stagedConflicts, writeMeasurements } from "../../../db/measurements.js";
import type { StoredMeasurement } from "../../../db/queries/measurement.js";
import type { ApiContext } from "../context.js";
import { batchFastCheck } from "../fast-check.js";
import { HttpError } from "../http-errors.js";
import { batchResult, errorBody, storedMeasurement, writeSchemas } from "../schemas.js";

const FK_VIOLATION = "23503";
const unknownSensor = (ids: number[], issues: { path: string; message: string; index?: number }[]) =>
  new HttpError(422, "unknown_sensor", `sensor_id: no sensor with id ${ids.join(", ")}`, { issues });

const errors = {
  400: errorBody,
  401: errorBody,
  409: errorBody,
  413: errorBody,
  415: errorBody,
  422: errorBody,
  503: errorBody,
};

/**
 * The write routes. Idempotency key (sensor_id, time): a retried identical
 * reading answers 200 with the stored record and writes nothing; the same key
 * with another value or status is a 409 naming the stored record.
 */
export const measurementRoutes: FastifyPluginAsyncZod<ApiContext> = async (app, ctx) => {
  const { measurementIn, batchIn } = writeSchemas(ctx.config);
  const batchMax = ctx.config.CEA_BATCH_MAX;
  const certainlyValid = batchFastCheck(ctx.config);

  app.post(
    "/measurement",
    {
      schema: {
        tags: ["measurements"],
        summary: "Store one reading",
        description:
          "201 with the stored record when new; 200 with the stored record when the identical reading is already stored; " +
          "409 when the same (sensor_id, time) holds another value or status.",
        security: [{ bearer: [] }],
        body: measurementIn,
        response: { 200: storedMeasurement, 201: storedMeasurement, ...errors },
      },
    },
    async (req, reply) => {
      const m = req.body;
      if ((await ctx.directory.unknownSensors([m.sensor_id])).length > 0)
        throw unknownSensor([m.sensor_id], [{ path: "sensor_id", message: `no sensor with id ${m.sensor_id}` }]);
      const status = m.status ?? null;
      let inserted: boolean;
      let stored: StoredMeasurement;
      try {
        ({ inserted, stored } = await ctx.writer.write({
          time: m.time,
          sensor_id: m.sensor_id,
          value: m.value,
          status,
        }));
      } catch (err) {
        // the sensor went away between the cache check and the insert
        if ((err as { code?: string }).code === FK_VIOLATION)
          throw unknownSensor([m.sensor_id], [{ path: "sensor_id", message: `no sensor with id ${m.sensor_id}` }]);
        throw err;
      }
      if (inserted) return reply.code(201).send(stored);
      if (stored.value === m.value && stored.status === status) return reply.code(200).send(stored);
      throw new HttpError(
        409,
        "conflict",
        `sensor ${stored.sensor_id} already has a reading at ${stored.time} with another value or status`,
        { existing: stored },
      );
    },
  );

  app.post(
    "/measurements",
    {
      schema: {
        tags: ["measurements"],
        summary: `Store a batch of readings (a JSON array of 1 to ${batchMax})`,
        description:
          "Validated as a whole: any invalid item rejects the batch (per-item issues with index and field) and nothing is written. " +
          "Otherwise one transaction through COPY. 201 when at least one reading was new, 200 when all were already stored. " +
          "409 (nothing written) when any (sensor_id, time) already holds another value or status.",
        security: [{ bearer: [] }],
        body: batchIn,
        response: { 200: batchResult, 201: batchResult, ...errors },
      },
      // the schema (and its error answers) stays in charge; a body the quick
      // check vouches for skips the item-by-item parse (the route validates only its body)
      validatorCompiler: ({ method, url, httpPart }) => {
        const bySchema = validatorCompiler({ schema: batchIn, method, url, httpPart });
        return (data: unknown) => (certainlyValid(data) ? { value: data } : bySchema(data));
      },
      preValidation: async (req) => {
        if (Array.isArray(req.body) && req.body.length > batchMax)
          throw new HttpError(
            413,
            "batch_too_large",
            `the batch holds ${req.body.length} readings; the limit is ${batchMax} (CEA_BATCH_MAX)`,
            { limit: batchMax },
          );
      },
    },
    async (req, reply) => {
      const items = req.body;
      const unknown = new Set(await ctx.directory.unknownSensors(items.map((i) => i.sensor_id)));
      if (unknown.size > 0) {
        const issues = items
          .map((it, index) => ({ index, sid: it.sensor_id }))
          .filter((x) => unknown.has(x.sid))
          .slice(0, 100)
          .map(({ index, sid }) => ({ index, path: "sensor_id", message: `no sensor with id ${sid}` }));
        throw unknownSensor([...unknown], issues);
      }
      const client = await ctx.pool.connect();
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        try {
          const inserted = await writeMeasurements(
            client,
            items.map((i) => ({ time: i.time, sensor_id: i.sensor_id, value: i.value, status: i.status ?? null })),
          );
          // every staged row inserted: none can collide with a stored one
          const conflicts = inserted < items.length ? await stagedConflicts(client) : [];
          if (conflicts.length > 0) {
            await client.query("ROLLBACK");
            throw new HttpError(
              409,
              "conflict",
              `${conflicts.length} reading(s) collide with stored readings of another value or status; nothing was written`,
              { conflicts: conflicts.slice(0, 100) },
            );
          }
          await client.query("COMMIT");
          return reply
            .code(inserted > 0 ? 201 : 200)
            .send({ received: items.length, inserted, already_present: items.length - inserted });
        } catch (err) {
          if (!(err instanceof HttpError)) {
            broken = err as Error;
            // the original error is what matters; a failed ROLLBACK only means the connection is gone
            await client.query("ROLLBACK").catch(() => undefined);
            if ((err as { code?: string }).code === FK_VIOLATION)
              throw unknownSensor([], [{ path: "sensor_id", message: "a sensor was removed while writing" }]);
          }
          throw err;
        }
      } finally {
        client.release(broken);
      }
    },
  );
};
