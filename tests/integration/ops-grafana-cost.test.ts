import { readFileSync } from "node:fs";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rebuildAggregates } from "../../db/schema.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { createTestDatabase, isCommunity, type TestDatabase } from "../support/db.js";

// Every panel query of the climate dashboard, measured with EXPLAIN (ANALYZE,
// BUFFERS) on a data set of the benchmark's shape, at the ranges an operator
// uses. Cost is rows read and shared buffers touched (what the plan did), never
// wall time.
//
// The data set: a smaller-scale version of bench/api.ts's (50 sensors × 1 Hz ×
// 30 days, about 130 M rows): the site's sensors (the 65 of the CAN nodes and
// the 9 derived ones of ops/site.json) and 30 days ending now, one
// reading per minute for the older part and 1 Hz for the last 6 hours, where
// the raw-row panels read (about 3.2 M rows), with both aggregates built.
//
// The aggregates as they are between two refreshes at the worst: on the
// Apache edition every bucket refreshed (cea_refresh_aggregates() runs every
// minute); on the Community edition the hourly aggregate refreshed only up to
// 75 minutes ago (its policy: end offset 1 hour, every 15 minutes), so its
// real-time part reads the raw rows of up to the last 2 h 15 min.
//
// The stated bounds:
// - ROWS_MAX: no query reads more than 620 000 rows. The largest designed
//   reads: a raw panel at its 6-hour limit with every room selected (the VPD
//   panel: 8 air and 3 leaf VPD sensors × 21 600 readings = 237 600), and on
//   the Community edition the samples-per-hour panel, whose hourly aggregate
//   adds up to 2 h 15 min of every sensor's raw readings (74 × 8 100 =
//   599 400; 477 900 before the 15 applied-output sensors of the actuator
//   nodes, 450 000 before the derived sensors; this data set gives every
//   sensor 1 Hz, the nodes' status frames come once a second). The old "latest
//   reading" panel read every raw row of the last 24 h (4.3 M at 50 sensors ×
//   1 Hz; about 1.2 M on this data set).
// - BUFFERS_MULTIPLE: no query touches more than 30 times the shared buffers
//   of the aggregate query: the temperature panel's hourly query over the full
//   30 days with every room (the baseline is printed with the figures). The
//   raw panels at 6 hours measured about 21 times on the Apache edition:
//   readings arrive in time order, so a few sensors' rows are spread over every
//   page of those hours. The raw panels as they were (2 days, every sensor's
//   rows read) touched about 100 times.

const ROWS_MAX = 620_000;
const BUFFERS_MULTIPLE = 30;

interface Target {
  refId: string;
  rawSql: string;
}
interface Panel {
  title: string;
  targets?: Target[];
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(projectPath("ops/grafana/dashboards/cea-climate.json"), "utf8")) as {
  panels: Panel[];
  templating: { list: { name: string; query: string }[] };
};
const flat = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...flat(p.panels ?? [])]);
const queryPanels = flat(dashboard.panels).filter((p) => p.targets?.length);

const quoteList = (vals: string[]) => vals.map((v) => `'${v.replace(/'/g, "''")}'`).join(",");

/** The SQL Grafana's PostgreSQL datasource sends for this range and these variables. */
function expand(sql: string, from: Date, to: Date, vars: { room: string[]; sensor: string[] }, intervalMs: number) {
  const f = `'${from.toISOString()}'`;
  const t = `'${to.toISOString()}'`;
  const out = sql
    .replace(/\$__timeFilter\(([^)]+)\)/g, (_, col: string) => `${col} BETWEEN ${f} AND ${t}`)
    .replace(/\$__timeFrom\(\)/g, f)
    .replace(/\$__timeTo\(\)/g, t)
    .replace(/\$__interval_ms/g, String(intervalMs))
    .replace(/\$room\b/g, quoteList(vars.room))
    .replace(/\$sensor\b/g, quoteList(vars.sensor));
  if (out.includes("$")) throw new Error(`unexpanded macro left in:\n${out}`);
  return out;
}

interface PlanNode {
  "Node Type": string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  "Shared Hit Blocks"?: number;
  "Shared Read Blocks"?: number;
  Plans?: PlanNode[];
}

// Nodes that read stored rows (of tables, chunks, indexes or compressed batches).
const READS = new Set(["Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Sample Scan"]);

/** Rows a plan read from storage: what its scan nodes returned plus what their filters removed, over all loops. */
function rowsRead(n: PlanNode): number {
  const loops = n["Actual Loops"] ?? 1;
  const own =
    READS.has(n["Node Type"]) ||
    (n["Node Type"] === "Custom Scan" &&
      (n as { "Custom Plan Provider"?: string })["Custom Plan Provider"] === "DecompressChunk")
      ? ((n["Actual Rows"] ?? 0) + (n["Rows Removed by Filter"] ?? 0) + (n["Rows Removed by Index Recheck"] ?? 0)) *
        loops
      : 0;
  return own + (n.Plans ?? []).reduce((s, c) => s + rowsRead(c), 0);
}

interface Cost {
  rows: number;
  buffers: number;
}

async function cost(db: pg.Pool, sql: string): Promise<Cost> {
  const { rows } = await db.query<{ "QUERY PLAN": [{ Plan: PlanNode }] }>(
    `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${sql}`,
  );
  const plan = rows[0]!["QUERY PLAN"][0].Plan;
  return {
    rows: Math.round(rowsRead(plan)),
    buffers: (plan["Shared Hit Blocks"] ?? 0) + (plan["Shared Read Blocks"] ?? 0),
  };
}

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const now = new Date(Math.floor(Date.now() / MIN) * MIN);
const RANGES: [string, number, number][] = [
  // label, span, Grafana's $__interval for about 1 000 px
  ["1 hour", HOUR, 5_000],
  ["6 hours", 6 * HOUR, 20_000],
  ["24 hours", DAY, 60_000],
  ["7 days", 7 * DAY, 600_000],
  ["30 days", 30 * DAY, 3_600_000],
];

let db: TestDatabase;
let rooms: string[];
let sensors: string[];
let baseline: Cost;

beforeAll(async () => {
  db = await createTestDatabase();
  const c = await db.pool.connect();
  try {
    await c.query("SET synchronous_commit = off");
    const start = new Date(now.getTime() - 30 * DAY);
    const fine = new Date(now.getTime() - 6 * HOUR);
    // one statement per day keeps each transaction small
    for (let d = 0; d < 30; d++) {
      const from = new Date(start.getTime() + d * DAY);
      const to = new Date(Math.min(from.getTime() + DAY, fine.getTime()));
      if (to <= from) break;
      await c.query(
        `INSERT INTO measurement (time, sensor_id, value)
         SELECT t, s.sensor_id, 20 + (s.sensor_id % 7) + sin(extract(epoch FROM t) / 3600.0)
         FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 minute', interval '1 minute') t,
              sensor s`,
        [from, to],
      );
    }
    await c.query(
      `INSERT INTO measurement (time, sensor_id, value)
       SELECT t, s.sensor_id, 20 + (s.sensor_id % 7) + sin(extract(epoch FROM t) / 3600.0)
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 second') t, sensor s`,
      [fine, now],
    );
    if (isCommunity()) {
      await c.query("CALL refresh_continuous_aggregate('measurement_hourly', NULL, now() - interval '75 minutes')");
      await c.query("CALL refresh_continuous_aggregate('measurement_daily', NULL, now() - interval '25 hours')");
    } else {
      await rebuildAggregates(c);
    }
    await c.query("ANALYZE");
    const v = dashboard.templating.list;
    rooms = (await c.query<{ name: string }>(v.find((x) => x.name === "room")!.query)).rows.map((r) => r.name);
    sensors = (
      await c.query<{ name: string }>(
        expand(v.find((x) => x.name === "sensor")!.query, now, now, { room: rooms, sensor: [] }, 1000),
      )
    ).rows.map((r) => r.name);
  } finally {
    c.release();
  }
  const temp = queryPanels.find((p) => p.title.startsWith("Temperature"))!;
  const hourly = temp.targets!.find((t) => t.rawSql.includes("measurement_hourly"))!;
  baseline = await cost(
    db.pool,
    expand(hourly.rawSql, new Date(now.getTime() - 30 * DAY), now, { room: rooms, sensor: sensors }, 3_600_000),
  );
}, 900_000);
afterAll(() => db?.drop());

describe("climate dashboard: the cost of every panel query on a 30-day data set", () => {
  it("the data set has the benchmark's shape", async () => {
    const { rows } = await db.pool.query<{ sensors: number; raw_1hz: number; hourly: number }>(
      `SELECT (SELECT count(*) FROM sensor)::int AS sensors,
              (SELECT count(*) FROM measurement WHERE sensor_id = 101 AND time > $1::timestamptz - interval '6 hours')::int AS raw_1hz,
              (SELECT count(*) FROM measurement_hourly WHERE sensor_id = 101)::int AS hourly`,
      [now],
    );
    expect(rows[0]).toMatchObject({ sensors: 74, raw_1hz: 6 * 3600 });
    // every hour of the 30 days (the newest ones by real-time aggregation on the Community edition)
    expect(rows[0]!.hourly).toBe(30 * 24 + 1);
    expect(rooms).toHaveLength(4);
    // the baseline touches the aggregate (and on the Community edition the newest hours' raw rows of its sensors)
    expect(baseline.rows).toBeLessThan(isCommunity() ? 50_000 : 10_000);
    expect(baseline.buffers).toBeGreaterThan(0);
  });

  it.each(RANGES)("over %s, every query stays within the stated bounds", async (label, span, intervalMs) => {
    const from = new Date(now.getTime() - span);
    const figures: string[] = [];
    const over: string[] = [];
    for (const p of queryPanels) {
      for (const t of p.targets ?? []) {
        const c = await cost(db.pool, expand(t.rawSql, from, now, { room: rooms, sensor: sensors }, intervalMs));
        const name = `${p.title} ${t.refId}`;
        figures.push(`${name}: ${c.rows} rows, ${c.buffers} buffers`);
        if (c.rows > ROWS_MAX) over.push(`${name} reads ${c.rows} rows (> ${ROWS_MAX})`);
        if (c.buffers > BUFFERS_MULTIPLE * baseline.buffers)
          over.push(`${name} touches ${c.buffers} buffers (> ${BUFFERS_MULTIPLE} × ${baseline.buffers})`);
      }
    }
    process.stdout.write(
      `[cost ${label}; baseline ${baseline.rows} rows, ${baseline.buffers} buffers]\n  ${figures.join("\n  ")}\n`,
    );
    expect(over).toEqual([]);
  });

  it("the measure sees a panel that scans the raw rows of a day (the old latest-reading query)", async () => {
    const old = `SELECT r.name AS room, max(m.time) AS latest, count(*) AS rows_24h
      FROM measurement m JOIN sensor s ON s.sensor_id = m.sensor_id JOIN device d ON d.device_id = s.device_id
      JOIN room r ON r.room_id = d.room_id
      WHERE m.time > now() - interval '24 hours' AND r.name IN (${quoteList(rooms)}) GROUP BY r.name ORDER BY r.name`;
    const c = await cost(db.pool, old);
    // 6 h at 1 Hz + 18 h at one a minute, for 74 sensors
    expect(c.rows).toBeGreaterThan(1_000_000);
    expect(c.rows).toBeGreaterThan(2 * ROWS_MAX);
    expect(c.rows).toBeGreaterThan(ROWS_MAX);
  });
});
