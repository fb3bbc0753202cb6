import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type Api, startApi } from "../integration/api-harness.js";
import { type PrivatePg, startPrivatePg } from "../support/private-pg.js";

// PostgreSQL frozen (its processes stopped, as a hung host or disk would: the
// connections stay open and nothing answers). Every request must still end,
// with a 503 naming the database, while the database is STILL frozen: the test
// thaws it only after every answer is in, so a request that waited for the
// database would never answer and the test would time out. After the thaw a
// retry of the same write answers 200 (stored after all) or 201 (stored now),
// and the reading is stored exactly once: what the API documents.

const DEADLINE_MS = 1_500;

describe("cea-backend with PostgreSQL frozen", () => {
  let db: PrivatePg | undefined;
  let api: Api | undefined;
  let check: pg.Pool | undefined;

  beforeAll(async () => {
    db = await startPrivatePg({ bindir: inject("pgBindir") });
    api = await startApi({ CEA_API_REQUEST_TIMEOUT_MS: String(DEADLINE_MS) }, { databaseUrl: db.url });
    check = new pg.Pool({ connectionString: db.url, max: 1 });
    check.on("error", () => undefined);
  });
  afterAll(async () => {
    await db?.thaw();
    await api?.close();
    await check?.end();
    await db?.cleanup();
  });

  const reading = { time: "2024-05-01T10:00:00.123456Z", sensor_id: 101, value: 21.5, status: "ok" };
  const batch = Array.from({ length: 50 }, (_, i) => ({
    time: `2024-05-01T11:00:${String(i).padStart(2, "0")}Z`,
    sensor_id: 102,
    value: i / 4,
  }));

  it("every request answers 503 naming the database while it is frozen; a retry after it stores exactly once", async () => {
    const a = api!;
    const inject = (method: "GET" | "POST", url: string, payload?: unknown) =>
      a.app.inject({
        method,
        url: `/api/v1${url}`,
        headers: a.auth,
        ...(payload ? { payload: payload as object } : {}),
      });
    // warm: the sensor cache and the pool's connections exist before the freeze
    expect((await inject("GET", "/sensors/101")).statusCode).toBe(200);
    expect((await inject("POST", "/measurement", { ...reading, time: "2024-05-01T09:00:00Z" })).statusCode).toBe(201);

    await db!.freeze();
    let answers: { statusCode: number; body: string }[];
    try {
      answers = await Promise.all([
        inject("POST", "/measurement", reading),
        inject("POST", "/measurements", batch),
        inject("GET", "/sensors/101/history?start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z"),
        inject("GET", "/rooms/1/history?start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z"),
        inject("GET", "/sensors?room_id=1"),
        inject("GET", "/facility"),
        inject("GET", "/health"),
      ]);
      // every answer came while the database was still frozen
      expect(db!.running()).toBe(true);
    } finally {
      await db!.thaw();
    }
    for (const r of answers.slice(0, -1)) {
      expect(r.statusCode, r.body).toBe(503);
      const body = JSON.parse(r.body);
      expect(body).toMatchObject({ error: "unavailable", request_id: expect.any(String) });
      expect(body.message).toMatch(/^database unavailable/);
      expect(r.body).not.toMatch(/127\.0\.0\.1|timeout exceeded|Query read timeout/);
    }
    const health = JSON.parse(answers.at(-1)!.body);
    expect(answers.at(-1)!.statusCode).toBe(503);
    expect(health.down).toEqual(["postgres"]);

    // the client retries: 200 (it was stored after all) or 201 (stored now); once, exactly as sent
    const again = await inject("POST", "/measurement", reading);
    expect([200, 201], again.body).toContain(again.statusCode);
    expect(again.json()).toEqual({ ...reading });
    const b = await inject("POST", "/measurements", batch);
    expect([200, 201], b.body).toContain(b.statusCode);
    expect(b.json()).toMatchObject({ received: 50 });
    expect(b.json().inserted + b.json().already_present).toBe(50);
    const { rows } = await check!.query(
      `SELECT count(*)::int AS n, count(DISTINCT (sensor_id, time))::int AS keys FROM measurement
       WHERE time >= '2024-05-01T10:00:00Z' AND time < '2024-05-01T12:00:00Z'`,
    );
    expect(rows[0]).toEqual({ n: 51, keys: 51 });
    // and the API serves again
    expect(
      (await inject("GET", "/sensors/101/history?start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z")).statusCode,
    ).toBe(200);
  });
});
