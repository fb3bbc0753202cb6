import { z } from "zod";
import { type ReadingColumns, statusCode } from "../db/readings.js";
import type { DerivedInputs } from "../pipeline/can/table.js";
import { dewPointFromVapourPressure, saturationVapourPressure } from "../pipeline/runtime/psychro.js";
import type { StageSpec } from "../pipeline/runtime/stage.js";
import { SENSOR_READINGS, type SensorReadings } from "./resolve-sensor.js";

// derived: the grower metrics of each room (air VPD, leaf VPD, dew point; the
// site file's `derived` section) from its air temperature and relative
// humidity readings, added to the batch's readings so batch-copy writes them in
// the same transaction, with the same idempotency key (sensor_id, time).
//
// Pairing. A derived value is made for each usable temperature reading of the
// room, at that reading's time, in that reading's entry (so it is written or
// dead-lettered with it). Its humidity partner is the room's humidity reading
// of the same stream entry (both signals in one CAN frame, as in ops/site.json);
// when the entry has none, the latest humidity reading at or before that time,
// at most `pairWindowS` older, from this batch or an earlier one of this
// worker. An out_of_range humidity reading is a partner too, one that stops the
// value: after a bad humidity reading nothing older stands in for it.
// Consequences: exactly one value per room per temperature time: every entry
// gets the derived rows of its own temperature reading, like its own rows, so
// an entry delivered again (or the same frame twice) gives the same keys, which
// batch-copy stores once (ON CONFLICT DO NOTHING: the first value stays); the
// window fallback depends on what this
// worker has seen, so after a restart a redelivered entry without a same-entry
// partner may make no value (its first delivery's value, if committed, stays).
//
// Usable readings: out_of_range (either input) makes nothing. Provenance is
// kept: the derived value carries the strongest of its inputs' statuses
// (simulated > replayed > migrated > NULL), so control (status NULL only)
// never acts on a value computed from a simulated or replayed input.
// Humidity outside (0, 100] % or temperatures outside the formula's domain
// make nothing (counted in outOfDomain).

export const derivedOptions = z.object({
  pairWindowS: z
    .number()
    .min(0)
    .max(3_600)
    .default(10)
    .describe(
      "seconds a room's latest humidity reading may be older than a temperature reading from another entry it is paired with (0 = same entry only)",
    ),
});

const OUT_OF_RANGE = statusCode("out_of_range");
/** Provenance rank by status code (index into READING_STATUS): the stronger one wins. */
const RANK = new Uint8Array(8);
RANK[statusCode(null)] = 0;
RANK[statusCode("migrated")] = 1;
RANK[statusCode("replayed")] = 2;
RANK[statusCode("simulated")] = 3;

function provenance(a: number, b: number): number {
  return RANK[a]! >= RANK[b]! ? a : b;
}

export interface DerivedCounters {
  /** Temperature readings that got derived values. */
  derived: number;
  /** Derived rows added. */
  rows: number;
  /** Temperature readings without a usable humidity partner. */
  unpaired: number;
  /** Temperature readings (or their partner) out_of_range. */
  outOfRange: number;
  /** Inputs outside the formula's domain (RH 0, a temperature past its bounds). */
  outOfDomain: number;
}

/**
 * The work of the stage, with its memory of each room's latest humidity
 * reading. `add` appends the derived rows of a batch's readings to them.
 */
export class Deriver {
  readonly counters: DerivedCounters = { derived: 0, rows: 0, unpaired: 0, outOfRange: 0, outOfDomain: 0 };
  private plan: readonly DerivedInputs[] = [];
  /** sensor id → room index · 2 + (0 temperature, 1 humidity), −1 = not an input: a dense table for the usual small ids */
  private role = new Int32Array(0);
  /** The same for a site whose input ids are too large for a dense table. */
  private sparse: Map<number, number> | null = null;
  private rhTime = new Float64Array(0);
  private rhValue = new Float64Array(0);
  private rhStatus = new Uint8Array(0);
  private same = new Int32Array(0);
  private readonly hits: number[] = [];

  constructor(private readonly windowUs: number) {}

  private use(plan: readonly DerivedInputs[]): void {
    if (plan === this.plan) return;
    // a new site file: forget what the old pairing remembered
    this.plan = plan;
    const top = plan.reduce((m, p) => Math.max(m, p.temperature, p.humidity), 0);
    const dense = top < 1 << 20;
    this.role = new Int32Array(dense ? top + 1 : 0).fill(-1);
    this.sparse = dense ? null : new Map();
    plan.forEach((p, i) => {
      if (this.sparse) {
        this.sparse.set(p.temperature, i * 2);
        this.sparse.set(p.humidity, i * 2 + 1);
      } else {
        this.role[p.temperature] = i * 2;
        this.role[p.humidity] = i * 2 + 1;
      }
    });
    const n = plan.length;
    this.rhTime = new Float64Array(n).fill(Number.NEGATIVE_INFINITY);
    this.rhValue = new Float64Array(n);
    this.rhStatus = new Uint8Array(n).fill(OUT_OF_RANGE);
    this.same = new Int32Array(n).fill(-1);
  }

  add(plan: readonly DerivedInputs[], rows: ReadingColumns): void {
    this.use(plan);
    if (plan.length === 0) return;
    const n = rows.count;
    const hits = this.hits;
    let r = 0;
    while (r < n) {
      const e = rows.entry[r]!;
      hits.length = 0;
      for (; r < n && rows.entry[r] === e; r++) if (this.roleOf(rows.sensor[r]!) >= 0) hits.push(r);
      if (hits.length === 0) continue;
      for (const k of hits) {
        const role = this.roleOf(rows.sensor[k]!);
        if (role & 1) this.same[role >> 1] = k;
      }
      for (const k of hits) {
        const role = this.roleOf(rows.sensor[k]!);
        if (!(role & 1)) this.temperature(role >> 1, k, rows);
      }
      for (const k of hits) {
        const role = this.roleOf(rows.sensor[k]!);
        if (!(role & 1)) continue;
        const i = role >> 1;
        this.same[i] = -1;
        const t = rows.timeUs[k]!;
        if (t >= this.rhTime[i]!) {
          this.rhTime[i] = t;
          this.rhValue[i] = rows.value[k]!;
          this.rhStatus[i] = rows.status[k]!;
        }
      }
    }
  }

  private roleOf(sensor: number): number {
    if (this.sparse) return this.sparse.get(sensor) ?? -1;
    return sensor < this.role.length ? this.role[sensor]! : -1;
  }

  /** The derived rows of room i for the temperature reading in row k. */
  private temperature(i: number, k: number, rows: ReadingColumns): void {
    const t = rows.timeUs[k]!;
    const tempStatus = rows.status[k]!;
    if (tempStatus === OUT_OF_RANGE) {
      this.counters.outOfRange++;
      return;
    }
    let rh: number;
    let rhStatus: number;
    const s = this.same[i]!;
    if (s >= 0) {
      rh = rows.value[s]!;
      rhStatus = rows.status[s]!;
    } else if (this.rhTime[i]! <= t && t - this.rhTime[i]! <= this.windowUs) {
      rh = this.rhValue[i]!;
      rhStatus = this.rhStatus[i]!;
    } else {
      this.counters.unpaired++;
      return;
    }
    if (rhStatus === OUT_OF_RANGE) {
      this.counters.outOfRange++;
      return;
    }
    const p = this.plan[i]!;
    const temp = rows.value[k]!;
    let es: number;
    let esLeaf: number;
    if (!(rh > 0 && rh <= 100)) {
      this.counters.outOfDomain++;
      return;
    }
    try {
      es = saturationVapourPressure(temp);
      esLeaf = p.leafVpd ? saturationVapourPressure(temp + p.leafOffsetC) : 0;
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      this.counters.outOfDomain++;
      return;
    }
    const ea = (es * rh) / 100;
    const status = provenance(tempStatus, rhStatus);
    const e = rows.entry[k]!;
    let added = 0;
    if (p.airVpd) {
      rows.push(e, p.airVpd, t, es - ea, status);
      added++;
    }
    if (p.leafVpd) {
      rows.push(e, p.leafVpd, t, esLeaf - ea, status);
      added++;
    }
    if (p.dewPoint) {
      rows.push(e, p.dewPoint, t, dewPointFromVapourPressure(ea), status);
      added++;
    }
    this.counters.derived++;
    this.counters.rows += added;
  }
}

export function derivedStage(): StageSpec<SensorReadings, SensorReadings, typeof derivedOptions> {
  return {
    name: "derived",
    consumes: SENSOR_READINGS,
    emits: SENSOR_READINGS,
    options: derivedOptions,
    failure: {
      // it only computes in memory: a thrown error is a fault of the worker itself
      classify: () => "fatal",
      describe: (err) => `derived failed: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 2_000 },
    },
    create(_ctx, options) {
      const deriver = new Deriver(options.pairWindowS * 1e6);
      return {
        counters: () => ({ ...deriver.counters }),
        process(_batch, input) {
          deriver.add(input.derived, input.rows);
          return input;
        },
      };
    },
  };
}
