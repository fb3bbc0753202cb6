import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { insertActuatorEvents } from "../../db/queries/automation.js";
import { loadSite } from "../../db/site.js";
import { setpointProblems } from "../../pipeline/backend/routes/automation.js";
import { setpointsBody } from "../../pipeline/backend/schemas.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { roleUrl } from "../support/roles.js";
import { arbitraryOf } from "../support/zod-arbitrary.js";
import { type Api, startApi } from "./api-harness.js";

// The setpoint and actuator-event routes: zod and the site file's actuators
// decide what is a valid setpoint, and every refusal names the field.

let api: Api;
beforeAll(async () => {
  api = await startApi({ CEA_LOG_LEVEL: "warn" });
});
afterAll(() => api?.close());

const put = (room: number | string, body: unknown, headers: Record<string, string> = api.auth) =>
  api.app.inject({
    method: "PUT",
    url: `/api/v1/rooms/${room}/setpoints`,
    headers: { ...headers, "content-type": "application/json" },
    payload: JSON.stringify(body),
  });
const get = (url: string, headers: Record<string, string> = {}) =>
  api.app.inject({ method: "GET", url: `/api/v1${url}`, headers: { ...api.auth, ...headers } });

describe("setpoints API", () => {
  it("PUT stores day and night setpoints; GET shows those in force", async () => {
    const res = await put(1, {
      setpoints: [
        { quantity: "air_temperature", period: "day", target: 26, band: 1.5 },
        { quantity: "air_temperature", period: "night", target: 20, band: 1.5 },
        { quantity: "co2", target: 1000, band: 150, effective_from: "2026-01-01T00:00:00+01:00" },
      ],
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().setpoints).toHaveLength(3);
    const later = await put(1, { setpoints: [{ quantity: "co2", target: 1100, band: 150 }] });
    expect(later.statusCode).toBe(200);
    const g = await get("/rooms/1/setpoints");
    expect(g.statusCode).toBe(200);
    const sps = g.json().setpoints as { quantity: string; period: string; target: number; band: number }[];
    expect(sps.filter((s) => s.quantity === "co2")).toEqual([expect.objectContaining({ target: 1100, period: "any" })]);
    expect(sps.filter((s) => s.quantity === "air_temperature").map((s) => [s.period, s.target])).toEqual([
      ["day", 26],
      ["night", 20],
    ]);
  });

  it.each([
    ["an unknown quantity", { quantity: "par", target: 500, band: 50 }, "setpoints.0.quantity"],
    [
      "a band no wider than the heater's hysteresis",
      { quantity: "air_temperature", target: 24, band: 0.5 },
      "setpoints.0.band",
    ],
    [
      "a CO2 target above what the CO2 valve allows",
      { quantity: "co2", target: 2000, band: 100 },
      "setpoints.0.target",
    ],
    ["a CO2 target below what the CO2 valve allows", { quantity: "co2", target: 300, band: 100 }, "setpoints.0.target"],
    ["a humidity above 100 %", { quantity: "relative_humidity", target: 120, band: 5 }, "setpoints.0.target"],
    ["a negative band", { quantity: "relative_humidity", target: 60, band: -5 }, "setpoints.0.band"],
    ["an unknown field", { quantity: "co2", target: 900, band: 100, colour: "red" }, "setpoints.0.colour"],
  ])("refuses %s with 400 naming the field", async (_what, sp, path) => {
    const res = await put(1, { setpoints: [sp] });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().issues.map((i: { path: string }) => i.path)).toContain(path);
  });

  it("refuses a quantity no actuator of the room serves, an unknown room, and a missing token", async () => {
    const lab = await put(3, { setpoints: [{ quantity: "co2", target: 900, band: 100 }] });
    expect(lab.statusCode).toBe(400);
    expect(lab.json().message).toContain("setpoints.0.quantity: room 3 has no actuator for co2");
    expect((await put(77, { setpoints: [{ quantity: "co2", target: 900, band: 100 }] })).statusCode).toBe(404);
    expect((await get("/rooms/77/setpoints")).statusCode).toBe(404);
    expect((await put(1, { setpoints: [{ quantity: "co2", target: 900, band: 100 }] }, {})).statusCode).toBe(401);
  });

  it("bodies generated from the schema: never a 5xx; admitted and fit for the room's actuators → 200, else 400", async () => {
    const site = await loadSite(projectPath("ops/site.json"));
    const tally: Record<number, number> = {};
    await fc.assert(
      fc.asyncProperty(arbitraryOf(setpointsBody), fc.constantFrom(1, 2, 3), async (body, room) => {
        const res = await put(room, body);
        tally[res.statusCode] = (tally[res.statusCode] ?? 0) + 1;
        const what = `${room} ${JSON.stringify(body).slice(0, 300)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
        const p = setpointsBody.safeParse(body);
        if (!p.success) {
          expect(res.statusCode, what).toBe(400);
          return;
        }
        const problems = setpointProblems(site.actuators, room, p.data.setpoints);
        expect(res.statusCode, what).toBe(problems.length ? 400 : 200);
        if (problems.length)
          expect(res.json().issues.map((i: { path: string }) => i.path)).toEqual(problems.map(([x]) => x));
      }),
      { numRuns: Number(process.env.PROPERTY_CASES ?? 400) },
    );
    expect(tally[400]).toBeGreaterThan(0);
  }, 120_000);
});

describe("actuator events API", () => {
  beforeAll(async () => {
    const auto = new pg.Pool({ connectionString: roleUrl(api.db.url, "automation"), max: 1 });
    const base = {
      room_id: 1,
      device_id: 1,
      quantity: "air_temperature",
      setpoint: 24,
      band: 2,
      setpoint_id: null,
      dry_run: false,
      command_id: "b-1",
      ack_status: "sent" as const,
    };
    await insertActuatorEvents(auto, [
      {
        ...base,
        time: new Date("2026-02-01T10:00:00Z"),
        actuator: "flower_heater",
        action: "on",
        value: 21,
        state: true,
        reason: "21 vs target 24: below target - 0.5",
      },
      {
        ...base,
        time: new Date("2026-02-01T10:05:00Z"),
        actuator: "flower_heater",
        action: "safe",
        value: null,
        state: false,
        reason: "fail-safe: data stale 95 s",
      },
      {
        ...base,
        time: new Date("2026-02-01T10:06:00Z"),
        room_id: 2,
        device_id: 3,
        actuator: "veg_heater",
        action: "on",
        value: 20,
        state: true,
        reason: 'x, "quoted"',
      },
    ]);
    await auto.end();
  });

  it("lists a room's events in a window as JSON", async () => {
    const res = await get("/rooms/1/actuator-events?start=2026-02-01T00:00:00Z&end=2026-02-02T00:00:00Z");
    expect(res.statusCode, res.body).toBe(200);
    const b = res.json();
    expect(b.truncated).toBe(false);
    expect(b.events.map((e: { action: string }) => e.action)).toEqual(["on", "safe"]);
    expect(b.events[1]).toMatchObject({
      time: "2026-02-01T10:05:00.000000Z",
      actuator: "flower_heater",
      state: false,
      setpoint: 24,
      band: 2,
      reason: "fail-safe: data stale 95 s",
      dry_run: false,
    });
    const narrow = await get("/rooms/1/actuator-events?start=2026-02-01T10:01:00Z&end=2026-02-01T10:06:00Z");
    expect(narrow.json().events).toHaveLength(1);
  });

  it("as CSV with Accept: text/csv or format=csv, quoting text", async () => {
    for (const [url, headers] of [
      ["/rooms/2/actuator-events?start=2026-02-01T00:00:00Z&end=2026-02-02T00:00:00Z", { accept: "text/csv" }],
      ["/rooms/2/actuator-events?start=2026-02-01T00:00:00Z&end=2026-02-02T00:00:00Z&format=csv", {}],
    ] as const) {
      const res = await get(url, headers);
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/csv/);
      const lines = res.body.trim().split("\n");
      expect(lines[1]).toBe(
        "time,actuator,action,state,quantity,value,setpoint,band,reason,dry_run,command_id,ack_status",
      );
      expect(lines[2]).toBe(
        '2026-02-01T10:06:00.000000Z,veg_heater,on,true,air_temperature,20,24,2,"x, ""quoted""",false,b-1,sent',
      );
    }
  });

  it("refuses a window that ends before it starts, naming start", async () => {
    const res = await get("/rooms/1/actuator-events?start=2026-02-02T00:00:00Z&end=2026-02-01T00:00:00Z");
    expect(res.statusCode).toBe(400);
    expect(res.body).toContain("start");
  });
});
