import { ReadingColumns, statusCode } from "../db/readings.js";
import { type Batch, entryField, noOptions, port, type StageSpec, settled } from "../pipeline/runtime/stage.js";
import type { DecodedSignals } from "./decode/signals.js";
import { DECODED_SIGNALS } from "./decode.js";

// resolve-sensor: decoded signals → sensor readings. Each signal a sensor of
// the site file maps becomes a reading (sensor id, receive time, physical
// value + calibration_offset, status); signals no sensor maps are dropped
// (decoded, not stored), and a frame none of whose signals maps to a sensor is
// a dead letter (counted per message: a node the site does not know sends it
// every second). A frame is all-or-nothing: a mapped value that is not finite
// makes the whole frame a dead letter. The status comes from the entry's
// source: `simulator` → simulated, `replay` → replayed, the live bus → NULL.
// Entries past their delivery limit were not decoded: for them this stage
// names one (sensor, time) key each, so the writer can tell whether an earlier
// delivery was committed.

export { loadDecodeTable, missingSensors, type SensorMapFiles } from "./sensor-map.js";

/** Readings of a batch, and the keys to probe for entries that were not processed again. */
export interface SensorReadings {
  rows: ReadingColumns;
  /** One stored key per entry past its delivery limit: if it is stored, the entry was committed before. */
  probes: { entry: number; sensor: number; timeUs: number }[];
}

export const SENSOR_READINGS = port<SensorReadings>("sensor-readings");

const SOURCES: Record<string, number> = {
  socketcan: statusCode(null),
  simulator: statusCode("simulated"),
  replay: statusCode("replayed"),
};

/** Status code of an entry's source, or null when `src` names no known source. Absent = an older scanner's live bus. */
function sourceStatus(batch: Batch, i: number): number | null {
  const src = entryField(batch, i, "src");
  if (src === undefined) return SOURCES.socketcan!;
  return SOURCES[src] ?? null;
}

/** Epoch microseconds of an ISO 8601 receive time with 6 fractional digits, or NaN. */
function receiveMicros(ts: string | undefined): number {
  if (!ts || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(ts)) return Number.NaN;
  const ms = Date.parse(`${ts.slice(0, 23)}Z`);
  return Number.isNaN(ms) ? ms : ms * 1000 + Number(ts.slice(23, 26));
}

export function resolveSensorStage(): StageSpec<DecodedSignals, SensorReadings, typeof noOptions> {
  return {
    name: "resolve-sensor",
    consumes: DECODED_SIGNALS,
    emits: SENSOR_READINGS,
    options: noOptions,
    failure: {
      // it only reads memory: a thrown error is a fault of the worker itself
      classify: () => "fatal",
      describe: (err) => `resolve-sensor failed: ${(err as Error).message}`,
      backoff: { baseMs: 100, maxMs: 2_000 },
    },
    create() {
      return { process: resolveReadings };
    },
  };
}

/** The stage's work on one batch: readings of every mapped signal, dead letters, probes. */
export function resolveReadings(batch: Batch, sig: DecodedSignals): SensorReadings {
  const { table } = sig;
  const rows = new ReadingColumns(sig.count);
  let r = 0;
  while (r < sig.count) {
    const e = sig.entry[r]!;
    let end = r;
    while (end < sig.count && sig.entry[end] === e) end++;
    const first = r;
    r = end;
    if (settled(batch, e)) continue;
    const m = table.messages[sig.message[first]!]!;
    if (m.mapped === 0) {
      batch.dead.set(e, { reason: `no sensor for any signal of ${m.name}`, cause: `unmapped:${m.name}` });
      continue;
    }
    const status = sourceStatus(batch, e);
    if (status === null) {
      batch.dead.set(e, {
        reason: `src "${entryField(batch, e, "src")}" is not socketcan, simulator or replay`,
      });
      continue;
    }
    const mark = rows.count;
    for (let k = first; k < end; k++) {
      const s = m.signals[sig.signal[k]!]!;
      if (!s.sensorId) continue;
      const v = sig.value[k]! + s.calibration;
      if (!Number.isFinite(v)) {
        rows.count = mark;
        batch.dead.set(e, { reason: `value of ${m.name}.${s.name} is not finite` });
        break;
      }
      rows.push(e, s.sensorId, sig.timeUs[e]!, v, status);
    }
  }
  const probes: SensorReadings["probes"] = [];
  for (const [e, d] of batch.dead) {
    if (!d.overLimit) continue;
    const m = table.messages[Number(entryField(batch, e, "id"))];
    const sensor = m?.signals.find((s) => s.sensorId)?.sensorId;
    const timeUs = receiveMicros(entryField(batch, e, "ts"));
    // an entry that names no mapped message or no valid time could never have been stored
    if (sensor && !Number.isNaN(timeUs)) probes.push({ entry: e, sensor, timeUs });
  }
  return { rows, probes };
}
