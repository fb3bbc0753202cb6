import type { Redis } from "ioredis";
import type pg from "pg";
import { loadSite } from "../../db/site.js";
import { loadCanDb } from "../../pipeline/can/candb.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { expectedRows } from "../../stages/expected.js";
import { loadDecodeTable } from "../../stages/sensor-map.js";

// Entry-by-entry reconciliation of what was sent to the raw stream with what
// the measurement table holds: lost, duplicated, unexpected and wrong values,
// plus the consumer group's leftovers (pending, undelivered).

/** One raw-stream entry as the scanner appends it (see pipeline/runtime/keys.ts). */
export interface SentFrame {
  entryId?: string;
  ts: string;
  id: number;
  data: string;
  iface?: string;
  src?: string;
}

export interface ExpectedRow {
  sensor_id: number;
  /** ISO 8601 with offset; normalized to UTC microseconds before comparing. */
  time: string;
  value: number;
  /** measurement.status the row must carry, when the caller knows it. */
  status?: string | null;
}

export interface RowSample {
  sensor_id: number;
  time: string;
  value?: number;
  stored?: number;
}

export interface ReconcileReport {
  /** distinct (sensor_id, time) keys the sent frames should produce */
  expected: number;
  /** rows in the table */
  stored: number;
  lost: number;
  /** keys held by more than one row (impossible with the unique index; redeliveries are counted from the workers' reports) */
  duplicated: number;
  unexpected: number;
  /** stored value or status differs from the expected one */
  valueMismatches: number;
  /** keys that more than one sent frame produced (a sender-side duplicate, not a pipeline fault) */
  sentTwice: number;
  samples: { lost: RowSample[]; unexpected: RowSample[]; mismatches: RowSample[] };
}

const SAMPLES = 5;

/**
 * The rows the worker must store for these frames, by the pipeline's own pure
 * decode + resolve (CAN database + site file joined as the worker does), and
 * checked against an independent decoder written here (checkIndependently):
 * a fault of the product's decoder must not hide behind itself. A frame that
 * cannot be decoded throws: the fault tests send no poison frames.
 */
export async function expectedRowsOf(
  frames: readonly SentFrame[],
  files = { siteFile: projectPath("ops/site.json"), canDbFile: projectPath("ops/cea.kcd") },
): Promise<ExpectedRow[]> {
  const { table } = await loadDecodeTable(files);
  const out: ExpectedRow[] = [];
  for (const f of frames) for (const r of expectedRows(table, f)) out.push(r);
  await checkIndependently(frames, out, files);
  return out;
}

/**
 * Decode every frame again with a deliberately plain decoder (the frame as one
 * big integer, bits taken with BigInt arithmetic, scale and offset applied in
 * decimal-safe order), straight from the KCD and the site file, and demand the
 * same (sensor, time, value) rows. Values agree to 1e-9 relative: the product
 * divides by 1/slope where that is an integer, this decoder multiplies.
 */
export async function checkIndependently(
  frames: readonly SentFrame[],
  rows: readonly ExpectedRow[],
  files: { siteFile: string; canDbFile: string },
): Promise<void> {
  const db = loadCanDb(files.canDbFile);
  const site = await loadSite(files.siteFile);
  const sensorOf = new Map<string, { id: number; cal: number }>();
  for (const d of site.devices)
    for (const s of d.sensors) sensorOf.set(s.signal, { id: s.id, cal: s.calibration_offset });
  const want: string[] = [];
  const values = new Map<string, number>();
  // the rooms' derived sensors, recomputed here from the independently decoded inputs of the same frame
  const inRange = (v: number, min: number | undefined, max: number | undefined) =>
    (min === undefined || v >= min - 1e-9 * Math.max(1, Math.abs(min))) &&
    (max === undefined || v <= max + 1e-9 * Math.max(1, Math.abs(max)));
  const es = (t: number) => 0.6108 * Math.exp((17.27 * t) / (t + 237.3));
  for (const f of frames) {
    const good = new Map<number, number>();
    const m = db.messages.find((x) => x.id === f.id);
    if (!m) throw new Error(`independent decode: no message 0x${f.id.toString(16)}`);
    const bytes = Buffer.from(f.data, "hex");
    for (const s of m.signals) {
      const sensor = sensorOf.get(`${m.name}.${s.name}`);
      if (!sensor) continue;
      if (s.muxedBy || s.valueType === "float32" || s.valueType === "float64")
        throw new Error(`independent decode covers plain integer signals only: ${m.name}.${s.name}`);
      let raw = 0n;
      const mask = (1n << BigInt(s.length)) - 1n;
      if (s.byteOrder === "little") {
        // the payload as one little-endian integer; the LSB at startBit
        let all = 0n;
        for (let b = bytes.length - 1; b >= 0; b--) all = (all << 8n) | BigInt(bytes[b]!);
        raw = (all >> BigInt(s.startBit)) & mask;
      } else {
        // the payload as one big-endian integer; the MSB at startBit counted in DBC numbering
        let all = 0n;
        for (const b of bytes) all = (all << 8n) | BigInt(b);
        const fromTop = (s.startBit >> 3) * 8 + 7 - (s.startBit & 7);
        raw = (all >> BigInt(bytes.length * 8 - fromTop - s.length)) & mask;
      }
      if (s.valueType === "signed" && raw >= 1n << BigInt(s.length - 1)) raw -= 1n << BigInt(s.length);
      const physical = Number(raw) * s.factor + s.offset;
      const v = physical + sensor.cal;
      const k = `${sensor.id}|${canonicalTime(f.ts)}`;
      want.push(k);
      values.set(k, v);
      if (inRange(physical, s.min, s.max)) good.set(sensor.id, v);
    }
    for (const g of site.derived) {
      const t = good.get(g.temperature_sensor);
      const rh = good.get(g.humidity_sensor);
      if (t === undefined || rh === undefined || !(rh > 0 && rh <= 100)) continue;
      const ea = (es(t) * rh) / 100;
      const lnRatio = Math.log(ea / 0.6108);
      const derived: Record<string, number> = {
        air_vpd: es(t) - ea,
        leaf_vpd: es(t + (g.leaf_offset_c ?? 0)) - ea,
        dew_point: (237.3 * lnRatio) / (17.27 - lnRatio),
      };
      for (const s of g.sensors) {
        const k = `${s.id}|${canonicalTime(f.ts)}`;
        want.push(k);
        values.set(k, derived[s.kind]!);
      }
    }
  }
  const got = new Map(rows.map((r) => [`${r.sensor_id}|${canonicalTime(r.time)}`, r.value]));
  if (got.size !== new Set(want).size)
    throw new Error(`independent decode: ${new Set(want).size} rows, the product's decoder ${got.size}`);
  for (const [k, v] of values) {
    const p = got.get(k);
    if (p === undefined || Math.abs(p - v) > 1e-9 * Math.max(1, Math.abs(v)))
      throw new Error(`independent decode: ${k} = ${v}, the product's decoder says ${p}`);
  }
}

/** `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, from any ISO 8601 instant with up to 6 fractional digits. */
export function canonicalTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})$/.exec(iso);
  if (!m) throw new Error(`not an ISO 8601 instant with at most microseconds: ${iso}`);
  const whole = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(whole)) throw new Error(`not a valid instant: ${iso}`);
  const frac = (m[2] ?? "").padEnd(6, "0");
  return `${new Date(whole).toISOString().slice(0, 19)}.${frac}Z`;
}

const key = (sensor: number, time: string) => `${sensor}|${time}`;

/** Every entry of a raw stream, oldest first (read in pages so a long stream is fine). */
export async function readRawStream(redis: Redis, stream: string, page = 10_000): Promise<SentFrame[]> {
  const out: SentFrame[] = [];
  let start = "-";
  for (;;) {
    const entries = await redis.xrange(stream, start, "+", "COUNT", page);
    for (const [entryId, fields] of entries) {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
      if (f.ts === undefined || f.id === undefined || f.data === undefined)
        throw new Error(`raw entry ${entryId} lacks ts/id/data: ${JSON.stringify(f)}`);
      out.push({
        entryId,
        ts: f.ts,
        id: Number(f.id),
        data: f.data,
        ...(f.iface ? { iface: f.iface } : {}),
        ...(f.src ? { src: f.src } : {}),
      });
    }
    if (entries.length < page) return out;
    start = `(${entries[entries.length - 1]![0]}`;
  }
}

/**
 * Compare the rows the frames should give with the measurement table of `db`
 * (the whole table: each test has its own database).
 */
export async function reconcile(
  db: pg.Pool | pg.Client,
  expectedRows: Iterable<ExpectedRow>,
): Promise<ReconcileReport> {
  const want = new Map<string, number>();
  const wantStatus = new Map<string, string | null>();
  let sentTwice = 0;
  for (const r of expectedRows) {
    const k = key(r.sensor_id, canonicalTime(r.time));
    if (want.has(k)) sentTwice++;
    else {
      want.set(k, r.value);
      if (r.status !== undefined) wantStatus.set(k, r.status);
    }
  }
  const { rows } = await db.query<{ sensor_id: number; time: string; value: number; status: string | null; n: number }>(
    `SELECT sensor_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
            min(value) AS value, min(status) AS status, count(*)::int AS n
     FROM measurement GROUP BY sensor_id, time`,
  );
  const report: ReconcileReport = {
    expected: want.size,
    stored: 0,
    lost: 0,
    duplicated: 0,
    unexpected: 0,
    valueMismatches: 0,
    sentTwice,
    samples: { lost: [], unexpected: [], mismatches: [] },
  };
  const seen = new Set<string>();
  for (const r of rows) {
    report.stored += r.n;
    if (r.n > 1) report.duplicated += r.n - 1;
    const k = key(r.sensor_id, r.time);
    const v = want.get(k);
    if (v === undefined) {
      report.unexpected++;
      if (report.samples.unexpected.length < SAMPLES)
        report.samples.unexpected.push({ sensor_id: r.sensor_id, time: r.time, stored: r.value });
      continue;
    }
    seen.add(k);
    // a reading stored with the wrong status (e.g. simulated as live) is as wrong as a wrong value
    if (r.value !== v || (wantStatus.has(k) && wantStatus.get(k) !== r.status)) {
      report.valueMismatches++;
      if (report.samples.mismatches.length < SAMPLES)
        report.samples.mismatches.push({ sensor_id: r.sensor_id, time: r.time, value: v, stored: r.value });
    }
  }
  for (const [k, v] of want) {
    if (seen.has(k)) continue;
    report.lost++;
    if (report.samples.lost.length < SAMPLES) {
      const [s, t] = k.split("|") as [string, string];
      report.samples.lost.push({ sensor_id: Number(s), time: t, value: v });
    }
  }
  return report;
}

export interface GroupState {
  exists: boolean;
  /** entries delivered to a consumer and not acknowledged (XPENDING summary) */
  pending: number;
  /** entries not yet delivered to the group (XINFO GROUPS lag; null when Redis cannot tell) */
  lag: number | null;
  entriesRead: number | null;
  lastDeliveredId: string | null;
  /** some entry after last-delivered-id exists (exact even when Redis reports lag as null) */
  undelivered: boolean;
  streamLength: number;
}

/** The consumer group's view of the stream: what is still pending or undelivered. */
export async function groupState(redis: Redis, stream: string, group: string): Promise<GroupState> {
  const none: GroupState = {
    exists: false,
    pending: 0,
    lag: null,
    entriesRead: null,
    lastDeliveredId: null,
    undelivered: false,
    streamLength: 0,
  };
  if ((await redis.exists(stream)) === 0) return none;
  const streamLength = await redis.xlen(stream);
  const groups = (await redis.xinfo("GROUPS", stream)) as unknown[][];
  for (const g of groups) {
    const f = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
    if (f.get("name") !== group) continue;
    const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
    const summary = (await redis.xpending(stream, group)) as [number, ...unknown[]];
    const lastDeliveredId = f.get("last-delivered-id") === undefined ? null : String(f.get("last-delivered-id"));
    const after = await redis.xrange(stream, lastDeliveredId ? `(${lastDeliveredId}` : "-", "+", "COUNT", 1);
    return {
      exists: true,
      pending: Number(summary[0]),
      lag: num(f.get("lag")),
      entriesRead: num(f.get("entries-read")),
      lastDeliveredId,
      undelivered: after.length > 0,
      streamLength,
    };
  }
  return { ...none, streamLength };
}

/** Fields of every dead letter (for asserting none were written, or which). */
export async function deadLetters(redis: Redis, stream: string): Promise<Record<string, string>[]> {
  const entries = await redis.xrange(stream, "-", "+");
  return entries.map(([, fields]) => {
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
    return f;
  });
}

/** What waitDrained watches: a child that must stay up while the group drains. */
export interface Watched {
  name: string;
  exit: unknown;
  tail(n?: number): string;
}

/**
 * Wait until the group exists and has neither pending nor undelivered entries
 * (every entry of the stream read and acknowledged). Fails at once if one of
 * the watched children exits meanwhile. Returns the final state.
 */
export async function waitDrained(
  redis: Redis,
  stream: string,
  group: string,
  timeoutMs: number,
  watch: readonly Watched[] = [],
): Promise<GroupState> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await groupState(redis, stream, group);
    if (last.exists && last.pending === 0 && !last.undelivered) return last;
    const dead = watch.find((w) => w.exit !== undefined);
    if (dead)
      throw new Error(
        `${dead.name} exited ${JSON.stringify(dead.exit)} before group ${group} drained: ${JSON.stringify(last)}\n${dead.tail(40)}`,
      );
    if (Date.now() > deadline)
      throw new Error(
        `group ${group} on ${stream} not drained after ${timeoutMs} ms: ${JSON.stringify(last)}\n${watch.map((w) => w.tail()).join("\n")}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Counters of a service's stats hash as numbers (absent fields are 0). */
export async function stats(redis: Redis, key: string): Promise<Record<string, number>> {
  const h = await redis.hgetall(key);
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
}
