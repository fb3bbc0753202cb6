import type { Queryable } from "../../db/pool.js";
import {
  type AggPoint,
  aggHistory,
  countPoints,
  type RawPoint,
  type Resolution,
  rawHistory,
} from "../../db/queries/measurement.js";
import type { Config } from "../runtime/config.js";
import { HttpError } from "./http-errors.js";
import type { SensorLabels } from "./labels.js";
import type { HistoryQuery } from "./schemas.js";

/** A raw point of a sensor with a value table also carries its value's name (null: none in the table). */
export type Point = (Omit<RawPoint, "sensor_id"> & { label?: string | null }) | Omit<AggPoint, "sensor_id">;

export interface History {
  resolution: Resolution;
  requested_resolution: HistoryQuery["resolution"];
  start: string;
  end: string;
  point_budget: number;
  /** points per sensor id, oldest first; every requested sensor has an entry */
  bySensor: Map<number, Point[]>;
}

/**
 * History of some sensors over [start, end). `auto` takes the finest resolution
 * whose answer stays within the point budget (counted with a LIMIT, so the cost
 * does not grow with the window); hourly and daily come from the aggregates.
 */
export async function loadHistory(
  db: Queryable,
  config: Pick<Config, "CEA_HISTORY_POINT_BUDGET" | "CEA_HISTORY_RAW_MAX">,
  sensorIds: number[],
  q: HistoryQuery,
): Promise<History> {
  // the window as the schema resolved it: canonical UTC, start < end
  const { start, end } = q;
  const budget = config.CEA_HISTORY_POINT_BUDGET;
  const max = config.CEA_HISTORY_RAW_MAX;

  let resolution: Resolution;
  if (q.resolution !== "auto") resolution = q.resolution;
  else if ((await countPoints(db, "raw", sensorIds, start, end, budget + 1)) <= budget) resolution = "raw";
  else if ((await countPoints(db, "hourly", sensorIds, start, end, budget + 1)) <= budget) resolution = "hourly";
  else resolution = "daily";

  const rows: (RawPoint | AggPoint)[] =
    resolution === "raw"
      ? await rawHistory(db, sensorIds, start, end, max + 1)
      : await aggHistory(db, resolution, sensorIds, start, end, max + 1);
  if (rows.length > max)
    throw new HttpError(
      422,
      "too_many_points",
      `the window holds more than ${max} points at resolution ${resolution} (CEA_HISTORY_RAW_MAX); ` +
        "narrow it or ask for a coarser resolution",
      { limit: max },
    );

  const bySensor = new Map<number, Point[]>(sensorIds.map((id) => [id, []]));
  for (const { sensor_id, ...p } of rows) bySensor.get(sensor_id)?.push(p);
  return { resolution, requested_resolution: q.resolution, start, end, point_budget: budget, bySensor };
}

/**
 * Name the raw values of the sensors that have a value table (one lookup of
 * the table per sensor, one Map probe per point; other sensors' points are
 * left as they are). Aggregate points (min, max, avg) get no label.
 */
export function labelHistory(h: History, labels: SensorLabels): void {
  if (h.resolution !== "raw" || labels.size === 0) return;
  for (const [id, points] of h.bySensor) {
    const table = labels.get(id);
    if (!table) continue;
    for (const p of points) if ("value" in p) p.label = table.of(p.value);
  }
}

/**
 * A text cell (sensor name, status). A cell that begins with = + - @, a tab or
 * a carriage return is a formula to a spreadsheet (=HYPERLINK(…), =cmd|…):
 * it gets a leading apostrophe, as OWASP's CSV-injection guidance says, so
 * it opens as the text it is. Numbers and times are the API's own and go out as they are.
 */
export function csvText(v: string | null): string {
  if (v === null) return "";
  const s = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * CSV of a history answer: two comment lines (facility time zone, resolution),
 * a header, one line per point. Times are UTC, ISO 8601. Raw lines end with the
 * value's label (empty when the sensor has no value table or the value no entry).
 */
export function historyCsv(h: History, timezone: string, names: Map<number, string>): string {
  const agg = h.resolution !== "raw";
  const lines = [
    `# facility time zone: ${timezone}; times are UTC (ISO 8601)`,
    `# resolution: ${h.resolution}; window: [${h.start}, ${h.end})`,
    agg ? "sensor_id,sensor,time,min,max,avg,count" : "sensor_id,sensor,time,value,status,label",
  ];
  for (const [id, points] of h.bySensor) {
    const name = csvText(names.get(id) ?? "");
    for (const p of points) {
      const rest =
        "value" in p
          ? `${p.value},${csvText(p.status)},${csvText(p.label ?? null)}`
          : `${p.min},${p.max},${p.avg},${p.count}`;
      lines.push(`${id},${name},${p.time},${rest}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** CSV when asked for by ?format=csv or an Accept header that prefers it. */
export function wantsCsv(format: HistoryQuery["format"], accept: string | undefined): boolean {
  if (format) return format === "csv";
  return accept !== undefined && /\btext\/csv\b/i.test(accept);
}
