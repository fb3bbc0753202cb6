import { type Edition, edition } from "./edition.js";
import { type FailingJob, failingJobs, formatFailingJob } from "./jobs.js";
import type { Queryable } from "./pool.js";
import { checkPrivileges, ROLES, roleLogins } from "./roles.js";

export interface Check {
  name: string;
  ok: boolean;
  detail?: string;
  /** How a failed check reads: something missing (the default) or something there that must not be. */
  problem?: "missing" | "wrong";
}

export interface VerifyReport {
  ok: boolean;
  edition: Edition;
  timescaledb_version: string | null;
  features: Record<string, string>;
  checks: Check[];
  /**
   * TimescaleDB jobs whose last run failed, with their last error and whether
   * their work is done anyway: reported, not counted as a schema fault.
   */
  failing_jobs: FailingJob[];
}

const TABLES = [
  "facility",
  "zone",
  "room",
  "rack",
  "device",
  "sensor",
  "measurement",
  "crop_batch",
  "setpoints",
  "actuator_events",
  "cea_setting",
  "measurement_agg_pending",
  "sensor_kind",
  "room_band",
  "migration_checkpoint",
];

// [table, columns, referenced table]
const FOREIGN_KEYS: [string, string, string][] = [
  ["zone", "facility_id", "facility"],
  ["room", "facility_id", "facility"],
  ["room", "zone_id,facility_id", "zone"],
  ["rack", "room_id", "room"],
  ["device", "room_id", "room"],
  ["device", "rack_id,room_id", "rack"],
  ["sensor", "device_id", "device"],
  ["measurement", "sensor_id", "sensor"],
  ["crop_batch", "room_id", "room"],
  ["setpoints", "room_id", "room"],
  ["actuator_events", "device_id", "device"],
  ["sensor", "kind", "sensor_kind"],
  ["room_band", "room_id", "room"],
  ["room_band", "kind", "sensor_kind"],
];

// [table, columns] that must carry a unique index
const UNIQUE_KEYS: [string, string][] = [
  ["facility", "name"],
  ["room", "facility_id,name"],
  ["rack", "room_id,name"],
  ["device", "name"],
  ["device", "node_id"],
  ["sensor", "name"],
  ["sensor", "device_id,channel"],
  ["measurement", "sensor_id,time"],
  ["room_band", "room_id,kind"],
];

const NOT_NULL: [string, string][] = [
  ["measurement", "time"],
  ["measurement", "sensor_id"],
  ["measurement", "value"],
  ["sensor", "device_id"],
  ["device", "room_id"],
  ["room", "facility_id"],
  ["rack", "room_id"],
  ["zone", "facility_id"],
];

const AGG_COLUMNS = ["bucket", "sensor_id", "min_value", "max_value", "avg_value", "sample_count"];

export async function verifySchema(db: Queryable): Promise<VerifyReport> {
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail?: string) =>
    checks.push(detail === undefined ? { name, ok } : { name, ok, detail });

  const ext = await db.query<{ extversion: string }>(
    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
  );
  const version = ext.rows[0]?.extversion ?? null;
  check("extension timescaledb", version !== null, version ?? "not installed in this database");
  const ed = await edition(db);

  const rel = await db.query<{ relname: string; relkind: string }>(
    `SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema()`,
  );
  const kinds = new Map(rel.rows.map((r) => [r.relname, r.relkind]));
  for (const t of TABLES) check(`table ${t}`, kinds.get(t) === "r", kinds.has(t) ? undefined : "missing");

  const fks = await db.query<{ tbl: string; cols: string; ref: string }>(
    `SELECT c.conrelid::regclass::text AS tbl, c.confrelid::regclass::text AS ref,
            (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(att, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att) AS cols
     FROM pg_constraint c WHERE c.contype = 'f'`,
  );
  for (const [t, cols, ref] of FOREIGN_KEYS) {
    check(
      `foreign key ${t}(${cols}) -> ${ref}`,
      fks.rows.some((r) => r.tbl === t && r.cols === cols && r.ref === ref),
    );
  }

  const idx = await db.query<{ tbl: string; idx: string; uniq: boolean; cols: string }>(
    `SELECT i.indrelid::regclass::text AS tbl, i.indexrelid::regclass::text AS idx, i.indisunique AS uniq,
            (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY k(att, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att) AS cols
     FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema()`,
  );
  for (const [t, cols] of UNIQUE_KEYS) {
    check(
      `unique key ${t}(${cols})`,
      idx.rows.some((r) => r.tbl === t && r.uniq && r.cols === cols),
    );
  }
  const desc = await db.query<{ ok: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'measurement'
       AND indexdef LIKE '%(sensor_id, "time" DESC)%') AS ok`,
  );
  check("index measurement(sensor_id, time DESC)", desc.rows[0]?.ok === true);

  const nn = await db.query<{ tbl: string; col: string }>(
    `SELECT c.relname AS tbl, a.attname AS col FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND a.attnotnull AND a.attnum > 0 AND NOT a.attisdropped`,
  );
  for (const [t, col] of NOT_NULL)
    check(
      `not null ${t}.${col}`,
      nn.rows.some((r) => r.tbl === t && r.col === col),
    );

  const features: Record<string, string> = {};
  if (version !== null) {
    const ht = await db.query<{ n: number; compression_enabled: boolean }>(
      `SELECT count(*)::int AS n, bool_or(compression_enabled) AS compression_enabled
       FROM timescaledb_information.hypertables WHERE hypertable_name = 'measurement'`,
    );
    const isHyper = (ht.rows[0]?.n ?? 0) > 0;
    check("hypertable measurement", isHyper);
    const dim = await db.query<{ interval: string | null }>(
      `SELECT time_interval::text AS interval FROM timescaledb_information.dimensions
       WHERE hypertable_name = 'measurement' AND column_name = 'time'`,
    );
    features.hypertable = isHyper ? `active (time, chunk interval ${dim.rows[0]?.interval ?? "?"})` : "missing";

    const cols = await db.query<{ tbl: string; cols: string }>(
      `SELECT c.relname AS tbl, string_agg(a.attname, ',' ORDER BY a.attnum) AS cols
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = current_schema() AND c.relname IN ('measurement_hourly', 'measurement_daily')
         AND a.attnum > 0 AND NOT a.attisdropped GROUP BY c.relname`,
    );
    const jobs = await db.query<{ proc: string; target: string | null; config: Record<string, unknown> | null }>(
      `SELECT j.proc_name AS proc, coalesce(ca.view_name, j.hypertable_name) AS target, j.config
       FROM timescaledb_information.jobs j
       LEFT JOIN timescaledb_information.continuous_aggregates ca
         ON (j.hypertable_schema, j.hypertable_name) IN ((ca.view_schema, ca.view_name),
            (ca.materialization_hypertable_schema, ca.materialization_hypertable_name))`,
    );
    // the zone of the daily buckets, and the facilities' (one zone per database)
    const zone = await db.query<{ daily: string | null; facilities: string[] | null; keep: string | null }>(
      `SELECT (SELECT value FROM cea_setting WHERE key = 'daily_timezone') AS daily,
              (SELECT array_agg(DISTINCT timezone ORDER BY timezone) FROM facility) AS facilities,
              (SELECT value FROM cea_setting WHERE key = 'raw_retention') AS keep`,
    );
    const daily = zone.rows[0]?.daily ?? null;
    const facilityZones = zone.rows[0]?.facilities ?? [];
    const keep = zone.rows[0]?.keep ?? null;
    check("daily buckets' time zone set (cea_setting daily_timezone)", daily !== null, daily ?? "missing");
    check(
      "daily buckets in the facility's time zone",
      facilityZones.every((z) => z === daily),
      facilityZones.length
        ? `facility ${facilityZones.join(", ")}, daily buckets ${daily}: run cea site sync`
        : undefined,
    );
    features.daily_buckets = `local days of ${daily ?? "?"}; hourly buckets in UTC`;
    const job = (proc: string, target: string) => jobs.rows.find((j) => j.proc === proc && j.target === target);

    if (ed === "community") {
      const caggs = await db.query<{ view_name: string; materialized_only: boolean; definition: string }>(
        `SELECT view_name, materialized_only, view_definition AS definition
         FROM timescaledb_information.continuous_aggregates WHERE view_schema = current_schema()`,
      );
      // policies keep clear of raw-data retention: a refresh over dropped chunks erases aggregate rows
      const horizon = await db.query<{ start_offset: string | null }>(
        "SELECT ($1::interval - INTERVAL '2 days')::text AS start_offset",
        [keep],
      );
      const wantStart = horizon.rows[0]?.start_offset ?? null;
      for (const kind of ["hourly", "daily"]) {
        const name = `measurement_${kind}`;
        const cagg = caggs.rows.find((c) => c.view_name === name);
        check(`continuous aggregate ${name}`, cagg !== undefined);
        check(`real-time aggregation on ${name}`, cagg?.materialized_only === false);
        check(
          `${name} leaves out readings with status out_of_range`,
          cagg?.definition.includes("'out_of_range'") === true,
        );
        if (kind === "daily" && daily !== null)
          check(
            `${name} buckets in ${daily}`,
            cagg?.definition.includes(`'${daily.replace(/'/g, "''")}'::text`) === true,
            "re-created by cea site sync when the facility's zone changes",
          );
        const policy = job("policy_refresh_continuous_aggregate", name);
        check(`refresh policy ${name}`, policy !== undefined);
        const start = (policy?.config?.start_offset as string | null | undefined) ?? null;
        const same = await db.query<{ same: boolean }>(
          "SELECT $1::interval IS NOT DISTINCT FROM $2::interval AS same",
          [start, wantStart],
        );
        check(
          `refresh policy ${name} stays clear of raw-data retention`,
          policy !== undefined && same.rows[0]?.same === true,
          `start_offset ${start ?? "NULL"}, expected ${wantStart ?? "NULL"} for retention ${keep ?? "off"}`,
        );
        check(`refresh policy ${name} refreshes oldest buckets first`, policy?.config?.refresh_newest_first === false);
      }
      const comp = job("policy_compression", "measurement");
      check("compression on measurement", ht.rows[0]?.compression_enabled === true);
      check("compression policy measurement (90 days)", comp?.config?.compress_after === "90 days");
      features.compression = comp ? `active (after ${String(comp.config?.compress_after)})` : "missing";
      features.continuous_aggregates = caggs.rows.length >= 2 ? "active (real-time on)" : "missing";
      const ret = job("policy_retention", "measurement");
      features.retention = ret ? `policy (drop after ${String(ret.config?.drop_after)})` : "off";
    } else {
      for (const kind of ["hourly", "daily"]) {
        const name = `measurement_${kind}`;
        check(`aggregate table ${name}`, kinds.get(name) === "r");
      }
      const fn = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_proc WHERE proname IN ('cea_refresh_aggregates', 'cea_apply_retention')",
      );
      check("functions cea_refresh_aggregates, cea_apply_retention", fn.rows[0]?.n === 2);
      features.compression = "unavailable (Apache edition)";
      features.continuous_aggregates = "unavailable (Apache edition): tables kept current by cea_refresh_aggregates()";
      const keep = await db.query<{ value: string | null }>(
        "SELECT value FROM cea_setting WHERE key = 'raw_retention'",
      );
      features.retention = keep.rows[0]?.value ? `by the platform (drop after ${keep.rows[0].value})` : "off";
    }
    for (const kind of ["hourly", "daily"]) {
      const name = `measurement_${kind}`;
      const have = cols.rows.find((c) => c.tbl === name)?.cols;
      check(`${name} columns`, have === AGG_COLUMNS.join(","), have ?? "missing");
    }
  }

  const logins = await roleLogins(db);
  for (const role of Object.values(ROLES))
    check(`role ${role}`, logins.has(role), logins.has(role) ? undefined : "missing");
  for (const f of await checkPrivileges(db)) {
    const name = `privilege: ${f.role} ${f.granted ? "may" : "may not"} ${f.privilege} ${f.object}`;
    const ok = f.actual === f.granted;
    if (f.actual === null) check(name, false, "role or object missing");
    else if (!ok && !f.granted) checks.push({ name, ok, problem: "wrong" });
    else check(name, ok);
  }
  const canLogin = [...logins].filter(([, login]) => login).map(([r]) => r);
  features.roles = `${logins.size} of ${Object.values(ROLES).length} (${canLogin.length ? `login: ${canLogin.join(", ")}` : "none may log in yet"})`;

  const failing = version !== null ? await failingJobs(db) : [];

  return {
    ok: checks.every((c) => c.ok),
    edition: ed,
    timescaledb_version: version,
    features,
    checks,
    failing_jobs: failing,
  };
}

export function formatVerifyReport(r: VerifyReport): string {
  const out = [
    `TimescaleDB ${r.timescaledb_version ?? "(missing)"}, ${r.edition === "community" ? "Community" : "Apache"} edition`,
  ];
  for (const [k, v] of Object.entries(r.features)) out.push(`  ${k.padEnd(22)} ${v}`);
  for (const c of r.checks)
    if (!c.ok)
      out.push(`  ${c.problem === "wrong" ? "WRONG  " : "MISSING"}  ${c.name}${c.detail ? ` (${c.detail})` : ""}`);
  for (const j of r.failing_jobs) for (const line of formatFailingJob(j)) out.push(`  ${line}`);
  const bad = r.checks.filter((c) => !c.ok).length;
  out.push(
    bad === 0
      ? `schema OK: ${r.checks.length} checks passed`
      : `schema NOT OK: ${bad} of ${r.checks.length} checks failed`,
  );
  return out.join("\n");
}
