import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { encodeBinaryCopy, hourBuckets } from "./copy-binary.js";
import type { Queryable } from "./pool.js";
import type { ReadingColumns } from "./readings.js";

// The module that writes measurements, for the can-worker, the HTTP API and
// the legacy migration (db/migrate, its set-based shape: insertFromSelect).
// Every writer here inserts on the idempotency key (sensor_id, time) and queues
// the touched hour buckets for the Apache-edition aggregates in the same
// statement or transaction, so the mark commits with the rows (see
// cea_refresh_aggregates()). What a caller chooses is what it writes and how a
// key that is already stored is treated:
//   - writeMeasurements (rows or COPY text; the API's batch route): staging +
//     INSERT … ON CONFLICT DO NOTHING; returns the new rows, the caller looks
//     for stored keys with other values itself;
//   - insertGroup (the API's group commit): one statement, the first of each
//     key wins, an outcome per input;
//   - writeReadings (reading columns; the can-worker): binary COPY straight
//     into the table, the staging path when a key is already stored;
//   - insertFromSelect (rows a statement computes inside the database; the
//     legacy migration): a stored key is kept; the aggregate queue is the
//     caller's choice (the migration recomputes its whole range once instead).
//
// Contract: call inside a transaction the caller owns (BEGIN … COMMIT) unless
// said otherwise; the staging table empties itself at commit.

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

/**
 * The aggregate queue of rows a statement inserted: appended as a CTE after an
 * `ins AS (INSERT … RETURNING sensor_id, time …)`, so the mark commits with the
 * rows (Apache edition; cea_refresh_aggregates() takes the marks).
 */
const QUEUE_INSERTED = `marked AS (
  INSERT INTO measurement_agg_pending (sensor_id, bucket)
  SELECT DISTINCT sensor_id, time_bucket(INTERVAL '1 hour', time) FROM ins
  WHERE cea_timescale_edition() = 'apache'
)`;

const MERGE = `WITH ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  SELECT time, sensor_id, value, status FROM ${STAGING}
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING sensor_id, time
), ${QUEUE_INSERTED}
SELECT count(*)::int AS inserted FROM ins`;

/**
 * The set-based shape: the text of a CTE `ins` (to follow other CTEs in a
 * WITH) that inserts the rows of `select` (columns time, sensor_id, value,
 * status) and returns sensor_id, time of each new row; a key already stored is
 * kept. With queueAggregates the CTE `marked` queues their hour buckets too.
 */
export function insertFromSelect(select: string, how: { conflict: "keep-stored"; queueAggregates: boolean }): string {
  return `ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  ${select}
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING sensor_id, time
)${how.queueAggregates ? `, ${QUEUE_INSERTED}` : ""}`;
}

const ISO_UTC = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

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

/** COPY + merge inside one transaction of the caller's. */
export async function writeMeasurements(
  client: pg.ClientBase,
  data: readonly MeasurementRow[] | string,
): Promise<number> {
  await copyToStaging(client, data);
  return mergeStaging(client);
}

// ---- the API's group commit ----------------------------------------------------

export interface StoredMeasurement {
  time: string;
  sensor_id: number;
  value: number;
  status: string | null;
}

// A group of readings in one autocommitted statement (the API's group commit):
// the first occurrence of each key (sensor_id, time) in the group is inserted
// unless the key is taken; the same statement queues the touched hour buckets
// for the Apache-edition aggregates (as every writer here does), so the mark
// commits with the rows. One answer row per input, in input order: the row
// this statement stored under the input's key (by this input or by an earlier
// one of the group) and whether this input created it. A key that was already
// taken comes back without a row: the stored row is read afterwards, by key,
// where the time is a constant and only its chunk is searched (a join here
// would probe every chunk's index for every input, new rows included). Keys go
// in in index order, so two groups sharing keys wait on each other in the same
// order instead of deadlocking.
const INSERT_GROUP = `WITH input AS (
  SELECT u.time, u.sensor_id, u.value, u.status, u.ord,
         min(u.ord) OVER (PARTITION BY u.sensor_id, u.time) AS first_ord
  FROM unnest($1::timestamptz[], $2::int[], $3::float8[], $4::text[])
       WITH ORDINALITY AS u(time, sensor_id, value, status, ord)
), ins AS (
  INSERT INTO measurement (time, sensor_id, value, status)
  SELECT time, sensor_id, value, status FROM input WHERE ord = first_ord
  ORDER BY sensor_id, time
  ON CONFLICT (sensor_id, time) DO NOTHING
  RETURNING time, sensor_id, value, status
), ${QUEUE_INSERTED}
SELECT i.ord::int AS ord, i.ord = i.first_ord AS inserted,
       ${ISO_UTC("x.time")} AS time, x.sensor_id, x.value, x.status
FROM input i JOIN ins x ON x.sensor_id = i.sensor_id AND x.time = i.time`;

export type GroupOutcome = (StoredMeasurement & { inserted: boolean }) | undefined;

/**
 * Insert a group of readings in one statement (one transaction, one WAL
 * flush). Returns, per input in order, the row the statement stored under its
 * key and whether that input created it; undefined when the key was already
 * taken (the caller reads the stored row with getMeasurement). A row the
 * database rejects fails the whole statement: the caller isolates.
 */
export async function insertGroup(
  db: Queryable,
  rows: readonly { time: string; sensor_id: number; value: number; status: string | null }[],
): Promise<GroupOutcome[]> {
  const n = rows.length;
  const times = new Array<string>(n);
  const sensors = new Array<number>(n);
  const values = new Array<number>(n);
  const statuses = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    times[i] = r.time;
    sensors[i] = r.sensor_id;
    values[i] = r.value;
    statuses[i] = r.status;
  }
  const res = await db.query<StoredMeasurement & { ord: number; inserted: boolean }>({
    name: "cea_api_insert_group",
    text: INSERT_GROUP,
    values: [times, sensors, values, statuses],
  });
  const out: GroupOutcome[] = new Array(n).fill(undefined);
  for (const r of res.rows) {
    out[r.ord - 1] = { time: r.time, sensor_id: r.sensor_id, value: r.value, status: r.status, inserted: r.inserted };
  }
  return out;
}

// ---- the can-worker's fast path ----------------------------------------------
//
// A batch from the stream is nearly always new: COPY it (binary) straight into
// the hypertable inside a SAVEPOINT. A redelivered entry (or the same key twice
// in the batch) makes that COPY fail with a unique violation on (sensor_id,
// time); then the savepoint is rolled back and the same rows go through the
// staging + ON CONFLICT path above, so a redelivery still writes nothing new.
// The hour buckets of the rows are queued with one INSERT in the same
// transaction (Apache edition only).

const UNIQUE_VIOLATION = "23505";
const FAST_SAVEPOINT = "cea_fast";
const COPY_DIRECT = "COPY measurement (time, sensor_id, value, status) FROM STDIN (FORMAT binary)";
const COPY_STAGING = `COPY ${STAGING} (time, sensor_id, value, status) FROM STDIN (FORMAT binary)`;
const QUEUE_BUCKETS = `INSERT INTO measurement_agg_pending (sensor_id, bucket)
SELECT s, to_timestamp(h::bigint * 3600) FROM unnest($1::int[], $2::int[]) AS u(s, h)`;

/** True when writers must queue aggregate buckets (Apache edition). Ask once at start-up. */
export async function queuesAggregates(db: Pick<pg.ClientBase, "query">): Promise<boolean> {
  const { rows } = await db.query<{ apache: boolean }>("SELECT cea_timescale_edition() = 'apache' AS apache");
  return rows[0]?.apache === true;
}

export interface ReadingsResult {
  inserted: number;
  /** False when the rows held a key already stored and took the staging + ON CONFLICT path. */
  fast: boolean;
}

async function copyBinary(client: pg.ClientBase, statement: string, data: Uint8Array): Promise<number> {
  const stream = client.query(copyFrom(statement));
  await pipeline(Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]), stream);
  return stream.rowCount;
}

/** The staging + ON CONFLICT path for reading columns; the merge queues the buckets of the new rows itself. */
export async function writeReadingsStaged(client: pg.ClientBase, cols: ReadingColumns): Promise<number> {
  if (cols.count === 0) return 0;
  await ensureStaging(client);
  await copyBinary(client, COPY_STAGING, encodeBinaryCopy(cols));
  return mergeStaging(client);
}

/**
 * Write reading columns inside a transaction of the caller's (BEGIN … COMMIT):
 * direct binary COPY, or on a unique violation the idempotent staging path.
 * `queueBuckets`: the result of queuesAggregates().
 */
export async function writeReadings(
  client: pg.ClientBase,
  cols: ReadingColumns,
  queueBuckets: boolean,
): Promise<ReadingsResult> {
  if (cols.count === 0) return { inserted: 0, fast: true };
  const data = encodeBinaryCopy(cols);
  await client.query(`SAVEPOINT ${FAST_SAVEPOINT}`);
  let inserted: number;
  try {
    inserted = await copyBinary(client, COPY_DIRECT, data);
    await client.query(`RELEASE SAVEPOINT ${FAST_SAVEPOINT}`);
  } catch (err) {
    if ((err as { code?: unknown }).code !== UNIQUE_VIOLATION) throw err;
    await client.query(`ROLLBACK TO SAVEPOINT ${FAST_SAVEPOINT}`);
    await client.query(`RELEASE SAVEPOINT ${FAST_SAVEPOINT}`);
    return { inserted: await writeReadingsStaged(client, cols), fast: false };
  }
  if (queueBuckets) {
    const b = hourBuckets(cols);
    await client.query(QUEUE_BUCKETS, [b.sensors, b.hours]);
  }
  return { inserted, fast: true };
}

/**
 * Which of these (time, sensor) keys are stored: one row of an entry is enough
 * to know the entry was committed (its rows commit together).
 */
export async function storedKeys(
  db: Pick<pg.ClientBase, "query">,
  keys: readonly { sensor: number; timeUs: number }[],
): Promise<boolean[]> {
  if (keys.length === 0) return [];
  const { rows } = await db.query<{ i: number }>(
    `SELECT k.i FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS k(s, us, i)
     WHERE EXISTS (SELECT 1 FROM measurement m
                   WHERE m.sensor_id = k.s AND m.time = 'epoch'::timestamptz + k.us * INTERVAL '1 microsecond')`,
    [keys.map((k) => k.sensor), keys.map((k) => k.timeUs)],
  );
  const found = new Set(rows.map((r) => Number(r.i)));
  return keys.map((_, i) => found.has(i + 1));
}
