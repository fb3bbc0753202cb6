import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { batchFastCheck } from "../../pipeline/backend/fast-check.js";
import { writeSchemas } from "../../pipeline/backend/schemas.js";
import { loadConfig } from "../../pipeline/runtime/config.js";

// The batch route's quick check may only ever vouch for bodies the zod schema
// accepts (the schema keeps deciding, and naming the fields, for the rest);
// and it must vouch for ordinary valid bodies, or it saves nothing.

const config = loadConfig({ CEA_API_TOKEN: "x".repeat(20) });
const { batchIn } = writeSchemas(config);
const quick = batchFastCheck(config);
const FLOOR = Date.parse(config.CEA_TIME_FLOOR);

const pad = (n: number) => String(n).padStart(2, "0");
const withOffset = (ms: number, minutes: number, frac: string) => {
  const local = new Date(ms + minutes * 60_000).toISOString().slice(0, 19);
  if (minutes === 0) return `${local}${frac}Z`;
  const a = Math.abs(minutes);
  return `${local}${frac}${minutes < 0 ? "-" : "+"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
};

const validItem = fc.record(
  {
    time: fc
      .tuple(
        fc.integer({ min: FLOOR, max: Date.now() - 1000 }),
        fc.constantFrom(0, 60, -300, 330, 840, -720),
        fc.constantFrom("", ".1", ".123", ".123456"),
      )
      .map(([ms, off, frac]) => withOffset(ms, off, frac)),
    sensor_id: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    value: fc.double({ noNaN: true, noDefaultInfinity: true }),
    status: fc.option(fc.string({ maxLength: 70 }), { nil: null }),
  },
  { requiredKeys: ["time", "sensor_id", "value"] },
);

// near-valid items: one field replaced by something arbitrary or edgy
const edgy = fc.oneof(
  fc.jsonValue(),
  fc.constantFrom(
    "2024-02-29T10:00:00Z",
    "2023-02-29T10:00:00Z",
    "2024-01-15T24:00:00Z",
    "2024-01-15T10:30:60Z",
    "2024-01-15T10:30:00.1234567Z",
    "2024-01-15T10:30:00+24:00",
    "2024-01-15T10:30:00+0200",
    "2024-01-15T10:30Z",
    "1999-12-31T23:59:59Z",
    "2999-01-01T00:00:00Z",
    "\u0000",
    "a\nb",
    "\ud800",
    "x".repeat(65),
    0,
    -1,
    1.5,
    2 ** 31,
    1e308,
  ),
);
const nearItem = fc
  .tuple(validItem, fc.constantFrom("time", "sensor_id", "value", "status", "extra"), edgy)
  .map(([item, key, v]) => ({ ...item, [key]: v }) as Record<string, unknown>);

describe("batch route quick check", () => {
  it("vouches only for bodies the schema accepts", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.array(validItem, { maxLength: 5 }),
          fc.array(fc.oneof(validItem, nearItem), { minLength: 1, maxLength: 5 }),
          fc.jsonValue(),
        ),
        (body) => {
          if (quick(body)) expect(batchIn.safeParse(body).success).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("vouches for valid batches, so the route skips the item-by-item parse", () => {
    fc.assert(
      fc.property(fc.array(validItem, { minLength: 1, maxLength: 20 }), (body) => {
        const short = body.every((i) => i.status == null || i.status.length <= 64);
        // statuses from fc.string() hold no control characters only by chance; the schema decides those
        if (short && batchIn.safeParse(body).success) expect(quick(body)).toBe(true);
      }),
      { numRuns: 1000 },
    );
    expect(quick([{ time: "2024-01-15T10:30:00Z", sensor_id: 101, value: 23.5, status: "ok" }])).toBe(true);
  });
});
