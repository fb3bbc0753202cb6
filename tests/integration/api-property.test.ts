import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSubnormal } from "../../db/readings.js";
import { type Api, measurementCount, startApi } from "./api-harness.js";

// Generated bodies thrown at both write routes: arbitrary JSON and text, and
// near-valid bodies with one mutation that makes them invalid. Never a 5xx;
// never a row from a rejected body; a mutated body is always rejected; a valid
// body under a key not used before is stored (201) exactly as sent, its
// identical resend answers 200 and a resend with another value 409.

const RUNS = 300;
const SENSORS = [101, 102, 205, 310, 401, 510];
const FLOOR = Date.parse("2000-01-01T00:00:00Z");

let api: Api;
/** keys (sensor_id, instant) already sent by this file: a valid body under a fresh key must answer 201 */
const used = new Set<string>();
const keyOf = (b: Body) => `${b.sensor_id}@${Date.parse(String(b.time))}`;
const fresh = (bodies: Body[]) => {
  const keys = bodies.map(keyOf);
  if (new Set(keys).size !== keys.length || keys.some((k) => used.has(k))) return false;
  for (const k of keys) used.add(k);
  return true;
};
beforeAll(async () => {
  api = await startApi({ CEA_LOG_LEVEL: "warn" });
});
afterAll(() => api?.close());

const pad = (n: number) => String(n).padStart(2, "0");
/** The instant `ms` written with an offset of `minutes` (0 → "Z"). */
function withOffset(ms: number, minutes: number): string {
  if (minutes === 0) return new Date(ms).toISOString();
  const local = new Date(ms + minutes * 60_000).toISOString().slice(0, -1);
  const a = Math.abs(minutes);
  return `${local}${minutes < 0 ? "-" : "+"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

const validStatus = fc
  .string({ unit: "grapheme", maxLength: 20 })
  // biome-ignore lint/suspicious/noControlCharactersInRegex: mirrors the API's rule
  .filter((s) => s.length <= 64 && !/[\u0000-\u001f\u007f]/.test(s));
const validTime = fc
  .tuple(fc.integer({ min: FLOOR, max: Date.now() - 1000 }), fc.constantFrom(0, 60, -300, 330, 840, -720))
  .map(([ms, off]) => withOffset(ms, off));
const validBody = fc.record(
  {
    time: validTime,
    sensor_id: fc.constantFrom(...SENSORS),
    // a subnormal is refused (db/readings.ts isSubnormal): the aggregates cannot average it
    value: fc.double({ noNaN: true, noDefaultInfinity: true }).filter((v) => !isSubnormal(v)),
    status: fc.option(validStatus, { nil: null }),
  },
  { requiredKeys: ["time", "sensor_id", "value"] },
);
type Body = Record<string, unknown>;

const notNumber = fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.array(fc.integer()), fc.object());
// finite doubles only: JSON.stringify turns NaN and ±Infinity into null, a valid status
const notString = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.array(fc.string()),
  fc.object(),
);

/** One change that makes a valid body invalid, as [description, new body or raw JSON text]. */
const mutation: fc.Arbitrary<[string, (b: Body) => Body | string]> = fc.oneof(
  fc.constantFrom("time", "sensor_id", "value").map((k): [string, (b: Body) => Body] => [
    `drop ${k}`,
    (b) => {
      const { [k]: _gone, ...rest } = b;
      return rest;
    },
  ]),
  fc
    .string({ minLength: 1, maxLength: 12 })
    .filter((k) => !["time", "sensor_id", "value", "status", "__proto__", "constructor"].includes(k))
    .map((k): [string, (b: Body) => Body] => [`extra ${k}`, (b) => ({ ...b, [k]: 1 })]),
  notNumber.map((v): [string, (b: Body) => Body] => [`value ${JSON.stringify(v)}`, (b) => ({ ...b, value: v })]),
  fc
    .constantFrom("1e309", "-1e309", "1e400", "-2e308", "5e-324", "-1e-310", "2.2e-308")
    .map((lit): [string, (b: Body) => string] => [
      `value ${lit}`,
      (b) => JSON.stringify({ ...b, value: 0 }).replace('"value":0', `"value":${lit}`),
    ]),
  fc
    .oneof(
      notNumber,
      fc.double().filter((d) => !Number.isInteger(d)),
      fc.integer({ max: 0 }),
      fc.integer({ min: 2 ** 31, max: Number.MAX_SAFE_INTEGER }),
      fc.integer({ min: 1000, max: 2 ** 31 - 1 }),
    )
    .map((v): [string, (b: Body) => Body] => [`sensor_id ${JSON.stringify(v)}`, (b) => ({ ...b, sensor_id: v })]),
  fc
    .oneof(
      notString,
      fc.constant(null),
      fc.string({ maxLength: 30 }).filter((s) => !/^\d{4}-\d\d-\d\dT/.test(s)),
      fc.integer({ min: 600, max: 10 ** 9 }).map((s) => new Date(Date.now() + s * 1000).toISOString()),
      fc.integer({ min: 1, max: 10 ** 9 }).map((s) => new Date(FLOOR - s * 1000).toISOString()),
      fc.constantFrom(
        "2024-01-15T10:30:00",
        "2024-01-15 10:30:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-15T10:30:00.1234567Z",
      ),
    )
    .map((v): [string, (b: Body) => Body] => [`time ${JSON.stringify(v)}`, (b) => ({ ...b, time: v })]),
  fc
    .oneof(
      notString,
      fc.string({ minLength: 65, maxLength: 100 }),
      fc.constantFrom("\u0000", "a\nb", "\ud800", "x\udfff"),
    )
    .map((v): [string, (b: Body) => Body] => [`status ${JSON.stringify(v)}`, (b) => ({ ...b, status: v })]),
);

async function send(url: string, body: unknown): Promise<{ status: number; json: () => Body }> {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  const res = await api.app.inject({
    method: "POST",
    url: `/api/v1${url}`,
    headers: { ...api.auth, "content-type": "application/json" },
    payload,
  });
  return { status: res.statusCode, json: () => res.json() };
}

/** Sends the body; checks no 5xx and, for a 4xx, that nothing was written. Returns the status. */
async function probe(url: string, body: unknown): Promise<{ status: number; json: () => Body }> {
  const before = await measurementCount(api.db);
  const res = await send(url, body);
  expect(
    res.status,
    `${url} ${String(typeof body === "string" ? body : JSON.stringify(body)).slice(0, 300)}`,
  ).toBeLessThan(500);
  if (res.status >= 400) expect(await measurementCount(api.db)).toBe(before);
  return res;
}

describe("generated bodies against POST /measurement and /measurements", () => {
  it("arbitrary JSON values and arbitrary text: never a 5xx, never a row when rejected", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.jsonValue(), fc.string({ unit: "binary", maxLength: 200 })),
        fc.constantFrom("/measurement", "/measurements"),
        fc.boolean(),
        async (value, url, asText) => {
          await probe(url, asText && typeof value === "string" ? value : JSON.stringify(value));
        },
      ),
      { numRuns: RUNS },
    );
  }, 240_000); // hundreds of requests: minutes on a loaded 2-core machine, seconds on a quiet one

  it("single route: a valid body is stored exactly as sent; one mutation makes it a 4xx with nothing written", async () => {
    await fc.assert(
      fc.asyncProperty(validBody, fc.option(mutation, { nil: undefined }), async (body, mut) => {
        if (!mut) {
          fc.pre(fresh([body]));
          const res = await probe("/measurement", body);
          expect(res.status).toBe(201);
          const stored = res.json();
          expect(Date.parse(String(stored.time))).toBe(Date.parse(body.time));
          expect(stored.sensor_id).toBe(body.sensor_id);
          // as sent: JSON has no -0, it arrives as 0
          expect(stored.value).toBe(JSON.parse(JSON.stringify(body.value)));
          expect(stored.status).toBe(body.status ?? null);
          const again = await probe("/measurement", body);
          expect(again.status).toBe(200);
          expect(again.json()).toEqual(stored);
          const changed = await probe("/measurement", { ...body, value: body.value === 1 ? 2 : 1 });
          expect(changed.status).toBe(409);
          expect(changed.json().existing).toEqual(stored);
          return;
        }
        const [what, apply] = mut;
        const res = await probe("/measurement", apply(body));
        expect(res.status, what).toBeGreaterThanOrEqual(400);
      }),
      { numRuns: RUNS },
    );
  }, 240_000); // hundreds of requests: minutes on a loaded 2-core machine, seconds on a quiet one

  it("batch route: one mutated item rejects the whole batch; a valid batch stores every item", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(validBody, { minLength: 1, maxLength: 8 }),
        fc.option(fc.tuple(mutation, fc.nat()), { nil: undefined }),
        async (items, mut) => {
          if (!mut) {
            fc.pre(fresh(items));
            const res = await probe("/measurements", items);
            expect(res.status).toBe(201);
            expect(res.json()).toEqual({ received: items.length, inserted: items.length, already_present: 0 });
            const again = await probe("/measurements", items);
            expect(again.status).toBe(200);
            expect(again.json()).toEqual({ received: items.length, inserted: 0, already_present: items.length });
            return;
          }
          const [[what, apply], at] = mut;
          const i = at % items.length;
          const bad = apply(items[i]!);
          // a raw-text mutation (1e309) is spliced into the array's JSON text
          const body =
            typeof bad === "string"
              ? `[${items.map((it, j) => (j === i ? bad : JSON.stringify(it))).join(",")}]`
              : items.map((it, j) => (j === i ? bad : it));
          const res = await probe("/measurements", body);
          expect(res.status, what).toBeGreaterThanOrEqual(400);
        },
      ),
      { numRuns: RUNS },
    );
  }, 240_000); // hundreds of requests: minutes on a loaded 2-core machine, seconds on a quiet one
});
