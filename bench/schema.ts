import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { writeMeasurements } from "../db/measurements.js";
import { applySchema, edition, rebuildAggregates } from "../db/schema.js";
import { loadSite, syncSite } from "../db/site.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { type Bench, type BenchRow, percentile } from "./lib.js";

// Issue 2's storage benchmark. Three ways of writing the same generated rows
// into the hypertable, each into its own fresh database:
//   copy      raw COPY straight into measurement: the ceiling of every ingest figure
//   platform  the platform's write path (COPY to staging + INSERT … ON CONFLICT DO NOTHING)
//   insert    batched INSERT … ON CONFLICT DO NOTHING (1 000 rows per statement)
// and a 30-day hourly history query for one sensor from raw rows against the
// same answer from measurement_hourly.

const DAY_S = 86_400;
const START = Date.parse("2026-01-01T00:00:00Z");

interface Dataset {
  sensors: number[];
  seconds: number;
  rows: number;
}

/** Readings in time order, every sensor once per second, as COPY text chunks. */
function* copyChunks(ds: Dataset, from = 0, to = ds.seconds): Generator<string> {
  let chunk = "";
  for (let s = from; s < to; s++) {
    const t = new Date(START + s * 1000).toISOString();
    for (const id of ds.sensors) {
      // a smooth daily curve plus a deterministic wobble; exact value does not matter
      const v = 20 + 5 * Math.sin((2 * Math.PI * s) / DAY_S) + ((id * 7919 + s * 104_729) % 1000) / 1000;
      chunk += `${t}\t${id}\t${v}\t\\N\n`;
    }
    if (chunk.length > 1 << 20) {
      yield chunk;
      chunk = "";
    }
  }
  if (chunk) yield chunk;
}

async function freshDatabase(adminUrl: string, label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `cea_bench_${label}_${randomBytes(3).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await applySchema(c);
  await syncSite(c, await loadSite(projectPath("ops/site.json")));
  await c.end();
  return {
    url,
    drop: async () => {
      const a = new pg.Client({ connectionString: adminUrl });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const bench: Bench = async (ctx) => {
  const admin = new URL(ctx.databaseUrl);
  admin.pathname = "/postgres";
  const site = await loadSite(projectPath("ops/site.json"));
  const sensors = site.devices.flatMap((d) => d.sensors.map((s) => s.id));
  const seconds = Math.max(3600, Math.round(7 * DAY_S * ctx.scale));
  const ds: Dataset = { sensors, seconds, rows: sensors.length * seconds };
  ctx.log(`${ds.rows.toLocaleString()} rows: ${sensors.length} sensors x 1 Hz x ${(seconds / DAY_S).toFixed(2)} days`);
  const rows: BenchRow[] = [];

  // 1. raw COPY ceiling
  const a = await freshDatabase(admin.toString(), "copy");
  const ca = new pg.Client({ connectionString: a.url });
  await ca.connect();
  const copySec = await timed(async () => {
    await pipeline(
      Readable.from(copyChunks(ds)),
      ca.query(copyFrom("COPY measurement (time, sensor_id, value, status) FROM STDIN")),
    );
  });
  const ceiling = ds.rows / copySec;
  rows.push({ case: "raw COPY into measurement", value: ceiling, unit: "rows/s", note: "the ceiling" });
  ctx.log(`copy: ${Math.round(ceiling)} rows/s`);

  // 2. the platform's write path, 5 000-row transactions (the worker's batch size)
  const b = await freshDatabase(admin.toString(), "platform");
  const cb = new pg.Client({ connectionString: b.url });
  await cb.connect();
  const perBatchSeconds = Math.max(1, Math.floor(5000 / sensors.length));
  const platformSec = await timed(async () => {
    for (let s = 0; s < ds.seconds; s += perBatchSeconds) {
      const text = [...copyChunks(ds, s, Math.min(ds.seconds, s + perBatchSeconds))].join("");
      await cb.query("BEGIN");
      await writeMeasurements(cb, text);
      await cb.query("COMMIT");
    }
  });
  rows.push({
    case: "platform write path (COPY staging + ON CONFLICT)",
    value: ds.rows / platformSec,
    unit: "rows/s",
    baseline: "raw COPY",
    ratio: ds.rows / platformSec / ceiling,
  });
  ctx.log(`platform: ${Math.round(ds.rows / platformSec)} rows/s`);
  await cb.end();
  await b.drop();

  // 3. batched INSERT … ON CONFLICT DO NOTHING, 1 000 rows per statement
  const c = await freshDatabase(admin.toString(), "insert");
  const cc = new pg.Client({ connectionString: c.url });
  await cc.connect();
  const perStmtSeconds = Math.max(1, Math.floor(1000 / sensors.length));
  const insertSec = await timed(async () => {
    for (let s = 0; s < ds.seconds; s += perStmtSeconds) {
      const times: string[] = [];
      const ids: number[] = [];
      const values: number[] = [];
      for (const chunk of copyChunks(ds, s, Math.min(ds.seconds, s + perStmtSeconds))) {
        for (const line of chunk.split("\n")) {
          if (!line) continue;
          const [t, id, v] = line.split("\t");
          times.push(t!);
          ids.push(Number(id));
          values.push(Number(v));
        }
      }
      await cc.query(
        `INSERT INTO measurement (time, sensor_id, value)
         SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::float8[])
         ON CONFLICT (sensor_id, time) DO NOTHING`,
        [times, ids, values],
      );
    }
  });
  rows.push({
    case: "batched INSERT ... ON CONFLICT DO NOTHING (1 000 rows)",
    value: ds.rows / insertSec,
    unit: "rows/s",
    baseline: "raw COPY",
    ratio: ds.rows / insertSec / ceiling,
  });
  ctx.log(`insert: ${Math.round(ds.rows / insertSec)} rows/s`);
  await cc.end();
  await c.drop();

  // 4. 30-day hourly history of one sensor: raw rows vs the hourly aggregate
  const ed = await edition(ca);
  // the raw COPY above bypassed the write path's bucket queue: rebuild from the raw rows
  const refreshSec = await timed(() => rebuildAggregates(ca));
  await ca.query("ANALYZE");
  const sensor = sensors[Math.floor(sensors.length / 2)]!;
  const windowStart = new Date(START - 23 * DAY_S * 1000).toISOString();
  const windowEnd = new Date(START + 7 * DAY_S * 1000).toISOString();
  const rawSql = `SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, min(value), max(value), avg(value), count(*)
                  FROM measurement WHERE sensor_id = $1 AND time >= $2 AND time < $3 GROUP BY 1 ORDER BY 1`;
  const aggSql = `SELECT bucket, min_value, max_value, avg_value, sample_count FROM measurement_hourly
                  WHERE sensor_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket`;
  const sample = async (sql: string, n: number) => {
    const ms: number[] = [];
    let points = 0;
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      const r = await ca.query(sql, [sensor, windowStart, windowEnd]);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      points = r.rowCount ?? 0;
    }
    return { p50: percentile(ms, 50), p95: percentile(ms, 95), points };
  };
  await sample(rawSql, 2); // warm the cache for both
  await sample(aggSql, 2);
  const raw = await sample(rawSql, 20);
  const agg = await sample(aggSql, 200);
  if (raw.points !== agg.points) throw new Error(`raw gave ${raw.points} hourly points, aggregate ${agg.points}`);
  rows.push({ case: "30-day hourly history from raw rows, p50", value: raw.p50, unit: "ms" });
  rows.push({ case: "30-day hourly history from raw rows, p95", value: raw.p95, unit: "ms" });
  rows.push({
    case: "30-day hourly history from measurement_hourly, p50",
    value: agg.p50,
    unit: "ms",
    baseline: "raw p50",
    ratio: raw.p50 / agg.p50,
    note: "ratio = times faster than raw",
  });
  rows.push({
    case: "30-day hourly history from measurement_hourly, p95",
    value: agg.p95,
    unit: "ms",
    baseline: "raw p95",
    ratio: raw.p95 / agg.p95,
    note: "ratio = times faster than raw",
  });
  rows.push({ case: "aggregate refresh after the load", value: ds.rows / refreshSec, unit: "rows/s" });
  await ca.end();
  await a.drop();

  return {
    rows,
    params: {
      rows: ds.rows,
      sensors: sensors.length,
      days: +(seconds / DAY_S).toFixed(2),
      edition: ed,
      points: raw.points,
    },
  };
};

export default bench;
