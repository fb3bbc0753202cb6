// A CAN frame as every source delivers it, and the receive-time format of the
// raw stream: ISO 8601 UTC with exactly six fractional digits (microseconds),
// which PostgreSQL's timestamptz keeps exactly.

export interface CanFrame {
  /** Receive time, ISO 8601 UTC with microseconds. */
  ts: string;
  /** Arbitration id. */
  id: number;
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
}

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
