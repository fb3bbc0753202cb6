import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rebuildAggregates } from "../../db/schema.js";
import { aggregate, localDayStart, rawReadings } from "../support/local-days.js";
import { type Api, startApi } from "./api-harness.js";

// The API's daily history is the facility's local days (Europe/Amsterdam in the
// site file), across the change to summer time, from the day that holds the
// window's start.

let api: Api;
beforeAll(async () => {
  api = await startApi();
  await api.db.pool.query(
    `INSERT INTO measurement (time, sensor_id, value)
     SELECT t, 101, extract(epoch FROM t) / 3600 % 7
     FROM generate_series(timestamptz '2026-03-27T00:00:00Z', timestamptz '2026-03-31T23:55:00Z', INTERVAL '5 minutes') t`,
  );
  await rebuildAggregates(api.db.pool);
});
afterAll(() => api?.close());

describe("daily history", () => {
  it("returns local days (the 23-hour one too), starting with the day that holds `start`", async () => {
    // 2026-03-28T00:00Z is 01:00 local: the first point is that local day, begun 2026-03-27T23:00Z
    const res = await api.app.inject({
      url: "/api/v1/sensors/101/history?start=2026-03-28T00:00:00Z&end=2026-03-31T00:00:00Z&resolution=daily",
      headers: api.auth,
    });
    expect(res.statusCode).toBe(200);
    const points = res.json().points as { time: string; min: number; max: number; avg: number; count: number }[];
    expect(points.map((p) => [p.time, p.count])).toEqual([
      ["2026-03-27T23:00:00.000000Z", 24 * 12],
      ["2026-03-28T23:00:00.000000Z", 23 * 12],
      ["2026-03-29T22:00:00.000000Z", 24 * 12],
      ["2026-03-30T22:00:00.000000Z", 24 * 12],
    ]);
    // each point holds the whole local day's readings, computed here from the raw rows
    const expected = aggregate(await rawReadings(api.db.pool), (ms) => localDayStart(ms, "Europe/Amsterdam"));
    for (const p of points) {
      const e = expected.find((x) => x.bucket === Date.parse(p.time));
      expect(e, p.time).toBeDefined();
      expect([p.min, p.max, p.count]).toEqual([e!.min, e!.max, e!.count]);
      expect(p.avg).toBeCloseTo(e!.avg, 9);
    }
  });
});
