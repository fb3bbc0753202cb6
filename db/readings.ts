// Sensor readings as columns: what the can-worker's stages hand each other from
// resolve-sensor on (a derived stage adds rows to them) and what the writer
// takes. Row r belongs to the input unit entry[r] (a stream entry): the rows of
// one entry are written or refused together.

/** measurement.status values a reading may carry; index 0 = NULL (a good reading from the live bus). */
export const READING_STATUS = [null, "out_of_range", "simulated", "replayed", "migrated"] as const;
export type ReadingStatus = (typeof READING_STATUS)[number];

export function statusCode(status: ReadingStatus): number {
  return READING_STATUS.indexOf(status);
}

/** The smallest positive normal double. */
export const MIN_NORMAL = 2.2250738585072014e-308;

/**
 * A nonzero value smaller in magnitude than any normal double. No sensor
 * reads one, and the aggregates' scaled average cannot take it: PostgreSQL
 * raises "value out of range: underflow", which would stop every aggregate
 * refresh (both editions) and the hourly history (Community). Such a value is
 * kept with status out_of_range, which the aggregates and control leave out;
 * the API refuses it and the legacy migration counts it out_of_range.
 */
export const isSubnormal = (v: number): boolean => v !== 0 && v > -MIN_NORMAL && v < MIN_NORMAL;

const OUT_OF_RANGE = statusCode("out_of_range");

export class ReadingColumns {
  count = 0;
  entry: Uint32Array;
  sensor: Int32Array;
  /** Epoch microseconds (UTC): exact for every instant PostgreSQL's timestamptz holds in practice. */
  timeUs: Float64Array;
  value: Float64Array;
  /** Index into READING_STATUS. */
  status: Uint8Array;

  constructor(capacity = 1_024) {
    const cap = Math.max(16, capacity);
    this.entry = new Uint32Array(cap);
    this.sensor = new Int32Array(cap);
    this.timeUs = new Float64Array(cap);
    this.value = new Float64Array(cap);
    this.status = new Uint8Array(cap);
  }

  /** Add one row. `status` is an index into READING_STATUS (statusCode()). */
  push(entry: number, sensor: number, timeUs: number, value: number, status: number): void {
    if (this.count === this.entry.length) this.grow(this.count * 2);
    const r = this.count++;
    this.entry[r] = entry;
    this.sensor[r] = sensor;
    this.timeUs[r] = timeUs;
    this.value[r] = value;
    this.status[r] = isSubnormal(value) ? OUT_OF_RANGE : status;
  }

  /** The rows whose entry passes `keep`, as new columns. */
  filterEntries(keep: (entry: number) => boolean): ReadingColumns {
    const out = new ReadingColumns(this.count);
    for (let r = 0; r < this.count; r++)
      if (keep(this.entry[r]!))
        out.push(this.entry[r]!, this.sensor[r]!, this.timeUs[r]!, this.value[r]!, this.status[r]!);
    return out;
  }

  /** Distinct entries of the rows, in first-seen order. */
  entries(): number[] {
    const seen = new Set<number>();
    for (let r = 0; r < this.count; r++) seen.add(this.entry[r]!);
    return [...seen];
  }

  private grow(cap: number): void {
    const g = <T extends Uint32Array | Int32Array | Float64Array | Uint8Array>(old: T, into: T): T => {
      into.set(old);
      return into;
    };
    this.entry = g(this.entry, new Uint32Array(cap));
    this.sensor = g(this.sensor, new Int32Array(cap));
    this.timeUs = g(this.timeUs, new Float64Array(cap));
    this.value = g(this.value, new Float64Array(cap));
    this.status = g(this.status, new Uint8Array(cap));
  }
}
