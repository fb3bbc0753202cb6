import type { Site } from "../../db/site.js";
import type { CanDb } from "./model.js";

/**
 * Each sensor's expected reporting interval in seconds from its CAN message's
 * cycle time (KCD `interval`, DBC `GenMsgCycleTime`), for the sensors whose
 * message gives one. The site file's `interval_s` wins over it (db/site.ts).
 */
export function cycleIntervals(db: CanDb, site: Site): Map<number, number> {
  const byRef = new Map<string, number | null>();
  for (const m of db.messages)
    for (const s of m.signals) {
      const ref = `${m.name}.${s.name}`;
      // a name two messages spell alike has no one cycle time
      byRef.set(ref, byRef.has(ref) ? null : (m.cycleTimeMs ?? null));
    }
  const out = new Map<number, number>();
  for (const d of site.devices)
    for (const s of d.sensors) {
      const ms = byRef.get(s.signal);
      if (ms) out.set(s.id, ms / 1000);
    }
  return out;
}
