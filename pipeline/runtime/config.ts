import { z } from "zod";
import { ConfigError } from "./errors.js";

// Every setting of every service: CEA_* environment variables parsed by this one
// schema. Defaults are the appliance's embedded defaults (the demo runs on them).
const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const bool = (def: boolean) =>
  z
    .enum(["1", "0", "true", "false", "yes", "no", "on", "off"])
    .default(def ? "true" : "false")
    .transform((v) => ["1", "true", "yes", "on"].includes(v));

export const configSchema = z.object({
  /** The schema owner's connection: `cea schema|site|retention|aggregates`, the legacy migration, the demo's set-up. */
  CEA_DATABASE_URL: z.string().url().default("postgresql://postgres@127.0.0.1:5432/cea"),
  /** can-worker's connection, as role cea_writer (default: CEA_DATABASE_URL). */
  CEA_WORKER_DATABASE_URL: z.string().url().optional(),
  /** cea-backend's connection, as role cea_api (default: CEA_DATABASE_URL). */
  CEA_API_DATABASE_URL: z.string().url().optional(),
  /** Read-only connection of the monitors, the demo's progress and Grafana, as role cea_reader (default: CEA_DATABASE_URL). */
  CEA_READER_DATABASE_URL: z.string().url().optional(),
  /** automation-service's connection, as role cea_automation (default: CEA_DATABASE_URL). */
  CEA_AUTOMATION_DATABASE_URL: z.string().url().optional(),
  CEA_REDIS_URL: z.string().url().default("redis://127.0.0.1:6379"),
  /** Prefix for every Redis key the platform uses; tests give each file its own. */
  CEA_REDIS_PREFIX: z.string().default(""),
  /** PostgreSQL, every pool: a statement running longer is cancelled (57014) and retried as an outage. */
  CEA_PG_STATEMENT_TIMEOUT_MS: int(60_000, 0),
  /** PostgreSQL, every pool: waiting longer for a lock fails the statement (55P03), retried as an outage. */
  CEA_PG_LOCK_TIMEOUT_MS: int(10_000, 0),
  /** PostgreSQL, every pool: a connection attempt that takes longer fails (and is retried). */
  CEA_PG_CONNECT_TIMEOUT_MS: int(10_000, 1),
  /** PostgreSQL, every pool: TCP keepalive idle time, so a dead server or network is noticed. */
  CEA_PG_KEEPALIVE_IDLE_MS: int(10_000, 1),
  CEA_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** The facility layout (rooms, nodes, devices, sensors). */
  CEA_SITE_FILE: z.string().default("ops/site.json"),
  /** The CAN database (frame layouts): a .kcd or .dbc file, chosen by the extension. */
  CEA_CAN_DB_FILE: z.string().default("ops/cea.kcd"),

  // stream contract
  CEA_STREAM: z.string().default("can:raw"),
  CEA_GROUP: z.string().default("can-worker-group"),
  CEA_CONSUMER: z.string().default("can-worker-1"),
  CEA_DEAD_STREAM: z.string().default("can:dead"),
  /** Command frames for the bus: appended by automation-service, transmitted by can-scanner. */
  CEA_CMD_STREAM: z.string().default("can:cmd"),
  /** The outcome of every command entry (acked, unacknowledged, expired, ...): appended by can-scanner, read by automation-service. */
  CEA_CMD_ACK_STREAM: z.string().default("can:cmd:ack"),
  /** Most dead letters kept in the dead-letter stream (older ones are trimmed and counted). */
  CEA_DEAD_MAXLEN: int(10_000, 1),
  /** Dead letters older than this many seconds are trimmed (0 = no age limit; default 30 days). */
  CEA_DEAD_MAX_AGE_S: int(2_592_000, 0),
  CEA_STREAM_WARN_LENGTH: int(5_000, 1),
  /** Acknowledged entries are trimmed to about this many. */
  CEA_STREAM_TRIM_ACKED: int(10_000, 1),
  /** Unacknowledged entries kept up to this many (about 37 h of nominal traffic). */
  CEA_STREAM_HARD_LIMIT: int(2_000_000, 1),

  // can-scanner
  /**
   * Where frames come from. Production reads the bus (socketcan; a missing
   * interface stops the scanner). "auto" (the bus, else the simulator) is for
   * the demo, which sets it; simulator and replay are for tests and trials.
   */
  CEA_CAN_SOURCE: z.enum(["auto", "socketcan", "simulator", "replay"]).default("socketcan"),
  CEA_CAN_INTERFACE: z.string().default("can0"),
  /** Bus bitrate; read by can-setup.service (ip link), listed here so the one schema names every setting. */
  CEA_CAN_BITRATE: int(125_000, 1),
  CEA_REPLAY_FILE: z.string().optional(),
  /** Replay speed: 0 = as fast as possible, 1 = real time. */
  CEA_REPLAY_SPEED: z.coerce.number().min(0).default(1),
  CEA_SCANNER_BUFFER: int(100_000, 1),
  /**
   * File where the scanner keeps the frames it could not append when it stops
   * while Redis is unreachable; the next start appends them first. Default:
   * can-scanner-<digest of Redis URL and stream>.spool in systemd's
   * StateDirectory ($STATE_DIRECTORY), else in the checkout's state dir
   * ($CEA_STATE_DIR or .state). Appended only to the Redis and stream it was written for.
   */
  CEA_SCANNER_SPOOL: z.string().optional(),
  /** A transmitted command frame counts as acknowledged when the node's status frame echoes its seq within this time. */
  CEA_SCANNER_COMMAND_ACK_MS: int(1_000, 10),
  /** Retransmissions of an unacknowledged command frame before its outcome is "unacknowledged" (N retries = N + 1 tries). */
  CEA_SCANNER_COMMAND_RETRIES: int(3, 0),
  /** Simulator: time acceleration (1 = real time; 3600 = one simulated hour per second). */
  CEA_SIM_SPEED: z.coerce.number().positive().default(1),
  /** Simulator: first simulated instant (default: now). */
  CEA_SIM_START: z.string().datetime({ offset: true }).optional(),
  /** Simulator: stop after this many simulated seconds (default: run until stopped). */
  CEA_SIM_DURATION_S: z.coerce.number().positive().optional(),

  // can-worker
  CEA_BATCH_SIZE: int(5_000, 1),
  CEA_FLUSH_MS: int(200, 1),
  CEA_CLAIM_IDLE_MS: int(60_000, 1),
  CEA_MAX_DELIVERIES: int(5, 1),
  /**
   * can-worker decode threads (piscina); 0 = inline. Inline by default: on the
   * 2-core appliance PostgreSQL is the bottleneck and the pool measured no
   * faster end to end (bench/pipeline.ts) while costing more CPU.
   */
  CEA_DECODE_THREADS: int(0, 0),
  /** Batches the can-worker writes at once, each in its own transaction on its own connection. */
  CEA_WRITE_CONCURRENCY: int(2, 1),
  /**
   * Derived stage (stages/derived.ts): seconds a room's latest humidity reading
   * may be older than a temperature reading of another entry it is paired
   * with; 0 = only the same entry (same CAN frame).
   */
  CEA_DERIVED_PAIR_WINDOW_S: z.coerce.number().min(0).max(3_600).default(10),
  CEA_AGG_REFRESH_MS: int(60_000, 1_000),
  CEA_HEALTH_TTL_S: int(30, 1),
  /**
   * Fault injection for the crash tests only: the worker SIGKILLs itself after
   * the COPY of its N-th batch (before COMMIT), or after the COMMIT of its N-th
   * batch (before XACK). Unset in production.
   */
  CEA_FAULT_KILL_MID_BATCH: z.coerce.number().int().positive().optional(),
  CEA_FAULT_KILL_AFTER_COMMIT: z.coerce.number().int().positive().optional(),

  // demo
  /** `npm run demo` stops by itself after this many seconds (default: until Ctrl-C). */
  CEA_DEMO_SECONDS: z.coerce.number().positive().optional(),

  // cea-backend
  CEA_HTTP_HOST: z.string().default("127.0.0.1"),
  CEA_HTTP_PORT: int(8080, 0),
  CEA_API_TOKEN: z
    .string()
    .min(16, "must be at least 16 characters")
    // a token read from a file often keeps its trailing newline: it could never match a request's
    .refine((s) => s.trim() === s, "must not begin or end with whitespace (a trailing newline?)")
    .optional(),
  CEA_DEMO: bool(false),
  CEA_BODY_LIMIT: int(1_048_576, 1024),
  CEA_BATCH_MAX: int(5_000, 1),
  CEA_TIME_FLOOR: z.string().datetime({ offset: true }).default("2000-01-01T00:00:00Z"),
  CEA_FUTURE_TOLERANCE_S: int(300, 0),
  CEA_HISTORY_POINT_BUDGET: int(2_000, 10),
  /** Read routes without a token (true) or behind the same bearer token as the writes (false, the default). */
  CEA_API_OPEN_READS: bool(false),
  /** A live value older than this many seconds is flagged stale. */
  CEA_LIVE_STALE_S: z.coerce.number().positive().default(10),
  /** Most raw points one history answer may hold; past it the API asks for an aggregate. */
  CEA_HISTORY_RAW_MAX: int(100_000, 10),
  /** Group commit of POST /measurement: most readings in one statement. */
  CEA_API_GROUP_MAX: int(512, 1),
  /** Group commit: groups written at the same time (each holds one database connection). */
  CEA_API_GROUP_INFLIGHT: int(2, 1),
  /**
   * Every API request ends within this many milliseconds: past it the answer is
   * 503 "database unavailable". Also the API pool's statement, lock, connect
   * and client-side query timeouts, so a frozen database cannot hold a request.
   */
  CEA_API_REQUEST_TIMEOUT_MS: int(5_000, 100),

  // automation-service
  /** One decision for every actuator this often. */
  CEA_AUTOMATION_INTERVAL_MS: int(1_000, 50),
  /** A live reading older than this many seconds does not count: its actuators go to their safe state. */
  CEA_AUTOMATION_STALE_S: z.coerce.number().positive().default(60),
  /**
   * Watchdog timeout carried by every command frame: a node that hears no
   * command for this long puts its outputs in their safe state. Commands are
   * repeated every third of it while nothing changes.
   */
  CEA_AUTOMATION_WATCHDOG_S: int(30, 3),
  /** Decide and record (dry_run = true) but send no command; the same as --dry-run. */
  CEA_AUTOMATION_DRY_RUN: bool(false),
  /** Decisions the service keeps for actuator_events while PostgreSQL is unreachable (older ones are dropped, counted). */
  CEA_AUTOMATION_EVENT_BUFFER: int(10_000, 1),

  // observability: Prometheus metrics and alert conditions
  /** Serve Prometheus metrics, each service on its own port below (false = none). */
  CEA_METRICS: bool(true),
  /** Address the metrics listeners bind: loopback, where they need no token. */
  CEA_METRICS_HOST: z.string().min(1).default("127.0.0.1"),
  /** When set, a scrape must send it as a bearer token (for a metrics host beyond loopback). */
  CEA_METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  CEA_SCANNER_METRICS_PORT: int(9481, 0),
  CEA_WORKER_METRICS_PORT: int(9482, 0),
  CEA_BACKEND_METRICS_PORT: int(9483, 0),
  CEA_AUTOMATION_METRICS_PORT: int(9484, 0),
  /** A sensor is silent when it has no stored reading for this many of its expected intervals. */
  CEA_SILENT_INTERVALS: z.coerce.number().min(1).default(10),
  /** Expected reporting interval of a sensor when neither the site file nor its CAN message gives one. */
  CEA_SENSOR_INTERVAL_S: z.coerce.number().positive().default(60),
  /** A room with no good reading (status not out_of_range) for this many seconds raises an alert. */
  CEA_ROOM_SILENT_S: int(300, 1),
  /** Dead letters per minute, averaged over 5 minutes, above which an alert is raised. */
  CEA_DEAD_LETTER_ALERT_PER_MIN: z.coerce.number().min(0).default(1),
  /** How often cea-backend evaluates the alert conditions (health, metrics and monitors show the result). */
  CEA_ALERT_EVAL_MS: int(15_000, 1_000),
});

export type Config = z.infer<typeof configSchema>;

/** Who connects: each kind of client has its own database role (db/migrations/0002_roles.sql). */
export type DatabaseClient = "owner" | "worker" | "api" | "reader" | "automation";

/** The connection URL of one kind of client: its own setting, else CEA_DATABASE_URL. */
export function databaseUrl(config: Config, client: DatabaseClient): string {
  const own = {
    owner: undefined,
    worker: config.CEA_WORKER_DATABASE_URL,
    api: config.CEA_API_DATABASE_URL,
    reader: config.CEA_READER_DATABASE_URL,
    automation: config.CEA_AUTOMATION_DATABASE_URL,
  }[client];
  return own ?? config.CEA_DATABASE_URL;
}

/** Parse the environment; an invalid variable stops start-up naming it. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const picked = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith("CEA_") && v !== ""));
  const parsed = configSchema.safeParse(picked);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration in the environment:\n${lines.join("\n")}`);
  }
  return parsed.data;
}
