import type { TableSignal } from "./kcd.js";

// The signal codec: one signal's raw bits in a frame <-> its physical value, as
// the CAN database describes it. Decode (the worker) and encode (the simulator,
// tests) live together so they stay each other's inverse.

/** Decode one signal's physical value (before calibration) from frame bytes at `base`. */
export function decodeSignal(data: Uint8Array, base: number, s: TableSignal): number {
  let raw = 0;
  if (s.littleEndian) {
    let i = 0;
    while (i < s.length) {
      const bit = s.offset + i;
      const shift = bit & 7;
      const take = Math.min(8 - shift, s.length - i);
      raw += ((data[base + (bit >> 3)]! >> shift) & ((1 << take) - 1)) * 2 ** i;
      i += take;
    }
  } else {
    // big endian: offset is the MSB position counted from the MSB of byte 0
    for (let p = s.offset; p < s.offset + s.length; p++) {
      raw = raw * 2 + ((data[base + (p >> 3)]! >> (7 - (p & 7))) & 1);
    }
  }
  if (s.signed && raw >= 2 ** (s.length - 1)) raw -= 2 ** s.length;
  const scaled = s.divisor ? raw / s.divisor : raw * s.slope;
  return s.intercept ? scaled + s.intercept : scaled;
}

/** Encode a physical value into frame bytes (simulator, tests); the inverse of decodeSignal. */
export function encodeSignal(data: Uint8Array, s: TableSignal, physical: number): void {
  let raw = Math.round(s.divisor ? (physical - s.intercept) * s.divisor : (physical - s.intercept) / s.slope);
  const lo = s.signed ? -(2 ** (s.length - 1)) : 0;
  const hi = s.signed ? 2 ** (s.length - 1) - 1 : 2 ** s.length - 1;
  raw = Math.min(hi, Math.max(lo, raw));
  if (raw < 0) raw += 2 ** s.length;
  if (s.littleEndian) {
    for (let i = 0; i < s.length; i++) {
      const bit = s.offset + i;
      const v = Math.floor(raw / 2 ** i) % 2;
      data[bit >> 3] = (data[bit >> 3]! & ~(1 << (bit & 7))) | (v << (bit & 7));
    }
  } else {
    for (let k = 0; k < s.length; k++) {
      const p = s.offset + s.length - 1 - k;
      const v = Math.floor(raw / 2 ** k) % 2;
      data[p >> 3] = (data[p >> 3]! & ~(1 << (7 - (p & 7)))) | (v << (7 - (p & 7)));
    }
  }
}
