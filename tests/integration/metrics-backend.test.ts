import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createTestDatabase, type TestDatabase, testPrefix } from "../support/db.js";
import { freePort, killAll, type Service, spawnService, waitUntil } from "../support/procs.js";
import { type Sample, scrape, value } from "../support/scrape.js";

// cea-backend as it runs (dist/pipeline/cea-backend.js) serves Prometheus
// metrics on its own loopback port: process metrics, request duration by route
// template and status, the group commit's size, and the alert conditions'
// values and thresholds.

let db: TestDatabase;
let svc: Service;
let api: string;
let metricsUrl: string;
const token = randomBytes(18).toString("base64url");

beforeAll(async () => {
  db = await createTestDatabase();
  const [httpPort, metricsPort] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${httpPort}/api/v1`;
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  svc = spawnService("cea-backend", {
    CEA_DATABASE_URL: db.url,
    CEA_REDIS_URL: inject("redisUrl"),
    CEA_REDIS_PREFIX: testPrefix(),
    CEA_API_TOKEN: token,
    CEA_HTTP_PORT: String(httpPort),
    CEA_BACKEND_METRICS_PORT: String(metricsPort),
    CEA_ALERT_EVAL_MS: "1000",
  });
  await waitUntil(
    "cea-backend's metrics",
    async () =>
      (await fetch(metricsUrl)
        .then((r) => r.status === 200)
        .catch(() => false)) || undefined,
    30_000,
  );
});
afterAll(async () => {
  await killAll();
  await db?.drop();
});

const auth = { authorization: `Bearer ${token}` };

describe("cea-backend metrics", () => {
  let s: Sample[];
  beforeAll(async () => {
    expect((await fetch(`${api}/sensors`, { headers: auth })).status).toBe(200);
    expect((await fetch(`${api}/sensors/101`, { headers: auth })).status).toBe(200);
    expect((await fetch(`${api}/sensors/9999`, { headers: auth })).status).toBe(404);
    const t = new Date(Date.now() - 1000).toISOString();
    const posts = await Promise.all(
      [101, 102, 103].map((sensor_id) =>
        fetch(`${api}/measurement`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ time: t, sensor_id, value: 21 }),
        }),
      ),
    );
    expect(posts.map((p) => p.status)).toEqual([201, 201, 201]);
    // wait for an alert evaluation that has seen the new readings
    s = await waitUntil(
      "an evaluation with the posted readings",
      async () => {
        const x = await scrape(metricsUrl);
        const age = value(x, "cea_sensor_last_reading_age_seconds", { sensor: "dry_bulb_b" });
        return age !== undefined && Number.isFinite(age) ? x : undefined;
      },
      20_000,
      200,
    );
  });

  it("process metrics and the service's name", () => {
    expect(value(s, "process_resident_memory_bytes")).toBeGreaterThan(10_000_000);
    expect(value(s, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(value(s, "nodejs_eventloop_lag_p99_seconds")).toBeGreaterThanOrEqual(0);
    expect(value(s, "cea_service_info", { service: "cea-backend" })).toBe(1);
  });

  it("request duration by method, route template and status", () => {
    const n = (route: string, status: string, method = "GET") =>
      value(s, "http_request_duration_seconds_count", { method, route, status_code: status });
    expect(n("/api/v1/sensors", "200")).toBe(1);
    expect(n("/api/v1/sensors/:id", "200")).toBe(1);
    expect(n("/api/v1/sensors/:id", "404")).toBe(1);
    expect(n("/api/v1/measurement", "201", "POST")).toBe(3);
    // the template, never the concrete path: the label set stays bounded
    expect(s.some((x) => x.labels.route === "/api/v1/sensors/101")).toBe(false);
  });

  it("the group commit's size", () => {
    expect(value(s, "cea_api_group_commit_size_sum")).toBe(3);
    expect(value(s, "cea_api_group_commit_size_count")).toBeGreaterThanOrEqual(1);
  });

  it("the alert conditions' values and thresholds, by sensor and room from the site file", () => {
    const age = value(s, "cea_sensor_last_reading_age_seconds", {
      sensor: "dry_bulb_b",
      room: "Flower Room",
      kind: "air_temperature",
    });
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(60);
    // never reported: +Inf, past its threshold (10 intervals of the message's 1 s cycle)
    expect(value(s, "cea_sensor_last_reading_age_seconds", { sensor: "co2_v" })).toBe(Infinity);
    expect(value(s, "cea_sensor_silent_after_seconds", { sensor: "co2_v", room: "Veg Room", kind: "co2" })).toBe(10);
    expect(value(s, "cea_room_last_good_reading_age_seconds", { room: "Flower Room" })).toBeLessThan(60);
    expect(value(s, "cea_room_last_good_reading_age_seconds", { room: "Lab" })).toBe(Infinity);
    expect(value(s, "cea_room_silent_after_seconds", { room: "Lab" })).toBe(300);
    expect(value(s, "cea_room_out_of_band", { room: "Flower Room", kind: "air_temperature" })).toBe(0);
    expect(value(s, "cea_database_up")).toBe(1);
    expect(value(s, "cea_redis_up")).toBe(1);
    // every sensor but the three written above: the nodes' 62 others (15 of them applied outputs) and the 9 derived ones
    expect(value(s, "cea_alerts_active", { condition: "sensor_silent", severity: "warning" })).toBe(62 + 9);
    expect(value(s, "cea_alert_evaluation_age_seconds")).toBeLessThan(30);
  });
});

describe("stopping", () => {
  it("SIGTERM stops the API and the metrics listener, exit 0", async () => {
    expect(svc.exit, svc.tail()).toBeUndefined();
    expect(await svc.kill("SIGTERM", 20_000)).toEqual({ code: 0, signal: null });
    await expect(fetch(metricsUrl)).rejects.toThrow();
  });
});
