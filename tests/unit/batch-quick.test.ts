import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { batchQuickPath } from "../../pipeline/backend/batch-quick.js";
import { writeSchemas } from "../../pipeline/backend/schemas.js";
import { arbitraryOf } from "../support/zod-arbitrary.js";

// The batch route's quick path (pipeline/backend/batch-quick.ts) may only
// ever answer what the schema answers: for any body, either it steps aside
// (undefined) or its result equals batchIn's parse, and a body batchIn refuses
// is never taken. Bodies come from the schema itself (tests/support/zod-arbitrary.ts),
// admitted and refused alike, and from a small pool of items so that columns
// repeat values as real batches do.

const { measurementIn, batchIn, batchQuick } = writeSchemas({
  CEA_TIME_FLOOR: "2000-01-01T00:00:00Z",
  CEA_FUTURE_TOLERANCE_S: 300,
  CEA_BATCH_MAX: 20,
});

let taken = 0;
function agrees(body: unknown): boolean {
  const quick = batchQuick(body);
  if (quick !== undefined) taken++;
  const bySchema = batchIn.safeParse(body);
  if (!bySchema.success) expect(quick, JSON.stringify(body)).toBeUndefined();
  else if (quick !== undefined) expect(quick, JSON.stringify(body)).toStrictEqual(bySchema.data);
  return true;
}

/** The body as the route receives it: JSON text parsed (no undefined, no -0 in text form … as a client sends it). */
const wire = (b: unknown): unknown => JSON.parse(JSON.stringify(b) ?? "null");

describe("batch quick path", () => {
  it("agrees with the schema on bodies generated from it", () => {
    fc.assert(
      fc.property(arbitraryOf(batchIn), (b) => agrees(wire(b))),
      { numRuns: 1_500 },
    );
  });

  it("agrees with the schema when columns repeat values (items drawn from a small pool)", () => {
    const pooled = fc
      .array(arbitraryOf(measurementIn), { minLength: 1, maxLength: 4 })
      .chain((pool) => fc.array(fc.constantFrom(...pool), { minLength: 0, maxLength: 22 }));
    taken = 0;
    fc.assert(
      fc.property(pooled, (b) => agrees(wire(b))),
      { numRuns: 1_500 },
    );
    // the property says something about the quick path only if it took bodies
    expect(taken).toBeGreaterThan(50);
  });

  it("agrees on values JSON can carry but a Map key conflates or the schema refuses", () => {
    const item = { time: "2024-01-15T10:30:00+02:00", sensor_id: 1, value: 1.5 };
    for (const body of [
      [
        { ...item, value: -0 },
        { ...item, time: "2024-01-15T10:30:01Z", value: 0 },
      ],
      [item, { ...item, status: null }, { ...item, status: "ok" }],
      [item, { ...item, extra: 1 }],
      [item, { time: item.time, value: 1 }],
      [item, { ...item, value: "1.5" }],
      [item, { ...item, time: "2024-01-15T10:30:00.1234567Z" }],
      [item, { ...item, status: "a\u0000b" }],
      [item, { ...item, value: 5e-324 }],
      [item, null],
      [item, [item]],
      [],
    ])
      agrees(body);
  });

  it("never answers for an item schema with a rule over the whole item (its fields alone do not decide)", () => {
    const item = z
      .strictObject({ lo: z.number(), hi: z.number() })
      .refine((r) => r.lo <= r.hi, { message: "lo above hi", path: ["lo"] });
    const quick = batchQuickPath(item, { min: 1, max: 10 });
    expect(quick([{ lo: 2, hi: 1 }])).toBeUndefined();
    expect(quick([{ lo: 1, hi: 2 }])).toBeUndefined();
  });

  it("takes an ordinary batch: many sensors at a few instants, with and without status", () => {
    const body = Array.from({ length: 20 }, (_, j) => ({
      time: new Date(Date.UTC(2024, 0, 15, 10, 30, Math.floor(j / 5))).toISOString(),
      sensor_id: 1 + (j % 5),
      value: j / 10,
      ...(j % 3 === 0 ? { status: j % 2 ? "ok" : null } : {}),
    }));
    const quick = batchQuick(body);
    expect(quick).toBeDefined();
    expect(quick).toStrictEqual(batchIn.parse(body));
    expect(quick?.[0]?.time).toBe("2024-01-15T10:30:00.000000Z");
  });
});
