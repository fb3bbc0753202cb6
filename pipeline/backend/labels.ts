import { type ValueLabels, valueLabels } from "../can/labels.js";
import type { SensorSignal } from "../can/table.js";

// The names of status values (CAN value tables) per sensor, built once from
// the CAN database and site file the API loaded at start-up. A route asks for
// a sensor's table once and names each value with one Map probe; sensors
// without a table (most of them, and every sensor not on a CAN signal) cost
// nothing per row.
export class SensorLabels {
  private readonly bySensor = new Map<number, ValueLabels>();

  constructor(sensors: readonly SensorSignal[]) {
    for (const s of sensors) {
      const labels = valueLabels(s.signal, s.calibration);
      if (labels) this.bySensor.set(s.sensorId, labels);
    }
  }

  /** The sensor's value table, or undefined when its signal has none. */
  get(sensorId: number): ValueLabels | undefined {
    return this.bySensor.get(sensorId);
  }

  /** Number of sensors whose signal has a value table. */
  get size(): number {
    return this.bySensor.size;
  }
}
