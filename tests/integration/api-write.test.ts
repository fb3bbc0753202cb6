import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isCommunity } from "../support/db.js";
import { type Api, measurementCount, startApi } from "./api-harness.js";

const BODY_LIMIT = 4096;
const BATCH_MAX = 20;

let api: Api;
beforeAll(async () => {
  api = await startApi({ CEA_BODY_LIMIT: String(BODY_LIMIT), CEA_BATCH_MAX: String(BATCH_MAX) });
});
afterAll(() => api?.close());

const post = (url: string, payload: unknown, headers: Record<string, string> = api.auth) =>
  api.app.inject({ method: "POST", url: `/api/v1${url}`, headers, payload: payload as object });
const postRaw = (url: string, body: string, headers: Record<string, string> = {}) =>
  api.app.inject({
    method: "POST",
    url: `/api/v1${url}`,
    headers: { ...api.auth, "content-type": "application/json", ...headers },
    payload: body,
  });

describe("POST /api/v1/measurement", () => {
  it("stores a reading: 201 with the stored record, and queues its aggregate bucket", async () => {
    const before = await measurementCount(api.db);
    const res = await post("/measurement", { time: "2024-01-15T10:30:00Z", sensor_id: 101, value: 23.5, status: "ok" });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({ time: "2024-01-15T10:30:00.000000Z", sensor_id: 101, value: 23.5, status: "ok" });
    expect(await measurementCount(api.db)).toBe(before + 1);
    const { rows } = await api.db.pool.query(
      "SELECT value, status FROM measurement WHERE sensor_id = 101 AND time = '2024-01-15T10:30:00Z'",
    );
    expect(rows).toEqual([{ value: 23.5, status: "ok" }]);
    const pending = await api.db.pool.query(
      "SELECT count(*)::int AS n FROM measurement_agg_pending WHERE sensor_id = 101 AND bucket = '2024-01-15T10:00:00Z'",
    );
    expect(pending.rows[0].n).toBe(isCommunity() ? 0 : 1);
  });

  it("keeps offsets and microseconds exact; status is optional", async () => {
    const res = await post("/measurement", { time: "2024-01-15T12:30:00.123456+02:00", sensor_id: 102, value: 0.1 });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({ time: "2024-01-15T10:30:00.123456Z", sensor_id: 102, value: 0.1, status: null });
  });

  it("answers a retried identical reading with 200 and the stored record, storing nothing new", async () => {
    const body = { time: "2024-01-15T11:00:00Z", sensor_id: 103, value: -4.25, status: "ok" };
    expect((await post("/measurement", body)).statusCode).toBe(201);
    const before = await measurementCount(api.db);
    const again = await post("/measurement", body);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual({ ...body, time: "2024-01-15T11:00:00.000000Z" });
    // the same instant written with another offset is the same key
    const shifted = await post("/measurement", { ...body, time: "2024-01-15T12:00:00+01:00" });
    expect(shifted.statusCode).toBe(200);
    expect(await measurementCount(api.db)).toBe(before);
  });

  it("answers the same (sensor_id, time) with another value or status with 409 naming the stored record", async () => {
    const body = { time: "2024-01-15T11:05:00Z", sensor_id: 104, value: 7 };
    expect((await post("/measurement", body)).statusCode).toBe(201);
    const before = await measurementCount(api.db);
    for (const changed of [
      { ...body, value: 8 },
      { ...body, status: "err" },
    ]) {
      const res = await post("/measurement", changed);
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({
        error: "conflict",
        existing: { sensor_id: 104, time: "2024-01-15T11:05:00.000000Z", value: 7, status: null },
      });
    }
    expect(await measurementCount(api.db)).toBe(before);
    const { rows } = await api.db.pool.query(
      "SELECT value FROM measurement WHERE sensor_id = 104 AND time = '2024-01-15T11:05:00Z'",
    );
    expect(rows).toEqual([{ value: 7 }]);
  });

  const valid = { time: "2024-01-15T10:30:00Z", sensor_id: 105, value: 1.5, status: "ok" };
  const future = new Date(Date.now() + 3_600_000).toISOString();
  // [what, body, status, field named in issues]
  const rejections: [string, unknown, number, string][] = [
    ["unknown sensor_id", { ...valid, sensor_id: 999 }, 422, "sensor_id"],
    ["value 1e309 (Infinity after JSON.parse)", "1e309", 400, "value"],
    ["value -1e309", "-1e309", 400, "value"],
    // a subnormal stored would stop every aggregate refresh ("underflow" in the average)
    ["value 5e-324 (subnormal)", "5e-324", 400, "value"],
    ["value -2.2e-308 (subnormal)", "-2.2e-308", 400, "value"],
    ["value as a string", { ...valid, value: "23.5" }, 400, "value"],
    ["value NaN as a string", { ...valid, value: "NaN" }, 400, "value"],
    ["value as a boolean", { ...valid, value: true }, 400, "value"],
    ["value null", { ...valid, value: null }, 400, "value"],
    ["value an object", { ...valid, value: { v: 1 } }, 400, "value"],
    ["time far in the future", { ...valid, time: future }, 400, "time"],
    ["time before the floor", { ...valid, time: "1999-12-31T23:59:59Z" }, 400, "time"],
    ["time without an offset", { ...valid, time: "2024-01-15T10:30:00" }, 400, "time"],
    ["time not a date", { ...valid, time: "yesterday" }, 400, "time"],
    ["time an impossible date", { ...valid, time: "2024-02-30T10:30:00Z" }, 400, "time"],
    ["time a number", { ...valid, time: 1705314600 }, 400, "time"],
    ["time with nanoseconds", { ...valid, time: "2024-01-15T10:30:00.123456789Z" }, 400, "time"],
    ["sensor_id as a string", { ...valid, sensor_id: "105" }, 400, "sensor_id"],
    ["sensor_id fractional", { ...valid, sensor_id: 105.5 }, 400, "sensor_id"],
    ["sensor_id zero", { ...valid, sensor_id: 0 }, 400, "sensor_id"],
    ["sensor_id negative", { ...valid, sensor_id: -105 }, 400, "sensor_id"],
    ["sensor_id past int4", { ...valid, sensor_id: 2 ** 31 }, 400, "sensor_id"],
    ["status a number", { ...valid, status: 1 }, 400, "status"],
    ["status too long", { ...valid, status: "x".repeat(65) }, 400, "status"],
    ["status with a NUL", { ...valid, status: "o\u0000k" }, 400, "status"],
    ["missing time", { sensor_id: 105, value: 1 }, 400, "time"],
    ["missing sensor_id", { time: valid.time, value: 1 }, 400, "sensor_id"],
    ["missing value", { time: valid.time, sensor_id: 105 }, 400, "value"],
    ["unknown field", { ...valid, unit: "°C" }, 400, "unit"],
    ["an array instead of an object", [valid], 400, ""],
  ];

  it.each(rejections)("rejects %s with a 4xx naming the field, writing nothing", async (_what, body, status, field) => {
    const before = await measurementCount(api.db);
    const res =
      typeof body === "string"
        ? postRaw("/measurement", `{"time":"${valid.time}","sensor_id":105,"value":${body}}`)
        : post("/measurement", body);
    const r = await res;
    expect(r.statusCode).toBe(status);
    const json = r.json();
    expect(json.error).toEqual(expect.any(String));
    expect(json.issues.map((i: { path: string }) => i.path)).toContain(field);
    if (field) expect(json.message).toContain(field);
    expect(await measurementCount(api.db)).toBe(before);
  });

  it("rejects malformed JSON, an empty body, a wrong media type and a body over the limit, writing nothing", async () => {
    const before = await measurementCount(api.db);
    const bad = await postRaw("/measurement", '{"time": "2024-01-15T10:30:00Z", "sensor_id": 105,');
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ error: "malformed_json", message: expect.stringContaining("not valid JSON") });
    for (const literal of ["NaN", "Infinity"]) {
      const r = await postRaw("/measurement", `{"time":"${valid.time}","sensor_id":105,"value":${literal}}`);
      expect(r.statusCode).toBe(400);
      expect(r.json().error).toBe("malformed_json");
    }
    const empty = await postRaw("/measurement", "");
    expect(empty.statusCode).toBe(400);
    const text = await postRaw("/measurement", JSON.stringify(valid), { "content-type": "text/plain" });
    expect(text.statusCode).toBe(415);
    const big = await post("/measurement", { ...valid, status: "x".repeat(BODY_LIMIT) });
    expect(big.statusCode).toBe(413);
    expect(big.json().message).toContain(String(BODY_LIMIT));
    const proto = await postRaw(
      "/measurement",
      `{"time":"${valid.time}","sensor_id":105,"value":1,"__proto__":{"x":1}}`,
    );
    expect(proto.statusCode).toBe(400);
    expect(await measurementCount(api.db)).toBe(before);
  });
});

describe("POST /api/v1/measurements (batch)", () => {
  const item = (i: number, sensor = 201, value = i * 0.5) => ({
    time: new Date(Date.UTC(2024, 0, 16, 0, i)).toISOString(),
    sensor_id: sensor,
    value,
    status: "ok",
  });

  it("writes a batch in one go and reports inserted / already-present counts; a retry writes nothing", async () => {
    const batch = Array.from({ length: 10 }, (_, i) => item(i));
    const before = await measurementCount(api.db);
    const res = await post("/measurements", batch);
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({ received: 10, inserted: 10, already_present: 0 });
    expect(await measurementCount(api.db)).toBe(before + 10);
    const again = await post("/measurements", batch);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual({ received: 10, inserted: 0, already_present: 10 });
    const mixed = await post("/measurements", [...batch.slice(0, 3), item(50), item(51)]);
    expect(mixed.statusCode).toBe(201);
    expect(mixed.json()).toEqual({ received: 5, inserted: 2, already_present: 3 });
    expect(await measurementCount(api.db)).toBe(before + 12);
    const pending = await api.db.pool.query(
      "SELECT count(DISTINCT bucket)::int AS n FROM measurement_agg_pending WHERE sensor_id = 201",
    );
    expect(pending.rows[0].n).toBe(isCommunity() ? 0 : 1);
  });

  it("rejects the whole batch when one item is invalid, with per-item issues, writing nothing", async () => {
    const before = await measurementCount(api.db);
    const batch = [item(100), item(101), { ...item(102), value: "x" }, item(103), { ...item(104), extra: 1 }];
    const res = await post("/measurements", batch);
    expect(res.statusCode).toBe(400);
    expect(res.json().issues).toEqual([
      { index: 2, path: "value", message: expect.any(String) },
      { index: 4, path: "extra", message: "unknown field" },
    ]);
    expect(await measurementCount(api.db)).toBe(before);
  });

  it("rejects a batch naming an unknown sensor with 422 and the item's index, writing nothing", async () => {
    const before = await measurementCount(api.db);
    const res = await post("/measurements", [item(110), item(111, 998)]);
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({
      error: "unknown_sensor",
      issues: [{ index: 1, path: "sensor_id", message: expect.stringContaining("998") }],
    });
    expect(await measurementCount(api.db)).toBe(before);
  });

  it("rejects a batch with a conflicting reading with 409 listing it, writing nothing of the batch", async () => {
    const stored = item(120, 202, 1);
    expect((await post("/measurements", [stored])).statusCode).toBe(201);
    const before = await measurementCount(api.db);
    const res = await post("/measurements", [item(121, 202), { ...stored, value: 2 }, item(122, 202)]);
    expect(res.statusCode).toBe(409);
    expect(res.json()).toMatchObject({
      error: "conflict",
      conflicts: [{ sensor_id: 202, time: stored.time.replace(".000Z", ".000000Z"), value: 1, status: "ok" }],
    });
    expect(await measurementCount(api.db)).toBe(before);
    // the same key twice in one batch with different values is a conflict too
    const dup = await post("/measurements", [item(130, 203, 1), item(130, 203, 2)]);
    expect(dup.statusCode).toBe(409);
    expect(await measurementCount(api.db)).toBe(before);
    // and the connection that rolled back still works for the next batch
    expect((await post("/measurements", [item(131, 203)])).statusCode).toBe(201);
  });

  it("rejects a batch over CEA_BATCH_MAX naming the limit, an empty batch and a non-array, writing nothing", async () => {
    const before = await measurementCount(api.db);
    const over = await post(
      "/measurements",
      Array.from({ length: BATCH_MAX + 1 }, (_, i) => item(200 + i, 204)),
    );
    expect(over.statusCode).toBe(413);
    expect(over.json().message).toContain(String(BATCH_MAX));
    expect((await post("/measurements", [])).statusCode).toBe(400);
    const obj = await post("/measurements", { measurements: [item(300)] });
    expect(obj.statusCode).toBe(400);
    const far = await post("/measurements", [item(301), { ...item(302), time: "2999-01-01T00:00:00Z" }]);
    expect(far.statusCode).toBe(400);
    expect(far.json().issues).toEqual([{ index: 1, path: "time", message: expect.stringContaining("future") }]);
    expect(await measurementCount(api.db)).toBe(before);
  });
});

describe("bearer token", () => {
  beforeEach(() => {
    api.logs.length = 0;
  });
  const body = { time: "2024-01-15T10:40:00Z", sensor_id: 105, value: 1 };

  it("refuses writes without the token or with a wrong one (401), and never logs a token", async () => {
    const before = await measurementCount(api.db);
    const wrongToken = "not-the-token-but-long-enough";
    const attempts: Record<string, string>[] = [
      {},
      { authorization: `Bearer ${wrongToken}` },
      { authorization: `Basic ${Buffer.from(`u:${api.token}`).toString("base64")}` },
      { authorization: api.token },
    ];
    for (const headers of attempts) {
      for (const url of ["/measurement", "/measurements"]) {
        const res = await post(url, url === "/measurement" ? body : [body], headers);
        expect(res.statusCode).toBe(401);
        expect(res.headers["www-authenticate"]).toContain("Bearer");
        expect(res.json().error).toBe("unauthorized");
      }
    }
    expect(await measurementCount(api.db)).toBe(before);
    const ok = await post("/measurement", body);
    expect(ok.statusCode).toBe(201);
    const log = api.logs.join("");
    // the request log did run (with headers) and the Authorization header is redacted
    expect(log).toContain("/api/v1/measurement");
    expect(log).toContain("[redacted]");
    expect(log).not.toContain(api.token);
    expect(log).not.toContain(wrongToken);
  });

  it("needs the token on read routes by default; health and the OpenAPI document stay open", async () => {
    expect((await api.app.inject({ url: "/api/v1/sensors" })).statusCode).toBe(401);
    expect((await api.app.inject({ url: "/api/v1/sensors", headers: api.auth })).statusCode).toBe(200);
    expect((await api.app.inject({ url: "/api/v1/health" })).statusCode).toBe(200);
    expect((await api.app.inject({ url: "/api/v1/openapi.json" })).statusCode).toBe(200);
  });

  it("opens the read routes, never the writes, with CEA_API_OPEN_READS=true", async () => {
    const open = await startApi({ CEA_API_OPEN_READS: "true" }, { db: api.db });
    try {
      expect((await open.app.inject({ url: "/api/v1/sensors/101" })).statusCode).toBe(200);
      const w = await open.app.inject({ method: "POST", url: "/api/v1/measurement", payload: body });
      expect(w.statusCode).toBe(401);
    } finally {
      await open.close();
    }
  });
});

describe("unknown routes", () => {
  it("answers 404 in the API's error shape", async () => {
    const res = await api.app.inject({ url: "/api/v1/nope", headers: api.auth });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: "not_found", message: "no route GET /api/v1/nope" });
  });
});
