import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { historyQuery, idParams, sensorQuery, writeSchemas } from "../../pipeline/backend/schemas.js";
import { arbitraryOf } from "../support/zod-arbitrary.js";
import { type Api, startApi } from "./api-harness.js";

// Every input the API's zod schemas admit is one PostgreSQL accepts, and no
// input at all gets a 5xx. Inputs are generated from the route schemas
// themselves (tests/support/zod-arbitrary.ts): bodies, query strings and path
// parameters, each route with the schemas it validates with. The schema then
// says whether it admits the input (safeParse), and the answer must agree:
//   admitted → never 400; a write of known sensors under keys never sent
//              before → 201 storing them; a read → 200, 404 or 422;
//   refused  → a 4xx naming what is wrong.
// PROPERTY_CASES sets the number of cases (default 1 500; 10 000 for the
// full run: PROPERTY_CASES=10000 npx vitest run tests/integration/api-schema-property.test.ts).

const CASES = Number(process.env.PROPERTY_CASES ?? 1_500);

let api: Api;
let sensors: number[];
let rooms: number[];
beforeAll(async () => {
  api = await startApi({ CEA_LOG_LEVEL: "warn", CEA_BATCH_MAX: "20" });
  sensors = (await api.db.pool.query<{ id: number }>("SELECT sensor_id AS id FROM sensor")).rows.map((r) => r.id);
  rooms = (await api.db.pool.query<{ id: number }>("SELECT room_id AS id FROM room")).rows.map((r) => r.id);
});
afterAll(() => api?.close());

type Case = {
  route: string;
  method: "GET" | "POST";
  url: string;
  payload?: string;
  admitted: boolean;
  parsed: unknown;
};

const { measurementIn, batchIn } = writeSchemas({
  CEA_TIME_FLOOR: "2000-01-01T00:00:00Z",
  CEA_FUTURE_TOLERANCE_S: 300,
  CEA_BATCH_MAX: 20,
});

const qs = (o: unknown) =>
  new URLSearchParams(
    Object.entries((o ?? {}) as Record<string, unknown>).map(([k, v]): [string, string] => [
      k,
      typeof v === "string" ? v : JSON.stringify(v),
    ]),
  ).toString();
const admits = (schema: z.ZodType, v: unknown) => schema.safeParse(v);
/** A string as it arrives in a URL: UTF-8 on the wire, so a lone surrogate arrives as U+FFFD. */
const wire = (s: string) => new TextDecoder().decode(new TextEncoder().encode(s));
/** A query object as the server parses it from the URL the client sends. */
const received = (search: string) => Object.fromEntries(new URLSearchParams(search));

function cases(): fc.Arbitrary<Case> {
  const hints = {
    sensor_id: fc.constantFrom(...sensors),
    id: fc.constantFrom(...[...sensors, ...rooms].map(String)),
    room_id: fc.constantFrom(...rooms.map(String)),
  };
  const body = (route: string, schema: z.ZodType) =>
    arbitraryOf(schema, hints).map((b): Case => {
      const p = admits(schema, b);
      return { route, method: "POST", url: route, payload: JSON.stringify(b), admitted: p.success, parsed: p.data };
    });
  const read = (route: string, pattern: string, query: z.ZodType | undefined) =>
    fc
      .tuple(arbitraryOf(idParams.shape.id, hints, "id"), query ? arbitraryOf(query, hints) : fc.constant({}))
      .map(([raw, q]): Case => {
        const sentId = wire(String(raw ?? ""));
        const p = admits(idParams, { id: sentId });
        const search = qs(q);
        const qp = query ? admits(query, received(search)) : { success: true };
        const id = encodeURIComponent(sentId);
        return {
          route,
          method: "GET",
          url: `${pattern.replace(":id", id)}${search ? `?${search}` : ""}`,
          admitted: p.success && qp.success && id !== "",
          parsed: undefined,
        };
      });
  return fc.oneof(
    { weight: 3, arbitrary: body("/measurement", measurementIn) },
    { weight: 3, arbitrary: body("/measurements", batchIn) },
    arbitraryOf(sensorQuery, hints).map((q): Case => {
      const search = qs(q);
      return {
        route: "/sensors",
        method: "GET",
        url: `/sensors${search ? `?${search}` : ""}`,
        admitted: admits(sensorQuery, received(search)).success,
        parsed: undefined,
      };
    }),
    read("/sensors/:id", "/sensors/:id", undefined),
    { weight: 2, arbitrary: read("/sensors/:id/history", "/sensors/:id/history", historyQuery) },
    { weight: 2, arbitrary: read("/rooms/:id/history", "/rooms/:id/history", historyQuery) },
    read("/rooms/:id/live", "/rooms/:id/live", undefined),
  );
}

describe(`inputs generated from the route schemas (${CASES} cases)`, () => {
  // the number of cases sets the time it may take (a few ms each on a busy 2-core machine)
  it("no 5xx; what the schema admits the database accepts; what it refuses is a 4xx", {
    timeout: Math.max(60_000, CASES * 40),
  }, async () => {
    const sent = new Set<string>();
    const tally: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(cases(), async (c) => {
        const res = await api.app.inject({
          method: c.method,
          url: `/api/v1${c.url}`,
          headers: { ...api.auth, ...(c.payload === undefined ? {} : { "content-type": "application/json" }) },
          ...(c.payload === undefined ? {} : { payload: c.payload }),
        });
        const what = `${c.method} ${c.url.slice(0, 300)} ${String(c.payload).slice(0, 300)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
        tally[`${c.route} ${c.admitted ? "admitted" : "refused"} ${res.statusCode}`] =
          (tally[`${c.route} ${c.admitted ? "admitted" : "refused"} ${res.statusCode}`] ?? 0) + 1;
        expect(res.statusCode, what).toBeLessThan(500);
        if (!c.admitted) {
          expect(res.statusCode, what).toBeGreaterThanOrEqual(400);
          return;
        }
        expect(res.statusCode, what).not.toBe(400);
        if (c.method === "GET") {
          expect([200, 404, 422], what).toContain(res.statusCode);
          return;
        }
        // a write: new keys of known sensors must be stored (201), whatever their offsets or fractions
        const items = (Array.isArray(c.parsed) ? c.parsed : [c.parsed]) as { time: string; sensor_id: number }[];
        const keys = items.map((i) => `${i.sensor_id}@${i.time}`);
        const fresh = keys.every((k) => !sent.has(k)) && new Set(keys).size === keys.length;
        const known = items.every((i) => sensors.includes(i.sensor_id));
        if (known) for (const k of keys) sent.add(k);
        if (known && fresh) {
          expect(res.statusCode, what).toBe(201);
          if (c.route === "/measurements") expect(res.json().inserted, what).toBe(items.length);
        } else {
          expect([200, 201, 409, 422], what).toContain(res.statusCode);
        }
      }),
      { numRuns: CASES },
    );
    // the run exercised both sides of every route, and wrote through the database
    const routes = [
      "/measurement",
      "/measurements",
      "/sensors",
      "/sensors/:id",
      "/sensors/:id/history",
      "/rooms/:id/history",
      "/rooms/:id/live",
    ];
    for (const r of routes) {
      expect(
        Object.keys(tally).some((k) => k.startsWith(`${r} admitted`)),
        `${r} admitted: ${JSON.stringify(tally)}`,
      ).toBe(true);
      expect(
        Object.keys(tally).some((k) => k.startsWith(`${r} refused`)),
        `${r} refused`,
      ).toBe(true);
    }
    expect(tally["/measurement admitted 201"] ?? 0).toBeGreaterThan(0);
    expect(tally["/measurements admitted 201"] ?? 0).toBeGreaterThan(0);
    process.stdout.write(`[api-schema-property] ${CASES} cases: ${JSON.stringify(tally)}\n`);
  });
});
