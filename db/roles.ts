import type { Queryable } from "./pool.js";

// The database roles of db/migrations/0002_roles.sql, by the kind of client that
// connects with each, and what each must and must not be able to do. The
// migration grants; `cea schema verify` checks the result against this list.

export const ROLES = {
  worker: "cea_writer",
  api: "cea_api",
  reader: "cea_reader",
  automation: "cea_automation",
} as const;

export type ServiceRole = keyof typeof ROLES;
export type RoleName = (typeof ROLES)[ServiceRole];

const ALL = Object.values(ROLES);
const READ = [
  "facility",
  "zone",
  "room",
  "rack",
  "device",
  "sensor",
  "measurement",
  "measurement_hourly",
  "measurement_daily",
  "crop_batch",
  "setpoints",
  "actuator_events",
  "cea_setting",
];

export interface Privilege {
  role: RoleName;
  /** A relation, or a function signature when `privilege` is EXECUTE. */
  object: string;
  privilege: "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "EXECUTE";
  granted: boolean;
}

const p = (roles: readonly RoleName[], objects: string[], privilege: Privilege["privilege"], granted: boolean) =>
  roles.flatMap((role) => objects.map((object) => ({ role, object, privilege, granted })));

export const PRIVILEGES: readonly Privilege[] = [
  ...p(ALL, READ, "SELECT", true),
  ...p([ROLES.worker, ROLES.api], ["measurement", "measurement_agg_pending"], "INSERT", true),
  ...p([ROLES.reader, ROLES.automation], ["measurement", "measurement_agg_pending"], "INSERT", false),
  // a stored reading is never changed or removed by a service (retention runs as the owner)
  ...p(ALL, ["measurement"], "UPDATE", false),
  ...p(ALL, ["measurement", "measurement_hourly", "measurement_daily"], "DELETE", false),
  ...p(ALL, ["measurement"], "TRUNCATE", false),
  ...p(ALL, ["sensor", "device", "room", "facility", "cea_setting"], "UPDATE", false),
  // the automation service records its decisions; setpoints are written through the API
  ...p([ROLES.automation], ["actuator_events"], "INSERT", true),
  ...p([ROLES.worker, ROLES.api, ROLES.reader], ["actuator_events"], "INSERT", false),
  ...p([ROLES.api], ["setpoints"], "INSERT", true),
  ...p([ROLES.worker, ROLES.reader, ROLES.automation], ["setpoints"], "INSERT", false),
  ...p([ROLES.worker], ["cea_refresh_aggregates()", "cea_apply_retention()"], "EXECUTE", true),
  ...p(
    [ROLES.api, ROLES.reader, ROLES.automation],
    ["cea_refresh_aggregates()", "cea_apply_retention()"],
    "EXECUTE",
    false,
  ),
];

export interface PrivilegeFinding extends Privilege {
  /** What the database says: true/false, or null when the role or object does not exist. */
  actual: boolean | null;
}

/** The roles that exist, and whether each may log in. */
export async function roleLogins(db: Queryable): Promise<Map<string, boolean>> {
  const { rows } = await db.query<{ rolname: string; rolcanlogin: boolean }>(
    "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY($1::text[])",
    [Object.values(ROLES)],
  );
  return new Map(rows.map((r) => [r.rolname, r.rolcanlogin]));
}

/** Every expected privilege with what the database actually grants (one query). */
export async function checkPrivileges(db: Queryable): Promise<PrivilegeFinding[]> {
  const { rows } = await db.query<{ actual: boolean | null }>(
    `SELECT CASE
              WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = x.role) THEN NULL
              WHEN x.privilege = 'EXECUTE' THEN
                CASE WHEN to_regprocedure(x.object) IS NULL THEN NULL
                     ELSE has_function_privilege(x.role, to_regprocedure(x.object), 'EXECUTE') END
              WHEN to_regclass(x.object) IS NULL THEN NULL
              ELSE has_table_privilege(x.role, to_regclass(x.object), x.privilege)
            END AS actual
     FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (role text, object text, privilege text))
          WITH ORDINALITY AS x(role, object, privilege, ord)
     ORDER BY x.ord`,
    [JSON.stringify(PRIVILEGES)],
  );
  return PRIVILEGES.map((priv, i) => ({ ...priv, actual: rows[i]?.actual ?? null }));
}
