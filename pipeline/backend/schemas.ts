import { z } from "zod";
import { SENSOR_KIND_NAMES } from "../../db/kinds.js";
import { isSubnormal, MIN_NORMAL } from "../../db/readings.js";
import { type ControlledQuantity, controlledQuantitySchema } from "../../db/site.js";
import type { Config } from "../runtime/config.js";
import { batchQuickPath } from "./batch-quick.js";
import { INSTANT_MAX, INSTANT_MIN, toUtc, utcMillis, utcOf } from "./time.js";

// Every request and response shape of the API, in zod. The same schemas
// validate requests, serialize responses and generate the OpenAPI document, so
// they cannot drift apart. The published shapes are documented in
// ops/IMPLEMENTATION_SUMMARY.md; a breaking change goes under a new prefix.
//
// Rule: every value a schema admits is one PostgreSQL accepts. Times are
// converted to canonical UTC text here (the database refuses offsets past
// ±15:59 and years before 1), ids are canonical decimal int4, and text holds
// no NUL, control character or lone surrogate.

export const API_PREFIX = "/api/v1";
export const STATUS_MAX = 64;
export const INT4_MAX = 2_147_483_647;

const id = z.number().int().positive().max(INT4_MAX);
/** An id in a path or query: one canonical decimal form (no sign, leading zero, space, fraction or hex). */
export const idParam = z
  .string()
  .regex(/^[1-9][0-9]{0,9}$/, "a positive decimal integer without sign, leading zeros or spaces")
  .transform(Number)
  .refine((n) => n <= INT4_MAX, `at most ${INT4_MAX}`);

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to reject them
const CONTROL = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /\p{Cs}/u;
/** Text that reaches the database: NUL cannot be stored, control characters have no business in it, and a lone surrogate would be stored as U+FFFD, not the string that was sent. */
const cleanText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !CONTROL.test(s), "control characters are not allowed")
    .refine((s) => !LONE_SURROGATE.test(s), "not well-formed Unicode (lone surrogate)");

// RFC 3339 with seconds and an offset ("Z" or ±hh:mm, any offset up to ±23:59),
// at most microseconds (the database's precision, so nothing is rounded
// silently); converted to canonical UTC text.
const FRACTION = /\.(\d+)/;
export const instant = z.iso
  .datetime({ offset: true })
  .refine((s) => (FRACTION.exec(s)?.[1]?.length ?? 0) <= 6, "at most 6 fractional digits (microseconds)")
  .transform((s, ctx) => {
    const utc = toUtc(s);
    if (utc === undefined) {
      ctx.addIssue({ code: "custom", message: `outside ${INSTANT_MIN} … ${INSTANT_MAX} (UTC)` });
      return z.NEVER;
    }
    return utc;
  });

/** Body schemas of the write routes; the time bounds come from the configuration. */
export function writeSchemas(config: Pick<Config, "CEA_TIME_FLOOR" | "CEA_FUTURE_TOLERANCE_S" | "CEA_BATCH_MAX">) {
  const floor = toUtc(config.CEA_TIME_FLOOR) ?? INSTANT_MIN;
  const toleranceMs = config.CEA_FUTURE_TOLERANCE_S * 1000;
  const time = instant.superRefine((utc, ctx) => {
    if (utc < floor) ctx.addIssue({ code: "custom", message: `before the time floor ${config.CEA_TIME_FLOOR}` });
    else if (utcMillis(utc) > Date.now() + toleranceMs)
      ctx.addIssue({
        code: "custom",
        message: `more than ${config.CEA_FUTURE_TOLERANCE_S} s in the future`,
      });
  });
  const measurementIn = z
    .strictObject({
      time: time.describe("RFC 3339 with an offset, e.g. 2024-01-15T10:30:00Z; stored in UTC to the microsecond"),
      sensor_id: id.describe("an existing sensor's id"),
      value: z
        .number()
        .refine((v) => !isSubnormal(v), `a subnormal number (0 < |value| < ${MIN_NORMAL}) is no reading`)
        .describe("a finite number, 0 or of magnitude at least 2.2250738585072014e-308"),
      status: cleanText(STATUS_MAX).nullable().optional(),
    })
    .describe("one reading");
  const limits = { min: 1, max: config.CEA_BATCH_MAX };
  const batchIn = z
    .array(measurementIn)
    .min(limits.min)
    .max(limits.max)
    .describe(`1 to ${config.CEA_BATCH_MAX} readings (CEA_BATCH_MAX)`);
  // batchIn's parse for a body it admits, at a fraction of the cost; undefined: ask batchIn
  const batchQuick = batchQuickPath(measurementIn, limits);
  return { measurementIn, batchIn, batchQuick };
}

export type MeasurementIn = z.infer<ReturnType<typeof writeSchemas>["measurementIn"]>;

export const storedMeasurement = z.object({
  time: z.string().describe("UTC, ISO 8601 with microseconds"),
  sensor_id: z.number().int(),
  value: z.number(),
  status: z.string().nullable(),
});

export const batchResult = z.object({
  received: z.number().int(),
  inserted: z.number().int(),
  already_present: z.number().int(),
});

export const issue = z.object({
  path: z.string().describe('the field, e.g. "value"; "" for the body as a whole'),
  message: z.string(),
  index: z.number().int().optional().describe("batch route: position of the item in the array"),
});

/** Every error response: a stable code, a sentence, and (validation) the fields at fault. */
export const errorBody = z.looseObject({
  error: z.string(),
  message: z.string(),
  issues: z.array(issue).optional(),
  request_id: z.string().optional(),
  existing: storedMeasurement.optional(),
  conflicts: z.array(storedMeasurement).optional(),
});
export type ErrorBody = z.infer<typeof errorBody>;

export const idParams = z.strictObject({ id: idParam });

export const sensorQuery = z.strictObject({
  room_id: idParam.optional(),
  device_id: idParam.optional(),
  unit: cleanText(32).optional(),
  /** What the sensors measure (db/kinds.ts): air_temperature, relative_humidity, co2, air_vpd, … */
  kind: z.enum(SENSOR_KIND_NAMES).optional(),
});

/**
 * A status value's name from the CAN database's value table (KCD LabelSet, DBC VAL_). Present only for a
 * sensor whose signal has a value table; null when the value has no entry in it.
 */
const label = z
  .string()
  .nullable()
  .optional()
  .describe(
    "the value's name in the signal's value table (CAN database); null: the table has no entry for this value; absent: the sensor's signal has no value table",
  );

const valueTable = z
  .record(z.string(), z.string())
  .nullable()
  .describe(
    'the signal\'s value table as stored values → names, e.g. {"0": "OK", "255": "No sensor"}; a range of values is keyed "lo..hi"; null: no value table',
  );

export const sensor = z.object({
  id: z.number().int(),
  name: z.string(),
  unit: z.string(),
  data_type: z.string(),
  channel: z.number().int(),
  calibration_offset: z.number(),
  device_id: z.number().int(),
  device_name: z.string(),
  room_id: z.number().int(),
  room_name: z.string(),
  rack_id: z.number().int().nullable(),
  kind: z.string().nullable().describe("what it measures (sensor_kind); null when the site file gives none"),
  quantity: z.string().nullable(),
  labels: valueTable,
});

export const sensorList = z.object({ sensors: z.array(sensor) });

export const facilityTree = z.object({
  facility: z.object({ id: z.number().int(), name: z.string(), timezone: z.string() }),
  rooms: z.array(
    z.object({
      id: z.number().int(),
      name: z.string(),
      zone_id: z.number().int().nullable(),
      target_vpd: z.number().nullable(),
      target_temp: z.number().nullable(),
      racks: z.array(z.object({ id: z.number().int(), name: z.string() })),
      devices: z.array(
        z.object({
          id: z.number().int(),
          name: z.string(),
          type: z.string(),
          node_id: z.number().int().nullable(),
          rack_id: z.number().int().nullable(),
          sensors: z.array(
            z.object({
              id: z.number().int(),
              name: z.string(),
              unit: z.string(),
              data_type: z.string(),
              kind: z.string().nullable(),
            }),
          ),
        }),
      ),
    }),
  ),
});

export const RESOLUTIONS = ["raw", "hourly", "daily"] as const;

const DAY_MS = 86_400_000;

/**
 * The history window [start, end) in canonical UTC, defaults resolved (end:
 * now; start: end - 24 h, never before INSTANT_MIN), start before end to the
 * microsecond: a window the schema admits is one the queries can run.
 */
export const historyQuery = z
  .strictObject({
    start: instant.optional().describe("window start (inclusive), RFC 3339 with an offset; default end - 24 h"),
    end: instant.optional().describe("window end (exclusive), RFC 3339 with an offset; default now"),
    resolution: z.enum([...RESOLUTIONS, "auto"]).default("auto"),
    format: z.enum(["json", "csv"]).optional().describe("csv: same as Accept: text/csv"),
  })
  .transform((q, ctx) => {
    const end = q.end ?? utcOf(Date.now());
    // a day before end, keeping end's microseconds; a text before year 1 starts with "-" and sorts first
    const dayBefore = `${utcOf(utcMillis(end) - DAY_MS).slice(0, 23)}${end.slice(23)}`;
    const start = q.start ?? (dayBefore > INSTANT_MIN ? dayBefore : INSTANT_MIN);
    if (start >= end) {
      ctx.addIssue({ code: "custom", path: ["start"], message: "must be before end" });
      return z.NEVER;
    }
    return { ...q, start, end };
  });
export type HistoryQuery = z.infer<typeof historyQuery>;

export const rawPoint = z.object({ time: z.string(), value: z.number(), status: z.string().nullable(), label });
export const aggPoint = z.object({
  time: z.string().describe("bucket start, UTC"),
  min: z.number(),
  max: z.number(),
  avg: z.number(),
  count: z.number().int(),
});
const points = z
  .array(z.union([rawPoint, aggPoint]))
  .describe(
    "raw: time, value, status (label for a sensor with a value table); hourly/daily: time, min, max, avg, count",
  );

const historyMeta = {
  resolution: z.enum(RESOLUTIONS).describe("the resolution used"),
  requested_resolution: z.enum([...RESOLUTIONS, "auto"]),
  start: z.string(),
  end: z.string(),
  timezone: z.string().describe("the facility's time zone; times are UTC"),
  point_budget: z.number().int(),
};

export const sensorHistory = z.object({
  ...historyMeta,
  sensor: z.object({ id: z.number().int(), name: z.string(), unit: z.string() }),
  points,
});

export const roomHistory = z.object({
  ...historyMeta,
  room: z.object({ id: z.number().int(), name: z.string() }),
  series: z.array(z.object({ sensor_id: z.number().int(), name: z.string(), unit: z.string(), points })),
});

export const liveValue = z.object({
  sensor_id: z.number().int(),
  name: z.string(),
  value: z.number(),
  time: z.string(),
  status: z
    .string()
    .nullable()
    .describe("null = a good reading; out_of_range = outside the CAN database's physical range"),
  label,
  age_s: z.number(),
  stale: z.boolean(),
});

export const liveValues = z.object({
  stale_after_s: z.number(),
  values: z.array(liveValue),
  unreadable: z.array(z.string()).describe("live-hash fields that did not hold a valid value"),
});

export const liveEntry = z.object({
  value: z.number(),
  time: z.string(),
  name: z.string(),
  // absent in entries of older scanners: a good reading
  status: z.string().nullable().optional(),
});

export const health = z.object({
  status: z.enum(["ok", "unavailable"]),
  down: z.array(z.enum(["postgres", "redis"])),
  postgres: z.object({
    ok: z.boolean(),
    error: z.string().optional(),
    edition: z.enum(["community", "apache"]).optional(),
    timescaledb_version: z.string().nullable().optional(),
    features: z.record(z.string(), z.string()).optional(),
    last_measurement_time: z.string().nullable().optional(),
  }),
  redis: z.object({
    ok: z.boolean(),
    error: z.string().optional(),
    stream: z.object({ key: z.string(), length: z.number().int() }).optional(),
    group: z
      .object({
        name: z.string(),
        exists: z.boolean(),
        pending: z.number().int().nullable(),
        lag: z.number().int().nullable(),
        consumers: z.number().int().nullable(),
      })
      .optional(),
  }),
  alerts: z
    .object({
      evaluated_at: z.string().nullable().describe("when the conditions were last evaluated (every CEA_ALERT_EVAL_MS)"),
      incomplete: z.string().nullable().describe("what the last evaluation could not read (database or Redis down)"),
      active: z.array(
        z.object({
          id: z.string(),
          condition: z.enum([
            "sensor_silent",
            "room_no_good_reading",
            "room_out_of_band",
            "backlog_high",
            "dead_letters_high",
            "database_degraded",
            "worker_degraded",
            "timescaledb_job_failing",
          ]),
          severity: z.enum(["warning", "critical"]),
          summary: z.string(),
          since: z.string(),
        }),
      ),
      silent_sensors: z.array(
        z.object({
          sensor_id: z.number().int(),
          sensor: z.string(),
          kind: z.string().nullable(),
          room: z.string(),
          last_reading: z.string().nullable(),
          age_s: z.number().nullable().describe("null: no reading within the last 24 h"),
          silent_after_s: z.number(),
        }),
      ),
    })
    .describe("the alert conditions (ops/prometheus/cea-alerts.yml evaluates the same from the metrics)"),
});
export type Health = z.infer<typeof health>;

/** A history answer: JSON by default, CSV text when asked for. */
export const historyResponse = <T extends z.ZodType>(json: T) => ({
  description: "the history (JSON), or CSV with Accept: text/csv / format=csv",
  content: {
    "application/json": { schema: json },
    "text/csv": { schema: z.string().describe("UTC times; '#' comment lines name the facility time zone") },
  },
});

// ---------------------------------------------------------------- setpoints and actuator events

/** Physically sensible targets per controlled quantity (the actuators' own limits narrow them further). */
export const SETPOINT_RANGES = {
  air_temperature: { min: -10, max: 50 },
  relative_humidity: { min: 0, max: 100 },
  air_vpd: { min: 0, max: 5 },
  co2: { min: 0, max: 5_000 },
} as const satisfies Record<ControlledQuantity, { min: number; max: number }>;

export const setpointIn = z
  .strictObject({
    quantity: controlledQuantitySchema.describe("named like the sensor kind the controller reads"),
    period: z.enum(["day", "night", "any"]).default("any").describe("day / night follow the room's lights-on window"),
    target: z.number().finite(),
    band: z.number().finite().positive().describe("tolerance on each side of the target, in the quantity's unit"),
    effective_from: instant.optional().describe("default: now"),
  })
  .superRefine((s, ctx) => {
    const r = SETPOINT_RANGES[s.quantity];
    if (s.target < r.min || s.target > r.max)
      ctx.addIssue({
        code: "custom",
        path: ["target"],
        message: `${s.quantity} target must be within ${r.min} … ${r.max}`,
      });
  });
export type SetpointIn = z.infer<typeof setpointIn>;
export const setpointsBody = z.strictObject({
  setpoints: z
    .array(setpointIn)
    .min(1)
    .max(32)
    .superRefine((sps, ctx) => {
      // two for one quantity, period and start contradict each other: which would be in force?
      const first = new Map<string, number>();
      sps.forEach((s, i) => {
        const key = `${s.quantity}|${s.period}|${s.effective_from ?? "now"}`;
        const j = first.get(key);
        if (j === undefined) first.set(key, i);
        else
          ctx.addIssue({
            code: "custom",
            path: [i],
            message: `same quantity, period and effective_from as setpoints.${j}; give one setpoint per quantity and period at a time`,
          });
      });
    }),
});

export const setpointOut = z.object({
  setpoint_id: z.number().int(),
  quantity: z.string(),
  period: z.enum(["day", "night", "any"]),
  target: z.number(),
  band: z.number().nullable(),
  effective_from: z.string(),
  created_by: z.string().nullable(),
});
export const setpointsResponse = z.object({
  room_id: z.number().int(),
  setpoints: z.array(setpointOut).describe("per quantity and period the one in force, then any scheduled later"),
});

export const eventsQuery = z
  .strictObject({
    start: instant.optional().describe("window start (inclusive); default end - 24 h"),
    end: instant.optional().describe("window end (exclusive); default now"),
    format: z.enum(["json", "csv"]).optional().describe("csv: same as Accept: text/csv"),
  })
  .transform((q, ctx) => {
    const end = q.end ?? utcOf(Date.now());
    const start = q.start ?? utcOf(Math.max(utcMillis(end) - DAY_MS, utcMillis(INSTANT_MIN)));
    if (start >= end) {
      ctx.addIssue({ code: "custom", path: ["start"], message: "must be before end" });
      return z.NEVER;
    }
    return { ...q, start, end };
  });
export const actuatorEventOut = z.object({
  event_id: z.number().int(),
  time: z.string(),
  device_id: z.number().int(),
  actuator: z.string(),
  action: z.string(),
  quantity: z.string().nullable(),
  value: z.number().nullable(),
  setpoint: z.number().nullable(),
  band: z.number().nullable(),
  setpoint_id: z.number().int().nullable(),
  state: z.boolean().nullable(),
  reason: z.string().nullable(),
  dry_run: z.boolean(),
  command_id: z.string().nullable(),
  ack_status: z.string().nullable(),
});
export const actuatorEventsResponse = z.object({
  room_id: z.number().int(),
  start: z.string(),
  end: z.string(),
  truncated: z.boolean().describe("true when the window holds more than the answer's limit: ask for a shorter one"),
  events: z.array(actuatorEventOut),
});
