import { type FastifyPluginAsyncZod, validatorCompiler } from "fastify-type-provider-zod";
import { insertBatch, type StoredMeasurement } from "../../../db/queries/measurement.js";
import type { ApiContext } from "../context.js";
import { dbCall, fromDbError, HttpError } from "../http-errors.js";
import { batchResult, errorBody, storedMeasurement, writeSchemas } from "../schemas.js";

const FK_VIOLATION = "23503";
/** The parameters a write statement takes: a database data error names them (it cannot say which one). */
const FIELDS = ["time", "sensor_id", "value", "status"] as const;
const MAX_CONFLICTS = 100;
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
  const { measurementIn, batchIn, batchQuick } = writeSchemas(ctx.config);
  const batchMax = ctx.config.CEA_BATCH_MAX;

  app.post(
    "/measurement",
    {
      schema: {
        tags: ["measurements"],
        summary: "Store one reading",
        description:
          "201 with the stored record when new; 200 with the stored record when the identical reading is already stored; " +
          "409 when the same (sensor_id, time) holds another value or status.",
        body: measurementIn,
        response: { 200: storedMeasurement, 201: storedMeasurement, ...errors },
      },
    },
    async (req, reply) => {
      const m = req.body;
      const unknown = await dbCall(["sensor_id"], () => ctx.directory.unknownSensors([m.sensor_id]));
      if (unknown.length > 0)
        throw unknownSensor([m.sensor_id], [{ path: "sensor_id", message: `no sensor with id ${m.sensor_id}` }]);
      const status = m.status ?? null;
      let inserted: boolean;
      let stored: StoredMeasurement;
      try {
        ({ inserted, stored } = await ctx.writer.write(
          { time: m.time, sensor_id: m.sensor_id, value: m.value, status },
          // still queued past the request's deadline, the answer (503) is out: then it is not written
          Date.now() + ctx.config.CEA_API_REQUEST_TIMEOUT_MS,
        ));
      } catch (err) {
        // the sensor went away between the cache check and the insert
        if ((err as { code?: string }).code === FK_VIOLATION)
          throw unknownSensor([m.sensor_id], [{ path: "sensor_id", message: `no sensor with id ${m.sensor_id}` }]);
        throw fromDbError(err, FIELDS);
      }
      // status set and the record returned, never sent from here: past the request's deadline the answer is already out
      if (inserted) {
        reply.code(201);
        return stored;
      }
      if (stored.value === m.value && stored.status === status) {
        reply.code(200);
        return stored;
      }
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
        body: batchIn,
        response: { 200: batchResult, 201: batchResult, ...errors },
      },
      // the schema's own parse, column by column (batch-quick.ts); a body it does not vouch for goes to the
      // schema, which decides and names the fields at fault (the route validates only its body)
      validatorCompiler: ({ method, url, httpPart }) => {
        const bySchema = validatorCompiler({ schema: batchIn, method, url, httpPart });
        return (data: unknown) => {
          const value = batchQuick(data);
          return value === undefined ? bySchema(data) : { value };
        };
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
      const unknown = new Set(
        await dbCall(["sensor_id"], () => ctx.directory.unknownSensors(items.map((i) => i.sensor_id))),
      );
      if (unknown.size > 0) {
        const issues = items
          .map((it, index) => ({ index, sid: it.sensor_id }))
          .filter((x) => unknown.has(x.sid))
          .slice(0, 100)
          .map(({ index, sid }) => ({ index, path: "sensor_id", message: `no sensor with id ${sid}` }));
        throw unknownSensor([...unknown], issues);
      }
      const rows = items.map((i) => ({
        time: i.time,
        sensor_id: i.sensor_id,
        value: i.value,
        status: i.status ?? null,
      }));
      const client = await dbCall(FIELDS, () => ctx.pool.connect());
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        const { inserted, conflicts } = await insertBatch(client, rows, MAX_CONFLICTS + 1);
        if (conflicts.length > 0) {
          await client.query("ROLLBACK");
          const count = conflicts.length > MAX_CONFLICTS ? `more than ${MAX_CONFLICTS}` : String(conflicts.length);
          throw new HttpError(
            409,
            "conflict",
            `${count} reading(s) collide with stored readings of another value or status; nothing was written`,
            { conflicts: conflicts.slice(0, MAX_CONFLICTS) },
          );
        }
        await client.query("COMMIT");
        reply.code(inserted > 0 ? 201 : 200);
        return { received: items.length, inserted, already_present: items.length - inserted };
      } catch (err) {
        if (err instanceof HttpError) throw err;
        // a connection that failed mid-transaction is not handed out again
        broken = err as Error;
        await client.query("ROLLBACK").catch(() => undefined);
        if ((err as { code?: string }).code === FK_VIOLATION)
          throw unknownSensor([], [{ path: "sensor_id", message: "a sensor was removed while writing" }]);
        throw fromDbError(err, FIELDS);
      } finally {
        client.release(broken);
      }
    },
  );
};
