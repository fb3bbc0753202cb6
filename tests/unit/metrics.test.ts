import fc from "fast-check";
import { pino } from "pino";
import client from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError } from "../../pipeline/runtime/errors.js";
import {
  BulkHistogram,
  counterFrom,
  createRegistry,
  gaugeFrom,
  keepServingMetrics,
  type MetricsServer,
  serveMetrics,
} from "../../pipeline/runtime/metrics.js";

const log = pino({ level: "silent" });

/** The sample lines of an exposition: "name{labels} value" → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe("registry", () => {
  it("has the process metrics (CPU, RSS, event-loop lag) and the service's name", async () => {
    const r = createRegistry("can-worker");
    const text = await r.metrics();
    for (const name of [
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_seconds",
      "nodejs_eventloop_lag_p99_seconds",
      "nodejs_heap_size_used_bytes",
    ])
      expect(text).toMatch(new RegExp(`^# TYPE ${name} `, "m"));
    expect(samples(text).get('cea_service_info{service="can-worker",version="0.1.0"}')).toBe(1);
  });

  it("two registries in one process are independent", async () => {
    const a = createRegistry("a", { processMetrics: false });
    const b = createRegistry("b", { processMetrics: false });
    counterFrom(a, "cea_x_total", "x", [], () => [[{}, 3]]);
    expect(await a.metrics()).toMatch(/^cea_x_total 3$/m);
    expect(await b.metrics()).not.toMatch(/cea_x_total/);
  });
});

describe("metrics read at scrape time", () => {
  it("a counter follows the running totals it reads, per label set", async () => {
    const r = createRegistry("t", { processMetrics: false });
    const stats = { hard_limit: 0, buffer: 0 };
    counterFrom(r, "cea_frames_dropped_total", "dropped frames", ["reason"], () =>
      Object.entries(stats).map(([reason, n]) => [{ reason }, n] as const),
    );
    // every label set is there from the start, at 0
    expect(samples(await r.metrics()).get('cea_frames_dropped_total{reason="hard_limit"}')).toBe(0);
    stats.hard_limit = 5;
    stats.buffer = 2;
    let s = samples(await r.metrics());
    expect(s.get('cea_frames_dropped_total{reason="hard_limit"}')).toBe(5);
    expect(s.get('cea_frames_dropped_total{reason="buffer"}')).toBe(2);
    stats.hard_limit = 7;
    s = samples(await r.metrics());
    expect(s.get('cea_frames_dropped_total{reason="hard_limit"}')).toBe(7);
  });

  it("a gauge shows only the label sets its reader returns now", async () => {
    const r = createRegistry("t", { processMetrics: false });
    let rooms: [string, number][] = [
      ["Lab", 3],
      ["Veg Room", 40],
    ];
    gaugeFrom(r, "cea_room_last_reading_age_seconds", "age", ["room"], async () =>
      rooms.map(([room, age]) => [{ room }, age] as const),
    );
    let s = samples(await r.metrics());
    expect(s.get('cea_room_last_reading_age_seconds{room="Veg Room"}')).toBe(40);
    rooms = [["Lab", 4]];
    s = samples(await r.metrics());
    expect(s.get('cea_room_last_reading_age_seconds{room="Lab"}')).toBe(4);
    expect(s.has('cea_room_last_reading_age_seconds{room="Veg Room"}')).toBe(false);
  });
});

describe("BulkHistogram", () => {
  const BUCKETS = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];

  it("adds a sorted run of values exactly as observing them one by one would, rising or falling", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 10, noNaN: true }), { maxLength: 200 }),
        fc.boolean(),
        (vals, falling) => {
          const sorted = [...vals].sort((x, y) => (falling ? y - x : x - y));
          const one = new BulkHistogram("cea_a_seconds", "a", BUCKETS, new client.Registry());
          const bulk = new BulkHistogram("cea_a_seconds", "a", BUCKETS, new client.Registry());
          for (const v of sorted) one.observe(v);
          bulk.observeSorted(sorted.length, (i) => sorted[i]!);
          const a = one.get().values;
          const b = bulk.get().values;
          expect(b.map((v) => [v.metricName, v.labels.le, v.value])).toEqual(
            a.map((v) => [v.metricName, v.labels.le, v.value]),
          );
        },
      ),
    );
  });

  it("is exposed in Prometheus' histogram format", async () => {
    const r = createRegistry("t", { processMetrics: false });
    const h = new BulkHistogram("cea_commit_lag_seconds", "lag", [0.1, 1], r);
    h.observeSorted(4, (i) => [0.05, 0.5, 0.7, 3][i]!);
    const text = await r.metrics();
    expect(text).toMatch(/^# TYPE cea_commit_lag_seconds histogram$/m);
    const s = samples(text);
    expect(s.get('cea_commit_lag_seconds_bucket{le="0.1"}')).toBe(1);
    expect(s.get('cea_commit_lag_seconds_bucket{le="1"}')).toBe(3);
    expect(s.get('cea_commit_lag_seconds_bucket{le="+Inf"}')).toBe(4);
    expect(s.get("cea_commit_lag_seconds_count")).toBe(4);
    expect(s.get("cea_commit_lag_seconds_sum")).toBeCloseTo(4.25);
  });

  it("refuses bucket bounds that do not increase", () => {
    expect(() => new BulkHistogram("cea_b", "b", [1, 1], new client.Registry())).toThrow(/must increase/);
  });
});

describe("the metrics listener", () => {
  let server: MetricsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it("serves /metrics on loopback without a token", async () => {
    const r = createRegistry("t", { processMetrics: false });
    server = await serveMetrics(r, { host: "127.0.0.1", port: 0, log });
    const res = await fetch(server.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await res.text()).toMatch(/^cea_service_info\{service="t"/m);
    expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
    expect((await fetch(server.url, { method: "POST" })).status).toBe(405);
  });

  it("asks for the bearer token when one is set", async () => {
    const r = createRegistry("t", { processMetrics: false });
    server = await serveMetrics(r, { host: "127.0.0.1", port: 0, log, token: "s".repeat(20) });
    expect((await fetch(server.url)).status).toBe(401);
    expect((await fetch(server.url, { headers: { authorization: `Bearer ${"x".repeat(20)}` } })).status).toBe(401);
    expect((await fetch(server.url, { headers: { authorization: `Bearer ${"s".repeat(20)}` } })).status).toBe(200);
  });

  it("a gauge whose reader fails has no samples for that scrape; the rest is still served", async () => {
    const r = createRegistry("t", { processMetrics: false });
    let fail = true;
    const errors: string[] = [];
    gaugeFrom(
      r,
      "cea_flaky",
      "flaky",
      [],
      async () => {
        if (fail) throw new Error("database unreachable");
        return [[{}, 1]];
      },
      (err) => errors.push((err as Error).message),
    );
    server = await serveMetrics(r, { host: "127.0.0.1", port: 0, log });
    let res = await fetch(server.url);
    expect(res.status).toBe(200);
    let s = samples(await res.text());
    expect(s.has("cea_flaky")).toBe(false);
    expect(s.get('cea_service_info{service="t",version="0.1.0"}')).toBe(1);
    expect(errors).toEqual(["database unreachable"]);
    fail = false;
    res = await fetch(server.url);
    s = samples(await res.text());
    expect(s.get("cea_flaky")).toBe(1);
  });

  it("keepServingMetrics: a port that is taken is logged and retried; the listener comes up once it is free", async () => {
    const r = createRegistry("t", { processMetrics: false });
    const blocker = await serveMetrics(r, { host: "127.0.0.1", port: 0, log });
    const lines: string[] = [];
    const capture = pino({ level: "info" }, { write: (l: string) => void lines.push(l) });
    const kept = keepServingMetrics(r, { host: "127.0.0.1", port: blocker.port, log: capture, retryMs: 50 });
    try {
      for (let i = 0; i < 100 && !lines.some((l) => l.includes("metrics not served")); i++)
        await new Promise((res) => setTimeout(res, 20));
      expect(kept.current()).toBeUndefined();
      expect(lines.filter((l) => l.includes("metrics not served"))).toHaveLength(1);
      await blocker.close();
      for (let i = 0; i < 200 && !kept.current(); i++) await new Promise((res) => setTimeout(res, 20));
      expect(kept.current()?.port).toBe(blocker.port);
      expect((await fetch(kept.current()!.url)).status).toBe(200);
    } finally {
      await kept.close();
    }
  });

  it("a port that is taken is a ConfigError naming the setting", async () => {
    const r = createRegistry("t", { processMetrics: false });
    server = await serveMetrics(r, { host: "127.0.0.1", port: 0, log });
    const second = serveMetrics(r, { host: "127.0.0.1", port: server.port, log, setting: "CEA_WORKER_METRICS_PORT" });
    await expect(second).rejects.toThrow(ConfigError);
    await expect(second).rejects.toThrow(/CEA_WORKER_METRICS_PORT.*EADDRINUSE/);
  });
});
