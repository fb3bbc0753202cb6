import type { Queryable } from "./pool.js";

// TimescaleDB's background jobs whose last run failed: the error they ended
// with, and whether their work is nevertheless being done. With PostgreSQL
// 15.20 every job ends with "cannot drop portal "" while it is being set up"
// (24000) after its work has committed, so "failed" alone says nothing about
// the data: each kind of job is judged by its effect instead.

export interface FailingJob {
  job_id: number;
  proc: string;
  /** The continuous aggregate or hypertable the job works on. */
  target: string | null;
  last_run: string | null;
  total_failures: number;
  /** The last run's error message; null when this role may not read it (only the job's or database's owner may). */
  error: string | null;
  sqlstate: string | null;
  /** true: the work is done anyway; false: it is not; null: cannot tell. */
  work_done: boolean | null;
  /** What was checked, in words. */
  work: string;
}

interface JobRow {
  job_id: number;
  proc: string;
  target: string | null;
  config: Record<string, unknown> | null;
  last_run: string | null;
  total_failures: string;
}

const iso = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"')`;

const FAILING = `SELECT s.job_id, j.proc_name AS proc, coalesce(ca.view_name, j.hypertable_name)::text AS target,
       j.config, s.last_run_started_at::text AS last_run, s.total_failures::text
FROM timescaledb_information.job_stats s
JOIN timescaledb_information.jobs j USING (job_id)
-- a policy names its aggregate by the view (2.28) or by the materialization hypertable (earlier)
LEFT JOIN timescaledb_information.continuous_aggregates ca
  ON (j.hypertable_schema, j.hypertable_name) IN ((ca.view_schema, ca.view_name),
                                                  (ca.materialization_hypertable_schema, ca.materialization_hypertable_name))
WHERE s.last_run_status = 'Failed'
ORDER BY s.job_id`;

// job_errors shows only the jobs of roles the caller is a member of (or all, to the database owner)
const LAST_ERRORS = `SELECT DISTINCT ON (job_id) job_id, sqlerrcode, err_message
FROM timescaledb_information.job_errors WHERE job_id = ANY($1::int[])
ORDER BY job_id, finish_time DESC NULLS LAST`;

// The end of the last complete bucket the policy's last run had to materialize,
// and how far the aggregate is materialized; `behind` = raw rows in between.
const REFRESH_WORK = `WITH w AS (
  SELECT CASE $1::text WHEN 'measurement_daily'
              THEN time_bucket(INTERVAL '1 day', $2::timestamptz - $3::interval, cea_daily_timezone())
              ELSE time_bucket(INTERVAL '1 hour', $2::timestamptz - $3::interval) END AS due,
         _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark($4::int)) AS done
)
SELECT ${iso("w.due")} AS due,
       -- an aggregate with nothing materialized has its watermark at the start of time
       CASE WHEN w.done > '1900-01-01' THEN ${iso("w.done")} END AS done, w.done >= w.due AS reached,
       EXISTS (SELECT 1 FROM measurement m WHERE m.time >= w.done AND m.time < w.due
               AND m.status IS DISTINCT FROM 'out_of_range') AS behind
FROM w`;

const CHUNKS_LEFT = `SELECT count(*)::int AS n FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = 'measurement'
  AND range_end < $1::timestamptz - $2::interval AND ($3 OR NOT is_compressed)`;

const HISTORY_LEFT = `SELECT count(*)::int AS n FROM timescaledb_information.job_history
WHERE finish_time < $1::timestamptz - $2::interval`;

const OWNER = `SELECT pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()),
                      'MEMBER') AS owner`;

async function judge(db: Queryable, j: JobRow, owner: boolean): Promise<Pick<FailingJob, "work_done" | "work">> {
  const cfg = j.config ?? {};
  const str = (k: string) => (typeof cfg[k] === "string" ? (cfg[k] as string) : null);
  if (!j.last_run) return { work_done: null, work: "it has not run yet" };
  switch (j.proc) {
    case "policy_refresh_continuous_aggregate": {
      if (j.target !== "measurement_hourly" && j.target !== "measurement_daily")
        return { work_done: null, work: `${j.target ?? "?"} is not one of the platform's aggregates` };
      const { rows } = await db.query<{ due: string; done: string | null; reached: boolean; behind: boolean }>(
        REFRESH_WORK,
        [j.target, j.last_run, str("end_offset") ?? "0", Number(cfg.mat_hypertable_id)],
      );
      const r = rows[0];
      if (!r) return { work_done: null, work: "its watermark could not be read" };
      const upTo = r.done ? `materialized up to ${r.done}` : "materialized nowhere yet";
      if (r.reached || !r.behind)
        return {
          work_done: true,
          work: `${j.target} is ${upTo}${r.reached ? `, as far as its last run had to go (${r.due})` : `; no readings between there and ${r.due}, where its last run had to go`}`,
        };
      return {
        work_done: false,
        work: `${j.target} is ${r.done ? `materialized only up to ${r.done}` : "materialized nowhere yet"}, its last run had to go to ${r.due}, and the readings in between wait (real-time aggregation still shows them)`,
      };
    }
    case "policy_compression":
    case "policy_retention": {
      const compress = j.proc === "policy_compression";
      const after = str(compress ? "compress_after" : "drop_after");
      if (!after) return { work_done: null, work: "its configuration names no interval" };
      const { rows } = await db.query<{ n: number }>(CHUNKS_LEFT, [j.last_run, after, !compress]);
      const n = rows[0]?.n ?? 0;
      const what = compress ? "not compressed" : "not dropped";
      return n === 0
        ? {
            work_done: true,
            work: `every chunk older than ${after} at its last run is ${compress ? "compressed" : "dropped"}`,
          }
        : { work_done: false, work: `${n} chunk(s) older than ${after} at its last run are ${what}` };
    }
    case "policy_job_stat_history_retention": {
      const after = str("drop_after");
      if (!after) return { work_done: null, work: "its configuration names no interval" };
      if (!owner) return { work_done: null, work: "the job history is visible to the database owner only" };
      const { rows } = await db.query<{ n: number }>(HISTORY_LEFT, [j.last_run, after]);
      const n = rows[0]?.n ?? 0;
      return n === 0
        ? { work_done: true, work: `no job history older than ${after} at its last run is left` }
        : { work_done: false, work: `${n} job history row(s) older than ${after} at its last run are left` };
    }
    default:
      return { work_done: null, work: "not a job of the platform's: its effect is not checked" };
  }
}

/** Every job whose last run failed, with its last error and whether its work is done anyway. */
export async function failingJobs(db: Queryable): Promise<FailingJob[]> {
  const { rows } = await db.query<JobRow>(FAILING);
  if (rows.length === 0) return [];
  const errors = new Map<number, { sqlerrcode: string | null; err_message: string | null }>();
  const { rows: has } = await db.query<{ ok: boolean }>(
    "SELECT to_regclass('timescaledb_information.job_errors') IS NOT NULL AS ok",
  );
  if (has[0]?.ok) {
    const e = await db.query<{ job_id: number; sqlerrcode: string | null; err_message: string | null }>(LAST_ERRORS, [
      rows.map((r) => r.job_id),
    ]);
    for (const r of e.rows) errors.set(r.job_id, r);
  }
  const owner = (await db.query<{ owner: boolean }>(OWNER)).rows[0]?.owner === true;
  const out: FailingJob[] = [];
  for (const j of rows) {
    let verdict: Pick<FailingJob, "work_done" | "work">;
    try {
      verdict = await judge(db, j, owner);
    } catch (err) {
      verdict = { work_done: null, work: `its effect could not be checked: ${(err as Error).message}` };
    }
    out.push({
      job_id: j.job_id,
      proc: j.proc,
      target: j.target,
      last_run: j.last_run,
      total_failures: Number(j.total_failures),
      error: errors.get(j.job_id)?.err_message ?? null,
      sqlstate: errors.get(j.job_id)?.sqlerrcode ?? null,
      ...verdict,
    });
  }
  return out;
}

/** The report lines of one failing job. */
export function formatFailingJob(j: FailingJob): string[] {
  const head = `job ${j.job_id} ${j.proc}${j.target ? ` (${j.target})` : ""}: last run failed (${j.last_run}; ${j.total_failures} failures)`;
  const why = j.error
    ? `: ${j.error}${j.sqlstate ? ` [${j.sqlstate}]` : ""}`
    : " (the error message is visible to the job's owner only)";
  const known =
    j.sqlstate === "24000" && j.error?.includes("cannot drop portal")
      ? "\n           (a TimescaleDB problem with PostgreSQL 15.20: the job ends with this error after its work has committed)"
      : "";
  const work =
    j.work_done === true
      ? `its work is nevertheless done: ${j.work}`
      : j.work_done === false
        ? `its work is NOT being done: ${j.work}`
        : `whether its work is done cannot be told: ${j.work}`;
  return [`${j.work_done === false ? "PROBLEM" : "WARNING"}  ${head}${why}${known}`, `         ${work}`];
}
