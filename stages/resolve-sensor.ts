import { ReadingColumns, statusCode } from "../db/readings.js";
import { messageKey } from "../pipeline/can/model.js";
import type { DerivedInputs } from "../pipeline/can/table.js";
import { type Batch, entryField, noOptions, port, type StageSpec, settled } from "../pipeline/runtime/stage.js";
import { NO_MESSAGE, type SignalRows } from "./decode/signals.js";
import { DECODED_SIGNALS } from "./decode.js";

// resolve-sensor: decoded signals → sensor readings. Each signal a sensor of
// the site file maps becomes a reading (sensor id, receive time, physical
// value + calibration_offset, status); a multiplexer no sensor maps is
// dropped, and a frame of a message none of whose signals maps to a sensor is
// a dead letter (counted per message: a node the site does not know sends it
// every second). A frame is all-or-nothing: a mapped value that is not finite
// makes the whole frame a dead letter. The status: out_of_range when the value
// lies outside the CAN database's physical range, else from the entry's
// source: `simulator` → simulated, `replay` → replayed, the live bus → NULL.
// Entries past their delivery limit were not decoded: for them this stage
// names one (sensor, time) key each, so the writer can tell whether an earlier
// delivery was committed.

export {
  type LoadedDecodeTable,
  loadDecodeTable,
  missingSensors,
  reportLoad,
  type SensorMapFiles,
} from "./sensor-map.js";

/** Readings of a batch, and the keys to probe for entries that were not processed again. */
export interface SensorReadings {
  rows: ReadingColumns;
  /** One stored key per entry past its delivery limit: if it is stored, the entry was committed before. */
  probes: { entry: number; sensor: number; timeUs: number }[];
  /** The rooms' derived sensors of the table these readings were resolved with (stages/derived.ts). */
  derived: DerivedInputs[];
}

export const SENSOR_READINGS = port<SensorReadings>("sensor-readings");

const OUT_OF_RANGE = statusCode("out_of_range");

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

export function resolveSensorStage(): StageSpec<SignalRows, SensorReadings, typeof noOptions> {
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
export function resolveReadings(batch: Batch, sig: SignalRows): SensorReadings {
  const { table } = sig;
  const rows = new ReadingColumns(sig.count);
  const n = sig.entryMessage.length;
  let r = 0;
  for (let e = 0; e < n; e++) {
    const first = r;
    while (r < sig.count && sig.entry[r] === e) r++;
    const key = sig.entryMessage[e]!;
    if (key === NO_MESSAGE || settled(batch, e)) continue;
    const m = table.messages[key]!;
    if (m.mapped === 0) {
      batch.dead.set(e, { reason: `no sensor for any signal of ${m.name}`, cause: `unmapped:${m.name}` });
      continue;
    }
    const source = sourceStatus(batch, e);
    if (source === null) {
      batch.dead.set(e, { reason: `src "${entryField(batch, e, "src")}" is not socketcan, simulator or replay` });
      continue;
    }
    const mark = rows.count;
    for (let k = first; k < r; k++) {
      const s = m.signals[sig.signal[k]!]!;
      if (!s.sensorId) continue; // a multiplexer no sensor maps
      const v = sig.value[k]! + s.calibration;
      if (!Number.isFinite(v)) {
        rows.count = mark;
        batch.dead.set(e, { reason: `value of ${m.name}.${s.name} is not finite` });
        break;
      }
      // out of the CAN database's physical range wins over the source: aggregates and control leave it out
      rows.push(e, s.sensorId, sig.timeUs[e]!, v, sig.outOfRange[k] ? OUT_OF_RANGE : source);
    }
  }
  const probes: SensorReadings["probes"] = [];
  for (const [e, d] of batch.dead) {
    if (!d.overLimit) continue;
    const key = probeKey(batch, e);
    const m = key === null ? undefined : table.messages[key];
    const sensor = m?.signals.find((s) => s.sensorId)?.sensorId;
    const timeUs = receiveMicros(entryField(batch, e, "ts"));
    // an entry that names no mapped message or no valid time could never have been stored
    if (sensor && !Number.isNaN(timeUs)) probes.push({ entry: e, sensor, timeUs });
  }
  return { rows, probes, derived: table.derived };
}

/** The message key of an entry from its id and ext fields alone (the entry is not decoded). */
function probeKey(batch: Batch, e: number): number | null {
  const id = entryField(batch, e, "id");
  const ext = entryField(batch, e, "ext");
  if (!id || !/^\d{1,10}$/.test(id)) return null;
  const n = Number(id);
  const extended = ext === undefined ? n > 0x7ff : ext === "1";
  return n <= (extended ? 0x1fffffff : 0x7ff) ? messageKey(n, extended) : null;
}
