import type { FastifyInstance } from "fastify";
import fastifyMetricsModule from "fastify-metrics";
import client from "prom-client";
import type { Config } from "../runtime/config.js";
import { gaugeFrom, type Registry } from "../runtime/metrics.js";
import type { AlertEvaluator } from "./alerts.js";

// cea-backend's metrics: request duration by route and status (fastify-metrics,
// route templates as labels, so the label set is bounded by the routes), the
// group commit's size, and the alert conditions' values with their thresholds
// (ops/prometheus/cea-alerts.yml compares the two). Sensor and room labels are
// bounded by the site file. Ages are taken at scrape time from the newest
// reading the last evaluation found, so they keep growing while nothing new is
// stored, even if an evaluation is stuck on a frozen database.

// a CommonJS module whose plugin is its `default` export
const fastifyMetrics = fastifyMetricsModule.default;

/** Readings per group-commit statement. */
export const GROUP_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export interface BackendMetrics {
  /** The group writer reports each statement's size here. */
  groupSize: (readings: number) => void;
}

export async function registerBackendMetrics(
  app: FastifyInstance,
  registry: Registry,
  config: Config,
  alerts: AlertEvaluator,
): Promise<BackendMetrics> {
  await app.register(fastifyMetrics, {
    endpoint: null,
    defaultMetrics: { enabled: false },
    routeMetrics: {
      enabled: { histogram: true, summary: false },
      registeredRoutesOnly: true,
      groupStatusCodes: false,
      overrides: {
        histogram: {
          name: "http_request_duration_seconds",
          help: "HTTP request duration by method, route template and status code",
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers: [registry],
        },
        // the summary is off; keep it out of every registry
        summary: { registers: [] },
      },
    },
  });

  const group = new client.Histogram({
    name: "cea_api_group_commit_size",
    help: "Readings written per group-commit statement of POST /measurement",
    buckets: GROUP_SIZE_BUCKETS,
    registers: [registry],
  });

  const ageOf = (t: Date | null, now: number) =>
    t ? Math.max(0, (now - t.getTime()) / 1000) : Number.POSITIVE_INFINITY;
  const st = () => alerts.state;

  gaugeFrom(
    registry,
    "cea_sensor_last_reading_age_seconds",
    "Seconds since the sensor's newest stored reading (+Inf: none in 24 h)",
    ["sensor", "room", "kind"],
    () => {
      const now = Date.now();
      return st().sensors.map((s) => [{ sensor: s.sensor, room: s.room, kind: s.kind ?? "" }, ageOf(s.last_time, now)]);
    },
  );
  gaugeFrom(
    registry,
    "cea_sensor_silent_after_seconds",
    "A sensor is silent past this age: CEA_SILENT_INTERVALS times its expected interval",
    ["sensor", "room", "kind"],
    () => st().sensors.map((s) => [{ sensor: s.sensor, room: s.room, kind: s.kind ?? "" }, s.silent_after_s]),
  );
  const rooms = () => {
    const now = Date.now();
    const out = new Map<string, { last: number; good: number }>();
    for (const s of st().sensors) {
      const r = out.get(s.room) ?? { last: Number.POSITIVE_INFINITY, good: Number.POSITIVE_INFINITY };
      r.last = Math.min(r.last, ageOf(s.last_time, now));
      r.good = Math.min(r.good, ageOf(s.last_good_time, now));
      out.set(s.room, r);
    }
    return out;
  };
  gaugeFrom(
    registry,
    "cea_room_last_reading_age_seconds",
    "Seconds since the room's newest stored reading of any sensor (+Inf: none in 24 h)",
    ["room"],
    () => [...rooms()].map(([room, r]) => [{ room }, r.last]),
  );
  gaugeFrom(
    registry,
    "cea_room_last_good_reading_age_seconds",
    "Seconds since the room's newest reading that is not out_of_range (+Inf: none in 24 h)",
    ["room"],
    () => [...rooms()].map(([room, r]) => [{ room }, r.good]),
  );
  gaugeFrom(
    registry,
    "cea_room_silent_after_seconds",
    "A room without a good reading for longer than this raises an alert (CEA_ROOM_SILENT_S)",
    ["room"],
    () => [...rooms().keys()].map((room) => [{ room }, config.CEA_ROOM_SILENT_S]),
  );
  gaugeFrom(
    registry,
    "cea_room_out_of_band",
    "1 when no good reading of the kind in the room was inside its band for the band's time (site file)",
    ["room", "kind"],
    () => st().bands.map((b) => [{ room: b.room, kind: b.kind }, b.out_of_band ? 1 : 0]),
  );
  gaugeFrom(
    registry,
    "cea_timescaledb_job_failed",
    "1 for each TimescaleDB job whose last run failed",
    ["job_id", "proc"],
    () => st().failing_jobs.map((j) => [{ job_id: j.job_id, proc: j.proc }, 1]),
  );
  gaugeFrom(
    registry,
    "cea_database_up",
    "1 when PostgreSQL answered cea-backend's last evaluation and accepts writes",
    [],
    () => (st().database_up === null ? [] : [[{}, st().database_up ? 1 : 0]]),
  );
  gaugeFrom(registry, "cea_redis_up", "1 when cea-backend's last evaluation could reach Redis", [], () =>
    st().redis_up === null ? [] : [[{}, st().redis_up ? 1 : 0]],
  );
  gaugeFrom(
    registry,
    "cea_alerts_active",
    "Active alert conditions as cea-backend evaluates them (also in GET /health)",
    ["condition", "severity"],
    () => {
      const n = new Map<string, number>();
      for (const a of st().alerts)
        n.set(`${a.condition}\t${a.severity}`, (n.get(`${a.condition}\t${a.severity}`) ?? 0) + 1);
      return [...n].map(([k, v]) => {
        const [condition, severity] = k.split("\t");
        return [{ condition, severity }, v] as const;
      });
    },
  );
  gaugeFrom(
    registry,
    "cea_alert_evaluation_age_seconds",
    "Seconds since the alert conditions were last evaluated (every CEA_ALERT_EVAL_MS)",
    [],
    () => {
      const at = st().evaluated_at;
      return at ? [[{}, (Date.now() - Date.parse(at)) / 1000]] : [];
    },
  );

  return { groupSize: (n) => group.observe(n) };
}
