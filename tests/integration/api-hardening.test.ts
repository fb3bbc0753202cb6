import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { createTestDatabase } from "../support/db.js";
import { type Api, measurementCount, startApi } from "./api-harness.js";

// Client input must never produce a 5xx, and what the API promises (headers,
// document, logs) must hold: each case below was a defect found by an outside
// fuzzer and is checked here on the real services.

let api: Api;
beforeAll(async () => {
  api = await startApi({ CEA_API_OPEN_READS: "false" });
});
afterAll(() => api?.close());

const get = (url: string, headers: Record<string, string> = api.auth) =>
  api.app.inject({ url: `/api/v1${url}`, headers });
const post = (url: string, payload: unknown, headers: Record<string, string> = api.auth) =>
  api.app.inject({
    method: "POST",
    url: `/api/v1${url}`,
    headers: { "content-type": "application/json", ...headers },
    payload: typeof payload === "string" ? payload : JSON.stringify(payload),
  });

async function storedAt(sensor: number, utc: string): Promise<{ value: number; iso: string }[]> {
  const { rows } = await api.db.pool.query(
    `SELECT value, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS iso
     FROM measurement WHERE sensor_id = $1 AND time = $2::timestamptz`,
    [sensor, utc],
  );
  return rows;
}

describe("every offset RFC 3339 allows, converted to UTC before the database sees it", () => {
  // [sent, the same instant in UTC]
  const cases: [string, string][] = [
    ["2024-06-01T12:00:00+16:00", "2024-05-31T20:00:00.000000Z"],
    ["2024-06-01T12:00:00.5+23:59", "2024-05-31T12:01:00.500000Z"],
    ["2024-06-01T12:00:00.123456-16:00", "2024-06-02T04:00:00.123456Z"],
    ["2024-03-01T20:30:00-23:59", "2024-03-02T20:29:00.000000Z"],
    ["2024-03-01T01:00:00+19:30", "2024-02-29T05:30:00.000000Z"],
  ];

  it.each(cases)("POST /measurement %s → stored at %s", async (time, utc) => {
    const res = await post("/measurement", { time, sensor_id: 101, value: 1.25 });
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().time).toBe(utc);
    expect(await storedAt(101, utc)).toEqual([{ value: 1.25, iso: utc }]);
    // the same instant with another offset is the same key: an identical retry
    expect((await post("/measurement", { time: utc, sensor_id: 101, value: 1.25 })).statusCode).toBe(200);
  });

  it("POST /measurements with offsets past ±15:59: every item stored at its UTC instant", async () => {
    const items = cases.map(([time], i) => ({ time, sensor_id: 102, value: i }));
    const res = await post("/measurements", items);
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json()).toEqual({ received: cases.length, inserted: cases.length, already_present: 0 });
    for (const [i, [, utc]] of cases.entries()) expect(await storedAt(102, utc)).toEqual([{ value: i, iso: utc }]);
    expect((await post("/measurements", items)).statusCode).toBe(200);
  });

  it("history start/end with such offsets: answered, echoed in UTC", async () => {
    const res = await get(
      "/sensors/101/history?start=2024-06-01T12:00:00%2B16:00&end=2024-06-01T12:00:00-16:00&resolution=raw",
    );
    expect(res.statusCode, res.body).toBe(200);
    const h = res.json();
    expect(h.start).toBe("2024-05-31T20:00:00.000000Z");
    expect(h.end).toBe("2024-06-02T04:00:00.000000Z");
    expect(h.points.map((p: { time: string }) => p.time)).toContain("2024-05-31T20:00:00.000000Z");
    const room = await get("/rooms/1/history?start=2024-05-31T00:00:00%2B23:59&end=2024-06-02T00:00:00-23:59");
    expect(room.statusCode, room.body).toBe(200);
    expect(room.json().start).toBe("2024-05-30T00:01:00.000000Z");
  });
});

describe("times outside what the database can store", () => {
  it.each([
    ["start", "start=0000-01-01T00:00:00Z"],
    ["end", "end=0000-12-31T23:59:59Z"],
    ["start", "start=0001-01-01T00:30:00%2B01:00"],
    ["end", "end=9999-12-31T23:30:00-01:00"],
  ])("history %s out of range (%s) → 400 naming it", async (field, q) => {
    const res = await get(`/sensors/101/history?${q}`);
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().issues.map((i: { path: string }) => i.path)).toContain(field);
  });

  it("the widest window the schema stores is answered", async () => {
    const res = await get(
      "/sensors/101/history?start=0001-01-01T00:00:00Z&end=9999-12-31T23:59:59.999999Z&resolution=daily",
    );
    expect(res.statusCode, res.body).toBe(200);
    const end = await get("/sensors/101/history?end=0001-01-01T00:00:01Z&resolution=raw");
    expect(end.statusCode, end.body).toBe(200);
    expect(end.json().start).toBe("0001-01-01T00:00:00.000000Z");
  });

  it("a sub-millisecond window is a window; start >= end is 400 naming start", async () => {
    const ok = await get(
      "/sensors/101/history?start=2024-01-01T00:00:00.000001Z&end=2024-01-01T00:00:00.000002Z&resolution=raw",
    );
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json()).toMatchObject({ start: "2024-01-01T00:00:00.000001Z", end: "2024-01-01T00:00:00.000002Z" });
    const same = await get(
      "/sensors/101/history?start=2024-01-01T00:00:00.000002Z&end=2024-01-01T01:00:00.000002%2B01:00",
    );
    expect(same.statusCode).toBe(400);
    expect(same.json().issues[0].path).toBe("start");
  });
});

describe("text parameters", () => {
  it.each(["%00", "a%00b", "%01", "%7F", "a%0Ab"])("GET /sensors?unit=%s → 400 naming unit", async (unit) => {
    const res = await get(`/sensors?unit=${unit}`);
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().issues[0].path).toBe("unit");
  });
});

describe("ids in one canonical form", () => {
  it.each(["0x65", "%2B101", "101.0", "0101", "%20101", "1e2", "101%20", "-101"])(
    "/sensors/%s → 400 naming id",
    async (id) => {
      const res = await get(`/sensors/${id}`);
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().issues[0].path).toBe("id");
    },
  );

  it("room_id=02 → 400; the canonical forms answer", async () => {
    expect((await get("/sensors?room_id=02")).statusCode).toBe(400);
    expect((await get("/sensors?room_id=2")).statusCode).toBe(200);
    expect((await get("/sensors/101")).statusCode).toBe(200);
    expect((await get("/sensors/2147483648")).statusCode).toBe(400);
    expect((await get("/sensors/2147483647")).statusCode).toBe(404);
  });
});

describe("GET /live with a malformed live-hash entry", () => {
  it("an entry whose field or value the answer cannot carry is listed under unreadable; the others are served", async () => {
    const now = new Date().toISOString();
    const key = `${api.prefix}live:values`;
    await api.redis.hset(key, {
      "101": JSON.stringify({ value: 1, time: now, name: "dry_bulb_b" }),
      "99999999999999999999": JSON.stringify({ value: 2, time: now, name: "x" }),
      "0102": JSON.stringify({ value: 3, time: now, name: "x" }),
      "103": JSON.stringify({ value: Number.POSITIVE_INFINITY, time: now, name: "x" }),
      "104": JSON.stringify({ value: 4, time: "yesterday", name: "x" }),
    });
    await api.redis.hset(key, "105", '{"value":1e400,"time":"2024-01-01T00:00:00Z","name":"x"}');
    const res = await get("/live");
    expect(res.statusCode, res.body).toBe(200);
    const live = res.json();
    expect(live.values.map((v: { sensor_id: number }) => v.sensor_id)).toEqual([101]);
    expect([...live.unreadable].sort()).toEqual(["0102", "103", "104", "105", "99999999999999999999"]);
  });
});

describe("database data errors from a request", () => {
  it("a value that passes the API's schema but not PostgreSQL's: 400 naming the parameters, never 500", async () => {
    // a rule of the database the API does not know: a trigger refusing one value with a data exception (22023)
    // and a check constraint refusing another (23514)
    await api.db.pool.query(`
      CREATE FUNCTION cea_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.value = 4242 THEN RAISE EXCEPTION 'value 4242 refused' USING ERRCODE = '22023'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER cea_test_refuse BEFORE INSERT ON measurement FOR EACH ROW EXECUTE FUNCTION cea_test_refuse();
      ALTER TABLE measurement ADD CONSTRAINT cea_test_check CHECK (value <> 4343);`);
    try {
      const before = await measurementCount(api.db);
      for (const value of [4242, 4343]) {
        const one = await post("/measurement", { time: "2024-02-01T00:00:00Z", sensor_id: 103, value });
        expect(one.statusCode, one.body).toBe(400);
        expect(one.json()).toMatchObject({ error: "validation_failed" });
        expect(one.json().issues.map((i: { path: string }) => i.path)).toContain("value");
        const batch = await post("/measurements", [
          { time: "2024-02-01T00:00:01Z", sensor_id: 103, value: 1 },
          { time: "2024-02-01T00:00:02Z", sensor_id: 103, value },
        ]);
        expect(batch.statusCode, batch.body).toBe(400);
        expect(batch.json().issues.map((i: { path: string }) => i.path)).toContain("value");
      }
      expect(await measurementCount(api.db)).toBe(before);
    } finally {
      await api.db.pool.query(`DROP TRIGGER cea_test_refuse ON measurement; DROP FUNCTION cea_test_refuse();
        ALTER TABLE measurement DROP CONSTRAINT cea_test_check;`);
    }
  });
});

describe("a dependency that answers with an error", () => {
  it("a read-only database: writes answer 503 naming the database (not 500, not 4xx), health says so; reads still answer", async () => {
    const db = await createTestDatabase();
    await db.pool.query(`ALTER DATABASE ${db.name} SET default_transaction_read_only = on`);
    const ro = await startApi({}, { db });
    try {
      const w = await ro.app.inject({
        method: "POST",
        url: "/api/v1/measurement",
        headers: ro.auth,
        payload: { time: "2024-01-01T00:00:00Z", sensor_id: 101, value: 1 },
      });
      expect(w.statusCode, w.body).toBe(503);
      expect(w.json()).toMatchObject({ error: "unavailable", message: "database unavailable" });
      const b = await ro.app.inject({
        method: "POST",
        url: "/api/v1/measurements",
        headers: ro.auth,
        payload: [{ time: "2024-01-01T00:00:00Z", sensor_id: 101, value: 1 }],
      });
      expect(b.statusCode, b.body).toBe(503);
      expect((await ro.app.inject({ url: "/api/v1/sensors/101", headers: ro.auth })).statusCode).toBe(200);
      // and health says so
      const health = await ro.app.inject({ url: "/api/v1/health" });
      expect(health.statusCode).toBe(503);
      expect(health.json()).toMatchObject({
        down: ["postgres"],
        postgres: { ok: false, error: expect.stringContaining("read-only") },
      });
    } finally {
      await ro.close();
      await db.drop();
    }
  });

  it("Redis answering an error (the live key of the wrong type): 503 naming Redis", async () => {
    const key = `${api.prefix}live:values`;
    await api.redis.del(key);
    await api.redis.set(key, "not a hash");
    try {
      const res = await get("/live");
      expect(res.statusCode, res.body).toBe(503);
      expect(res.json()).toMatchObject({ error: "unavailable", message: "redis unavailable" });
    } finally {
      await api.redis.del(key);
    }
  });
});

describe("error answers", () => {
  it("repeat at most a little of the client's input", async () => {
    const key = "k".repeat(500_000);
    const res = await post("/measurement", `{"time":"2024-01-01T00:00:00Z","sensor_id":101,"value":1,"${key}":1}`, {
      ...api.auth,
    });
    // over the 1 MiB default? no: 500 KB; the answer names the key, cut short
    expect(res.statusCode).toBe(400);
    expect(res.body.length).toBeLessThan(2_000);
    expect(res.json().issues[0].path.startsWith("kkkk")).toBe(true);
    const long = await get(`/${"p".repeat(8_000)}`);
    expect(long.statusCode).toBe(404);
    expect(long.body.length).toBeLessThan(1_000);
  });

  it("a path parameter over 100 characters: the API's error shape and headers", async () => {
    const res = await get(`/sensors/${"1".repeat(150)}`);
    expect(res.statusCode).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    expect(res.json()).toEqual({ error: expect.any(String), message: expect.any(String) });
    expect(res.headers["x-request-id"]).toEqual(expect.any(String));
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
    const bad = await get("/sensors/%E0%A4%A");
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toEqual({ error: expect.any(String), message: expect.any(String) });
    expect(bad.headers["x-request-id"]).toEqual(expect.any(String));
  });

  it("an unknown method on a real route: 405 with Allow", async () => {
    for (const [method, url, allow] of [
      ["DELETE", "/sensors/101", "GET, HEAD"],
      ["PUT", "/measurement", "POST"],
      ["GET", "/measurements", "POST"],
      ["PATCH", "/rooms/1/history", "GET, HEAD"],
    ] as const) {
      const res = await api.app.inject({ method, url: `/api/v1${url}`, headers: api.auth });
      expect(res.statusCode, `${method} ${url}`).toBe(405);
      expect(res.headers.allow).toBe(allow);
      expect(res.json().error).toBe("method_not_allowed");
    }
    expect((await get("/nope")).statusCode).toBe(404);
  });

  it.each([
    [
      '{"time":"2024-01-01T00:00:00Z","sensor_id":101,"value":1,"__proto__":{"x":1}}',
      "/measurement",
      undefined,
      "__proto__",
    ],
    [
      '{"time":"2024-01-01T00:00:00Z","sensor_id":101,"value":1,"constructor":{"prototype":{"x":1}}}',
      "/measurement",
      undefined,
      "constructor",
    ],
    ['[{"time":"2024-01-01T00:00:00Z","sensor_id":101,"value":1},{"__proto__":1}]', "/measurements", 1, "__proto__"],
  ])("a body with a prototype key %s → 400 naming the key", async (body, url, index, key) => {
    const before = await measurementCount(api.db);
    const res = await post(url, body);
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe("validation_failed");
    expect(res.json().issues[0]).toMatchObject({ path: key, ...(index === undefined ? {} : { index }) });
    expect(await measurementCount(api.db)).toBe(before);
  });
});

describe("history CSV", () => {
  it("neutralises cells a spreadsheet would run as a formula", async () => {
    const formulas = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://example.invalid","x")', "+1+1", "-2+3", "@SUM(A1)"];
    const { rows: named } = await api.db.pool.query("SELECT name FROM sensor WHERE sensor_id = 104");
    await api.db.pool.query("UPDATE sensor SET name = $1 WHERE sensor_id = 104", [formulas[0]]);
    try {
      const items = formulas.map((status, i) => ({
        time: `2024-04-01T00:00:0${i}Z`,
        sensor_id: 104,
        value: -1.5 - i,
        status,
      }));
      expect((await post("/measurements", items)).statusCode).toBe(201);
      const res = await get("/sensors/104/history?start=2024-04-01T00:00:00Z&end=2024-04-01T00:01:00Z&format=csv");
      expect(res.statusCode).toBe(200);
      const rows = res.body.trimEnd().split("\n").slice(3);
      expect(rows).toHaveLength(formulas.length);
      for (const [i, line] of rows.entries()) {
        // every text cell begins with an apostrophe; the negative numbers stay numbers
        const cells = line
          .split(/,(?=(?:[^"]*"[^"]*")*[^"]*$)/)
          .map((c) => c.replace(/^"|"$/g, "").replace(/""/g, '"'));
        // every text cell is the text with an apostrophe before it; the negative numbers stay numbers
        expect(cells, line).toEqual([
          "104",
          `'${formulas[0]}`,
          `2024-04-01T00:00:0${i}.000000Z`,
          String(-1.5 - i),
          `'${formulas[i]}`,
          "", // label: sensor 104 has no value table
        ]);
        for (const cell of line.split(/,(?=(?:[^"]*"[^"]*")*[^"]*$)/)) expect(cell).not.toMatch(/^"?[=+@]/);
      }
    } finally {
      await api.db.pool.query("UPDATE sensor SET name = $1 WHERE sensor_id = 104", [named[0].name]);
    }
  });
});

describe("headers", () => {
  it("X-Content-Type-Options: nosniff on every answer; Cache-Control: no-store on token-protected ones", async () => {
    const open = [await get("/health", {}), await get("/openapi.json", {}), await get("/nope", {})];
    const protectedAnswers = [
      await get("/sensors"),
      await get("/sensors", {}),
      await get("/sensors/101/history?format=csv"),
      await get("/live"),
      await post("/measurement", { time: "2024-01-01T00:00:00Z", sensor_id: 105, value: 1 }),
      await post("/measurement", { nope: 1 }),
      await post("/measurement", {}, {}),
    ];
    for (const r of [...open, ...protectedAnswers]) expect(r.headers["x-content-type-options"], r.body).toBe("nosniff");
    for (const r of protectedAnswers) expect(r.headers["cache-control"], r.body).toBe("no-store");
  });
});

describe("credentials in logs", () => {
  it("a token sent where it does not belong is never logged", async () => {
    const secret = "s3cr3t-value-that-must-not-be-logged";
    api.logs.length = 0;
    await api.app.inject({ url: `/api/v1/sensors?token=${secret}`, headers: api.auth });
    await api.app.inject({ url: `/api/v1/sensors?access_token=${secret}&api_key=${secret}`, headers: api.auth });
    for (const h of ["proxy-authorization", "x-api-key", "cookie", "x-auth-token", "x-custom"]) {
      await api.app.inject({
        url: "/api/v1/sensors",
        headers: { ...api.auth, [h]: h === "x-custom" ? `Bearer ${secret}` : secret },
      });
    }
    const log = api.logs.join("");
    expect(log).toContain("/api/v1/sensors");
    expect(log).toContain("[redacted]");
    expect(log).not.toContain(secret);
    expect(log).not.toContain(api.token);
  });
});

describe("CEA_API_TOKEN with whitespace", () => {
  it.each([" ", "\n", "\t", "\r\n"])("a token with %j around it stops start-up naming the variable", (ws) => {
    for (const token of [`${"t".repeat(20)}${ws}`, `${ws}${"t".repeat(20)}`]) {
      expect(() => loadConfig({ CEA_API_TOKEN: token })).toThrow(/CEA_API_TOKEN/);
    }
  });
});

describe("the OpenAPI document states what the server enforces", () => {
  it("security on exactly the routes that answer 401 without the token; maxItems as the batch limit", async () => {
    const doc = (await get("/openapi.json", {})).json();
    const sample: Record<string, string> = { id: "101" };
    let checked = 0;
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { security?: unknown[] }>>)) {
      for (const [method, op] of Object.entries(ops)) {
        const url = path.replace(/\{(\w+)\}/g, (_, k: string) => sample[k] ?? "1");
        const res = await api.app.inject({
          method: method.toUpperCase() as "GET",
          url,
          ...(method === "post" ? { headers: { "content-type": "application/json" }, payload: "{}" } : {}),
        });
        const needsToken = res.statusCode === 401;
        expect(Boolean(op.security?.length), `${method} ${path}: answered ${res.statusCode}`).toBe(needsToken);
        if (needsToken) expect(Object.keys((op as { responses: object }).responses)).toContain("401");
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(10);
    const batch = doc.paths["/api/v1/measurements"].post.requestBody.content["application/json"].schema;
    expect(batch.maxItems).toBe(api.config.CEA_BATCH_MAX);
    expect(batch.minItems).toBe(1);
  });

  it("with CEA_API_OPEN_READS=true the read routes carry no security, and answer without the token", async () => {
    const open = await startApi({ CEA_API_OPEN_READS: "true" }, { db: api.db });
    try {
      const doc = (await open.app.inject({ url: "/api/v1/openapi.json" })).json();
      expect(doc.paths["/api/v1/sensors"].get.security).toBeUndefined();
      expect(doc.paths["/api/v1/measurement"].post.security).toEqual([{ bearer: [] }]);
      expect((await open.app.inject({ url: "/api/v1/sensors" })).statusCode).toBe(200);
    } finally {
      await open.close();
    }
  });
});
