import type { CanFrame, FrameSrc } from "../../pipeline/can/frame.js";
import { frameFlags, toHex } from "../../pipeline/can/frame.js";
import { port } from "../../pipeline/runtime/stage.js";

// One raw-stream entry before it is appended: the frame and where it came
// from. can-ingest emits these; stream-append encodes them as XADD fields
// (the `can:raw` contract: ts, id, data, iface, ext, fd, src).

export interface CanEntry {
  f: CanFrame;
  src: FrameSrc;
}

export const CAN_ENTRIES = port<CanEntry[]>("can-entries");

/** The XADD field list of an entry. */
export function entryFields({ f, src }: CanEntry): string[] {
  return ["ts", f.ts, "id", String(f.id), "data", toHex(f.data), "iface", f.iface, ...frameFlags(f), "src", src];
}
