import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

// The one write path of measurements, shared by the can-worker, the HTTP API and
// the tools: COPY into a session-local staging table, then one INSERT … ON
// CONFLICT DO NOTHING on the idempotency key (sensor_id, time). The same
// statement queues the touched hour buckets for the Apache-edition aggregates,
// so the mark commits with the rows (see cea_refresh_aggregates()).
//
// Contract: call inside a transaction the caller owns (BEGIN … COMMIT); the
// staging table empties itself at commit. Returns the number of new rows.

export interface MeasurementRow {
  /** ISO 8601 with offset, or a Date. Microseconds survive only as a string. */
  time: string | Date;
  sensor_id: number;
  value: number;
  status?: string | null;
}

const STAGING = "cea_measurement_staging";

const ENSURE_STAGING = `CREATE TEMP TABLE IF NOT EXISTS ${STAGING} (
  time timestamptz NOT NULL, sensor_id integer NOT NULL, value double precision NOT NULL, status text
) ON COMMIT DELETE ROWS`;

const MERGE = `WITH ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  SELECT time, sensor_id, value, status FROM ${STAGING}
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING sensor_id, time
), marked AS (
  INSERT INTO measurement_agg_pending (sensor_id, bucket)
  SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM ins
  WHERE cea_timescale_edition() = 'apache'
)
SELECT count(*)::int AS inserted FROM ins`;

function escapeText(s: string): string {
  return s.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r"));
}

/** One COPY text line per row. Numbers print in JS's shortest round-trip form, so float8 values stay exact. */
export function toCopyText(rows: readonly MeasurementRow[]): string {
  let out = "";
  for (const r of rows) {
    const t = typeof r.time === "string" ? r.time : r.time.toISOString();
    const st = r.status == null ? "\\N" : escapeText(r.status);
    out += `${t}\t${r.sensor_id}\t${r.value}\t${st}\n`;
  }
  return out;
}

/**
 * Create the session's staging table if it is not there. Run on every write,
 * not remembered per connection: a table created inside a transaction that was
 * then rolled back is gone again, and a remembered "created" would break the
 * next write on that connection. The check costs one short round trip.
 */
export async function ensureStaging(client: pg.ClientBase): Promise<void> {
  await client.query(ENSURE_STAGING);
}

/** COPY rows (or pre-encoded COPY text) into the staging table. */
export async function copyToStaging(client: pg.ClientBase, data: readonly MeasurementRow[] | string): Promise<void> {
  await ensureStaging(client);
  const text = typeof data === "string" ? data : toCopyText(data);
  if (text.length === 0) return;
  const stream = client.query(copyFrom(`COPY ${STAGING} (time, sensor_id, value, status) FROM STDIN`));
  await pipeline(Readable.from([text]), stream);
}

/** Move the staged rows into the hypertable; duplicates of the key write nothing. */
export async function mergeStaging(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ inserted: number }>(MERGE);
  return rows[0]?.inserted ?? 0;
}

/** Rows staged in this transaction whose key already holds a different value or status. */
export async function stagedConflicts(
  client: pg.ClientBase,
): Promise<{ sensor_id: number; time: string; value: number; status: string | null }[]> {
  const { rows } = await client.query(
    `SELECT m.sensor_id, to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time, m.value, m.status
     FROM ${STAGING} s JOIN measurement m ON m.sensor_id = s.sensor_id AND m.time = s.time
     WHERE m.value IS DISTINCT FROM s.value OR m.status IS DISTINCT FROM s.status`,
  );
  return rows;
}

/** COPY + merge inside one transaction of the caller's. */
export async function writeMeasurements(
  client: pg.ClientBase,
  data: readonly MeasurementRow[] | string,
): Promise<number> {
  await copyToStaging(client, data);
  return mergeStaging(client);
}
