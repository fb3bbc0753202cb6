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

  it("refuses two setpoints for one quantity, period and start in one body, naming the second", async () => {
    for (const effective_from of [undefined, "2026-03-01T06:00:00Z"]) {
      const res = await put(1, {
        setpoints: [
          { quantity: "air_temperature", period: "day", target: 0, band: 1, effective_from },
          { quantity: "co2", target: 900, band: 100, effective_from },
          { quantity: "air_temperature", period: "day", target: 0, band: 1, effective_from },
        ],
      });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().issues).toEqual([expect.objectContaining({ path: "setpoints.2" })]);
      expect(res.json().issues[0].message).toContain("setpoints.0");
    }
  });

  it("a repeated PUT is the stored setpoint; another value at a stored key is 409 and stores nothing of the body", async () => {
    const at = "2026-04-01T06:00:00.000001+02:00";
    const body = {
      setpoints: [{ quantity: "relative_humidity", period: "night", target: 65, band: 5, effective_from: at }],
    };
    const first = await put(2, body);
    expect(first.statusCode, first.body).toBe(200);
    const again = await put(2, body);
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().setpoints).toEqual(first.json().setpoints);
    expect(again.json().setpoints[0].effective_from).toBe("2026-04-01T04:00:00.000001Z");
    // one microsecond later is another key, not the same one (a Date would have merged them)
    const later = await put(2, {
      setpoints: [{ ...body.setpoints[0], effective_from: "2026-04-01T04:00:00.000002Z", target: 66 }],
    });
    expect(later.statusCode, later.body).toBe(200);
    const clash = await put(2, {
      setpoints: [
        { quantity: "co2", target: 950, band: 100, effective_from: "2026-04-02T00:00:00Z" },
        { ...body.setpoints[0], target: 70 },
      ],
    });
    expect(clash.statusCode, clash.body).toBe(409);
    expect(clash.json().issues).toEqual([
      expect.objectContaining({ path: "setpoints.1.effective_from", message: expect.stringContaining("target 65") }),
    ]);
    const { rows } = await api.db.pool.query(
      "SELECT quantity, target FROM setpoints WHERE room_id = 2 AND effective_from >= '2026-04-01T00:00:00Z' ORDER BY effective_from",
    );
    expect(rows).toEqual([
      { quantity: "relative_humidity", target: 65 },
      { quantity: "relative_humidity", target: 66 },
    ]);
  });

  it("bodies generated from the schema: never a 5xx; admitted and fit for the room's actuators → 200, else 400", async () => {
    const site = await loadSite(projectPath("ops/site.json"));
    const tally: Record<number, number> = {};
    await fc.assert(
      fc.asyncProperty(arbitraryOf(setpointsBody), fc.constantFrom(1, 2, 3), async (body, room) => {
        const p = setpointsBody.safeParse(body);
        const problems = p.success ? setpointProblems(site.actuators, room, p.data.setpoints) : [];
        // an edge instant generated twice with another target meets the row an earlier case stored
        const clashing = p.success && !problems.length ? await storedElsewise(room, p.data.setpoints) : [];
        const res = await put(room, body);
        tally[res.statusCode] = (tally[res.statusCode] ?? 0) + 1;
        const what = `${room} ${JSON.stringify(body).slice(0, 300)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
        if (!p.success) {
          expect(res.statusCode, what).toBe(400);
          return;
        }
        expect(res.statusCode, what).toBe(problems.length ? 400 : clashing.length ? 409 : 200);
        const paths = problems.length ? problems.map(([x]) => x) : clashing.map((i) => `setpoints.${i}.effective_from`);
        if (paths.length) expect(res.json().issues.map((i: { path: string }) => i.path)).toEqual(paths);
      }),
      { numRuns: Number(process.env.PROPERTY_CASES ?? 400) },
    );
    expect(tally[400]).toBeGreaterThan(0);
  }, 120_000);
});

/** Indexes of the admitted setpoints whose key holds a stored row with another target or band. */
async function storedElsewise(
  room: number,
  sps: readonly { quantity: string; period: string; target: number; band: number; effective_from?: string }[],
): Promise<number[]> {
  const out: number[] = [];
  for (const [i, s] of sps.entries()) {
    if (s.effective_from === undefined) continue;
    const { rows } = await api.db.pool.query(
      `SELECT 1 FROM setpoints WHERE room_id = $1 AND quantity = $2 AND period = $3 AND effective_from = $4
         AND (target, tolerance) IS DISTINCT FROM ($5::float8, $6::float8)`,
      [room, s.quantity, s.period, s.effective_from, s.target, s.band],
    );
    if (rows.length) out.push(i);
  }
  return out;
}

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
