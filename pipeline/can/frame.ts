// A CAN frame as every source delivers it, and the receive-time format of the
// raw stream: ISO 8601 UTC with exactly six fractional digits (microseconds),
// which PostgreSQL's timestamptz keeps exactly.

export interface CanFrame {
  /** Receive time, ISO 8601 UTC with microseconds. */
  ts: string;
  /** Arbitration id (11 or 29 bits, see `ext`). */
  id: number;
  /** A 29-bit (extended) id; absent or false = 11-bit. 0x0A0 and 0x000000A0 are different messages. */
  ext?: boolean | undefined;
  /** A CAN FD frame (payload up to 64 bytes); absent or false = classic CAN (up to 8). */
  fd?: boolean | undefined;
  data: Uint8Array;
  iface: string;
}

/**
 * Where frames come from, as every raw-stream entry says in its `src` field:
 * the live bus, the simulator, or a recorded log. Only "socketcan" readings are
 * facts of the facility; the others are stored with their provenance.
 */
export type FrameSrc = "socketcan" | "simulator" | "replay";

/** A source of frames: an async iterator of chunks of frames (chunks keep per-frame overhead low). */
export interface FrameSource {
  /** For logs and health, e.g. "socketcan:can0". */
  name: string;
  src: FrameSrc;
  /** True when the source can wait (simulator, replay); a bus cannot, its overflow is dropped. */
  pausable: boolean;
  frames(): AsyncIterable<CanFrame[]>;
  close(): void;
  /**
   * The send side: puts one frame on the bus and resolves when it is written
   * (rejects naming why not). Absent = a source without a bus (a replayed log).
   */
  transmit?(frame: OutgoingFrame): Promise<void>;
}

/** A frame to transmit. */
export type OutgoingFrame = Pick<CanFrame, "id" | "ext" | "fd" | "data">;

/** Epoch microseconds → "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
export function isoMicros(epochMicros: number): string {
  const ms = Math.floor(epochMicros / 1000);
  const us = epochMicros - ms * 1000;
  return `${new Date(ms).toISOString().slice(0, 23)}${String(us).padStart(3, "0")}Z`;
}

/** "YYYY-MM-DDTHH:MM:SS.ffffffZ" → epoch microseconds. */
export function parseIsoMicros(ts: string): number {
  return Date.parse(`${ts.slice(0, 23)}Z`) * 1000 + Number(ts.slice(23, 26));
}

export function toHex(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("hex").toUpperCase();
}

/**
 * The raw-stream entry fields of a frame after ts/id/data/iface: `ext` "1" for
 * a 29-bit id and `fd` "1" for a CAN FD frame (absent otherwise, as entries
 * of older scanners are). See ops/IMPLEMENTATION_SUMMARY.md, Redis key contract.
 */
export function frameFlags(f: CanFrame): string[] {
  if (f.ext) return f.fd ? ["ext", "1", "fd", "1"] : ["ext", "1"];
  return f.fd ? ["fd", "1"] : [];
}
