import { READING_STATUS, type ReadingStatus } from "../db/readings.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import { UnrecoverableError } from "../pipeline/runtime/errors.js";
import type { Batch } from "../pipeline/runtime/stage.js";
import { packFrames } from "./decode/pack.js";
import { decodePacked, unpackSignals } from "./decode/signals.js";
import { Deriver } from "./derived.js";
import { resolveReadings } from "./resolve-sensor.js";

// The rows the worker stores for one raw-stream entry, computed by the very
// decode, resolve-sensor and derived code the worker runs, without Redis or
// PostgreSQL: the reconciliation key of the tests and benchmarks. Derived rows
// are those of the entry's own humidity partner (no memory of earlier entries:
// exact for rooms whose temperature and humidity share a CAN frame).

export interface ExpectedRow {
  sensor_id: number;
  /** The frame's ts, unchanged (ISO 8601 UTC, microseconds). */
  time: string;
  value: number;
  status: ReadingStatus;
}

/**
 * The rows of one entry (fields ts, id, data, src as in pipeline/runtime/keys.ts),
 * or an UnrecoverableError with the dead-letter reason.
 */
export function expectedRows(
  table: DecodeTable,
  frame: { ts: string; id: string | number; data: string; src?: string },
): ExpectedRow[] {
  const packed = packFrames([frame]);
  const out = decodePacked({ buf: packed.buf, n: 1, table });
  const dead = out.dead[0];
  if (dead) throw new UnrecoverableError(dead[1], dead[1]);
  const fields = ["ts", frame.ts, "id", String(frame.id), "data", frame.data];
  if (frame.src !== undefined) fields.push("src", frame.src);
  const batch: Batch = { seq: 0, ids: ["0-1"], fields: [fields], deliveries: null, dead: new Map(), skip: new Set() };
  const { rows } = resolveReadings(batch, unpackSignals(out, table));
  const d = batch.dead.get(0);
  if (d) throw new UnrecoverableError(d.reason, d.reason);
  new Deriver(0).add(table.derived, rows);
  return Array.from({ length: rows.count }, (_, r) => ({
    sensor_id: rows.sensor[r]!,
    time: frame.ts,
    value: rows.value[r]!,
    status: READING_STATUS[rows.status[r]!] ?? null,
  }));
}
