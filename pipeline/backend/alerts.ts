import type { Redis } from "ioredis";
import type pg from "pg";
import {
  type BandState,
  bandStates,
  type FailingJob,
  failingJobs,
  type SensorFreshness,
  sensorFreshness,
} from "../../db/queries/alerts.js";
import { dbHealth } from "../../db/queries/health.js";
import type { Config } from "../runtime/config.js";
import type { RedisKeys } from "../runtime/keys.js";
import type { Logger } from "../runtime/log.js";

// The alert conditions, evaluated by cea-backend every CEA_ALERT_EVAL_MS from
// the database (stored readings, bands, TimescaleDB jobs) and Redis (backlog,
// dead letters, the services' health keys). One result feeds three readers so
// they agree: GET /health (silent sensors and active alerts), the Prometheus
// metrics (values and thresholds; ops/prometheus/cea-alerts.yml compares them)
// and the monitors, which read the flat Redis hash `alerts` (field = alert id,
// value = "severity|since|summary"), kept with an expiry so a stopped backend
// shows as "not evaluated" rather than "all clear".

export type AlertCondition =
  | "sensor_silent"
  | "room_no_good_reading"
  | "room_out_of_band"
  | "backlog_high"
  | "dead_letters_high"
  | "database_degraded"
  | "worker_degraded"
  | "timescaledb_job_failing";

export interface Alert {
  id: string;
  condition: AlertCondition;
  severity: "warning" | "critical";
  summary: string;
  /** When this evaluator first saw the condition (ISO 8601). */
  since: string;
}

export interface SilentSensor {
  sensor_id: number;
  sensor: string;
  kind: string | null;
  room: string;
  last_reading: string | null;
  /** Seconds since the last stored reading; null when there is none within the lookback window. */
  age_s: number | null;
  silent_after_s: number;
}

export interface RoomFreshness {
  room: string;
  last_reading_age_s: number | null;
  last_good_reading_age_s: number | null;
}

export interface AlertState {
  /** When the last evaluation began reading (what it shows is at least this fresh). */
  evaluated_at: string | null;
  /** Why the last evaluation could not see everything (database or Redis unreachable), else null. */
  incomplete: string | null;
  alerts: Alert[];
  silent_sensors: SilentSensor[];
  sensors: (SensorFreshness & { age_s: number | null; silent_after_s: number })[];
  rooms: RoomFreshness[];
  bands: (BandState & { out_of_band: boolean })[];
  failing_jobs: FailingJob[];
  backlog: number | null;
  dead_letters_per_min: number | null;
  database_up: boolean | null;
  redis_up: boolean | null;
}

/** How far back the freshness lookups look: a sensor silent for longer shows age null ("none in 24 h"). */
const LOOKBACK_S = 86_400;
/** Dead letters are counted over this window (their stream ids carry the time they were written). */
const DEAD_WINDOW_MS = 5 * 60_000;

const emptyState = (): AlertState => ({
  evaluated_at: null,
  incomplete: "not evaluated yet",
  alerts: [],
  silent_sensors: [],
  sensors: [],
  rooms: [],
  bands: [],
  failing_jobs: [],
  backlog: null,
  dead_letters_per_min: null,
  database_up: null,
  redis_up: null,
});

const ageS = (now: Date, t: Date | null) => (t ? Math.max(0, (now.getTime() - t.getTime()) / 1000) : null);
const fmtAge = (s: number | null) =>
  s === null
    ? "none in 24 h"
    : s < 120
      ? `${Math.round(s)} s`
      : s < 7200
        ? `${Math.round(s / 60)} min`
        : `${(s / 3600).toFixed(1)} h`;

export interface AlertDeps {
  config: Config;
  pool: pg.Pool;
  redis: Redis;
  keys: RedisKeys;
  log: Logger;
}

export class AlertEvaluator {
  state: AlertState = emptyState();
  private readonly since = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly deps: AlertDeps) {}

  /** Evaluate now and then every CEA_ALERT_EVAL_MS. */
  start(): void {
    const tick = () => {
      this.running ??= this.evaluate()
        .then(() => undefined)
        .catch((err: Error) => this.deps.log.warn({ err: err.message }, "alert evaluation failed"))
        .finally(() => {
          this.running = undefined;
        });
    };
    tick();
    this.timer = setInterval(tick, this.deps.config.CEA_ALERT_EVAL_MS);
    this.timer.unref();
  }

  /** Stop the timer; an evaluation in hand gets 2 s to end (a frozen database must not hold up a shutdown). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((r) => (t = setTimeout(r, 2_000)))]);
    clearTimeout(t);
  }

  /** One evaluation: read everything, decide, publish. A dependency that is down is an alert, not an error. */
  async evaluate(): Promise<AlertState> {
    const { config, pool, redis, keys } = this.deps;
    // the time the conditions are read at: an evaluation counts from its start, not from when it ended
    const now = new Date().toISOString();
    const s = emptyState();
    const alerts: Omit<Alert, "since">[] = [];
    const missing: string[] = [];

    try {
      if ((await dbHealth(pool)).read_only) {
        s.database_up = false;
        alerts.push({
          id: "database_degraded",
          condition: "database_degraded",
          severity: "critical",
          summary: "PostgreSQL is read-only: every write is refused (readings wait in the stream)",
        });
      }
      const fresh = await sensorFreshness(pool, {
        defaultIntervalS: config.CEA_SENSOR_INTERVAL_S,
        lookbackS: LOOKBACK_S,
      });
      s.database_up ??= true;
      const rooms = new Map<string, { last: Date | null; good: Date | null; now: Date }>();
      for (const f of fresh) {
        const age = ageS(f.now, f.last_time);
        const after = f.interval_s * config.CEA_SILENT_INTERVALS;
        s.sensors.push({ ...f, age_s: age, silent_after_s: after });
        if (age === null || age > after) {
          s.silent_sensors.push({
            sensor_id: f.sensor_id,
            sensor: f.sensor,
            kind: f.kind,
            room: f.room,
            last_reading: f.last_time?.toISOString() ?? null,
            age_s: age === null ? null : Math.round(age),
            silent_after_s: after,
          });
          alerts.push({
            id: `sensor_silent:${f.sensor}`,
            condition: "sensor_silent",
            severity: "warning",
            summary: `sensor ${f.sensor} (${f.room}) silent: last reading ${fmtAge(age)} ago, expected every ${f.interval_s} s`,
          });
        }
        const r = rooms.get(f.room) ?? { last: null, good: null, now: f.now };
        if (f.last_time && (!r.last || f.last_time > r.last)) r.last = f.last_time;
        if (f.last_good_time && (!r.good || f.last_good_time > r.good)) r.good = f.last_good_time;
        rooms.set(f.room, r);
      }
      for (const [room, r] of rooms) {
        const good = ageS(r.now, r.good);
        s.rooms.push({ room, last_reading_age_s: ageS(r.now, r.last), last_good_reading_age_s: good });
        if (good === null || good > config.CEA_ROOM_SILENT_S)
          alerts.push({
            id: `room_no_good_reading:${room}`,
            condition: "room_no_good_reading",
            severity: "critical",
            summary: `${room}: no good reading for ${fmtAge(good)} (limit ${config.CEA_ROOM_SILENT_S} s)`,
          });
      }
      for (const b of await bandStates(pool)) {
        const out = b.any_reading && !b.any_inside;
        s.bands.push({ ...b, out_of_band: out });
        if (out) {
          const band = `${b.min_value ?? "-∞"} … ${b.max_value ?? "∞"}`;
          alerts.push({
            id: `room_out_of_band:${b.room}:${b.kind}`,
            condition: "room_out_of_band",
            severity: "critical",
            summary: `${b.room}: ${b.kind} outside ${band} for ${b.for_s} s`,
          });
        }
      }
      s.failing_jobs = await failingJobs(pool).catch(() => []);
      for (const j of s.failing_jobs)
        alerts.push({
          id: `timescaledb_job_failing:${j.job_id}`,
          condition: "timescaledb_job_failing",
          severity: "warning",
          summary: `TimescaleDB job ${j.job_id} (${j.proc}) failed its last run`,
        });
    } catch (err) {
      s.database_up = false;
      missing.push(`database: ${(err as Error).message}`);
      alerts.push({
        id: "database_degraded",
        condition: "database_degraded",
        severity: "critical",
        summary: `PostgreSQL unreachable or failing: ${(err as Error).message}`,
      });
    }

    try {
      s.backlog = await backlogOf(redis, keys.raw, config.CEA_GROUP);
      s.redis_up = true;
      if (s.backlog !== null && s.backlog > config.CEA_STREAM_WARN_LENGTH)
        alerts.push({
          id: "backlog_high",
          condition: "backlog_high",
          severity: "warning",
          summary: `raw stream backlog ${s.backlog} entries (warning above CEA_STREAM_WARN_LENGTH=${config.CEA_STREAM_WARN_LENGTH})`,
        });
      const threshold = config.CEA_DEAD_LETTER_ALERT_PER_MIN;
      const cap = Math.ceil((threshold * DEAD_WINDOW_MS) / 60_000) + 1;
      const recent = await redis.xrange(keys.dead, String(Date.now() - DEAD_WINDOW_MS), "+", "COUNT", cap);
      s.dead_letters_per_min = (recent.length * 60_000) / DEAD_WINDOW_MS;
      if (s.dead_letters_per_min > threshold)
        alerts.push({
          id: "dead_letters_high",
          condition: "dead_letters_high",
          severity: "warning",
          summary: `${recent.length >= cap ? "at least " : ""}${s.dead_letters_per_min.toFixed(1)} dead letters per minute over 5 min (limit ${threshold})`,
        });
      for (const h of await healthBodies(redis, keys.health("*")))
        if (h.status === "degraded")
          alerts.push({
            id: `worker_degraded:${h.consumer ?? h.service ?? "?"}`,
            condition: "worker_degraded",
            severity: "critical",
            summary: `${h.consumer ?? h.service ?? "a service"} degraded: ${h.reason ?? "no reason given"}`,
          });
    } catch (err) {
      s.redis_up = false;
      missing.push(`redis: ${(err as Error).message}`);
    }

    const seen = new Set(alerts.map((a) => a.id));
    for (const id of [...this.since.keys()]) if (!seen.has(id)) this.since.delete(id);
    s.alerts = alerts.map((a) => {
      const since = this.since.get(a.id) ?? now;
      this.since.set(a.id, since);
      return { ...a, since };
    });
    s.evaluated_at = now;
    s.incomplete = missing.length ? missing.join("; ") : null;
    this.state = s;
    if (s.redis_up)
      await this.publish(s).catch((err: Error) => this.deps.log.warn({ err: err.message }, "alerts not published"));
    return s;
  }

  /** The flat hash the monitors read: one field per active alert, plus _evaluated_at; expires if not renewed. */
  private async publish(s: AlertState): Promise<void> {
    const { redis, keys, config } = this.deps;
    const key = keys.alerts;
    const fields: string[] = ["_evaluated_at", s.evaluated_at ?? ""];
    if (s.incomplete) fields.push("_incomplete", s.incomplete);
    for (const a of s.alerts) fields.push(a.id, `${a.severity}|${a.since}|${a.summary.replace(/[\r\n]/g, " ")}`);
    const ttl = Math.max(30, Math.ceil((3 * config.CEA_ALERT_EVAL_MS) / 1000));
    await redis
      .multi()
      .del(key)
      .hset(key, ...fields)
      .expire(key, ttl)
      .exec();
  }
}

/** Entries the group has not acknowledged (lag + pending), or the stream length when there is no group. */
async function backlogOf(redis: Redis, stream: string, group: string): Promise<number | null> {
  const len = await redis.xlen(stream);
  if (len === 0) return 0;
  let groups: unknown;
  try {
    groups = await redis.xinfo("GROUPS", stream);
  } catch {
    return len;
  }
  for (const g of (groups as unknown[][]) ?? []) {
    const o: Record<string, unknown> = {};
    for (let i = 0; i + 1 < g.length; i += 2) o[String(g[i])] = g[i + 1];
    if (o.name !== group) continue;
    const pending = Number(o.pending ?? 0);
    // lag is null when Redis cannot tell (entries deleted past the last delivered one)
    const lag = o.lag === null || o.lag === undefined ? null : Number(o.lag);
    return lag === null ? null : pending + lag;
  }
  return len;
}

interface HealthBody {
  service?: string;
  consumer?: string;
  status?: string;
  reason?: string | null;
}

async function healthBodies(redis: Redis, pattern: string): Promise<HealthBody[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 200);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0" && keys.length < 1_000);
  if (!keys.length) return [];
  const bodies = await redis.mget(...keys);
  const out: HealthBody[] = [];
  for (const b of bodies) {
    if (!b) continue;
    try {
      out.push(JSON.parse(b) as HealthBody);
    } catch {
      // a body that is not JSON is no status
    }
  }
  return out;
}
