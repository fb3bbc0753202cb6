import { compileSignal, EncodeError, encodeRaw, physicalValue, rawOf, type SignalCodec } from "./codec.js";
import type { SignalDef } from "./model.js";

// A signal's value table (KCD LabelSet/LabelGroup, DBC VAL_) in terms of the
// values the platform stores: the file names raw values, a reading holds the
// physical value plus the sensor's calibration_offset. Each named raw value is
// put through the very decode arithmetic the worker uses (encoded into a
// payload and decoded again), so a stored value has a label exactly when the
// decoder would have stored that value for a named raw value. Built once per
// load; a lookup is one Map probe (plus an inversion for the rare large range).

/** Ranges up to this many raw values are listed value by value in the lookup map. */
const ENUMERATE_MAX = 1024;

export interface ValueLabels {
  /** Stored value (as JSON writes the number) → name; a range of values is keyed "lo..hi" (KCD LabelGroup). */
  readonly table: Readonly<Record<string, string>>;
  /** The name of a stored value, or null when the table has no entry for it. */
  of(value: number): string | null;
}

/** The value table of a sensor's signal, or undefined when the signal has none. */
export function valueLabels(signal: SignalDef, calibration: number): ValueLabels | undefined {
  if (!signal.labels?.length) return undefined;
  const codec = compileSignal(signal);
  // a signal lies within its message (at most 64 bytes); its bits are all this payload needs
  const payload = new Uint8Array(64);
  const stored = (raw: number): number | undefined => {
    try {
      encodeRaw(payload, codec, raw);
    } catch (err) {
      // a label for a raw value the signal's bits cannot hold never names a reading
      if (err instanceof EncodeError) return undefined;
      throw err;
    }
    const v = physicalValue(payload, 0, codec) + calibration;
    return Number.isFinite(v) ? v : undefined;
  };
  const byValue = new Map<number, string>();
  const wide: { from: number; to: number; name: string }[] = [];
  const table: Record<string, string> = {};
  for (const l of signal.labels) {
    if (l.from === l.to) {
      const v = stored(l.from);
      if (v === undefined) continue;
      // the first entry for a value wins, as labelOf reads the file
      if (!byValue.has(v)) byValue.set(v, l.name);
      table[String(v)] ??= l.name;
      continue;
    }
    const a = stored(l.from);
    const b = stored(l.to);
    if (a !== undefined && b !== undefined) table[`${Math.min(a, b)}..${Math.max(a, b)}`] ??= l.name;
    if (l.to - l.from < ENUMERATE_MAX) {
      for (let r = l.from; r <= l.to; r++) {
        const v = stored(r);
        if (v !== undefined && !byValue.has(v)) byValue.set(v, l.name);
      }
    } else wide.push(l);
  }
  const inWide = (value: number): string | null => {
    const raw = rawOfStored(codec, value - calibration);
    // labels name integer raw values (a float signal's raw value may have a fraction)
    if (raw === undefined || !Number.isInteger(raw)) return null;
    for (const l of wide) if (raw >= l.from && raw <= l.to && stored(raw) === value) return l.name;
    return null;
  };
  return {
    table,
    of: wide.length === 0 ? (value) => byValue.get(value) ?? null : (value) => byValue.get(value) ?? inWide(value),
  };
}

function rawOfStored(codec: SignalCodec, physical: number): number | undefined {
  try {
    return rawOf(codec, physical);
  } catch (err) {
    if (err instanceof EncodeError) return undefined;
    throw err;
  }
}
