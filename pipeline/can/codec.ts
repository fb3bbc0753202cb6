import { type MessageDef, rawRange, type SignalDef, signalBits } from "./model.js";

// The signal codec: one signal's bits in a payload <-> its physical value, as
// the CAN database describes it (either byte order, unsigned/signed integers
// of 1–64 bits, IEEE single and double, factor and offset). A signal is
// compiled once into byte chunks, so decoding a frame is a few shifts and
// masks per signal whatever its layout; decode (worker, scanner) and encode
// (simulator, command frames) share the compiled form so they stay each
// other's inverse. Compiled signals are plain data (they travel to decode
// threads).

/** A value the signal cannot carry (encode), e.g. outside its raw range or not finite. */
export class EncodeError extends Error {
  override name = "EncodeError";
}

export const KIND_UNSIGNED = 0;
export const KIND_SIGNED = 1;
export const KIND_FLOAT32 = 2;
export const KIND_FLOAT64 = 3;

/** Chunk stride in SignalCodec.lo / .hi: byte, shift, mask, bit position in the 32-bit half, 2^position. */
const C = 5;

export interface SignalCodec {
  length: number;
  kind: number;
  /** 2^(length-1) and 2^length for the sign of integers up to 53 bits. */
  signBit: number;
  span: number;
  /** An integer of at most 32 bits: all its chunks are in `lo` (the common, fast case). */
  narrow: boolean;
  /** Chunks of value bits 0..31: [byte, shift, mask, pos, 2^pos] per chunk. */
  lo: number[];
  /** Chunks of value bits 32..63, positions relative to bit 32. */
  hi: number[];
  factor: number;
  offset: number;
  /** When 1/factor is an integer, raw / divisor is the correctly rounded decimal (0.01 → 100); else 0. */
  divisor: number;
  /** offset × divisor when that is an integer: (raw + it) / divisor rounds once; else NaN. */
  scaledOffset: number;
}

function divisorOf(factor: number): number {
  if (Math.abs(factor) >= 1) return 0;
  const inv = 1 / factor;
  const r = Math.round(inv);
  return Math.abs(inv - r) < 1e-9 * Math.abs(inv) ? r : 0;
}

const KINDS = { unsigned: KIND_UNSIGNED, signed: KIND_SIGNED, float32: KIND_FLOAT32, float64: KIND_FLOAT64 };

export function compileSignal(s: SignalDef): SignalCodec {
  const bits = signalBits(s);
  const lo: number[] = [];
  const hi: number[] = [];
  // group value bits that sit next to each other in one byte (and one 32-bit half) into a chunk
  let i = 0;
  while (i < bits.length) {
    const p = bits[i]!;
    const half = i < 32 ? 0 : 1;
    let w = 1;
    while (i + w < bits.length && (i + w < 32 ? 0 : 1) === half && bits[i + w] === p + w && (p + w) >> 3 === p >> 3)
      w++;
    const pos = i - half * 32;
    (half ? hi : lo).push(p >> 3, p & 7, (1 << w) - 1, pos, 2 ** pos);
    i += w;
  }
  const divisor = s.valueType === "float32" || s.valueType === "float64" ? 0 : divisorOf(s.factor);
  const so = s.offset * divisor;
  const kind = KINDS[s.valueType];
  return {
    length: s.length,
    kind,
    signBit: 2 ** (s.length - 1),
    span: 2 ** s.length,
    narrow: kind <= KIND_SIGNED && s.length <= 32,
    lo,
    hi,
    factor: s.factor,
    offset: s.offset,
    divisor,
    scaledOffset:
      divisor && Math.abs(so - Math.round(so)) < 1e-9 && Math.abs(so) < 2 ** 52 ? Math.round(so) : Number.NaN,
  };
}

function sum(d: Uint8Array, base: number, ch: number[]): number {
  let v = 0;
  for (let k = 0; k < ch.length; k += C) v += ((d[base + ch[k]!]! >> ch[k + 1]!) & ch[k + 2]!) * ch[k + 4]!;
  return v;
}

const scratch = new DataView(new ArrayBuffer(8));
const TWO_32 = 4_294_967_296;

/**
 * The raw value of a signal: the integer (sign applied) or the IEEE value.
 * NaN for an integer wider than 53 bits whose value a double cannot hold
 * exactly (beyond 2^53 only every second, fourth … integer has a double).
 */
export function rawValue(d: Uint8Array, base: number, c: SignalCodec): number {
  const lo = sum(d, base, c.lo);
  if (c.kind === KIND_FLOAT32) {
    scratch.setUint32(0, lo);
    return scratch.getFloat32(0);
  }
  const hi = c.hi.length ? sum(d, base, c.hi) : 0;
  if (c.kind === KIND_FLOAT64) {
    scratch.setUint32(0, hi);
    scratch.setUint32(4, lo);
    return scratch.getFloat64(0);
  }
  if (c.length <= 53) {
    const v = hi * TWO_32 + lo;
    return c.kind === KIND_SIGNED && v >= c.signBit ? v - c.span : v;
  }
  let big = (BigInt(hi) << 32n) | BigInt(lo);
  if (c.kind === KIND_SIGNED) big = BigInt.asIntN(c.length, big);
  const v = Number(big);
  return BigInt(v) === big ? v : Number.NaN;
}

/** The physical value: raw × factor + offset (the integer case rounded as the decimal the file means). */
export function physicalValue(d: Uint8Array, base: number, c: SignalCodec): number {
  let raw: number;
  if (c.narrow) {
    // inline of sum() for the common case: most sensor signals are integers of up to 32 bits
    const ch = c.lo;
    raw = 0;
    for (let k = 0; k < ch.length; k += C) raw += ((d[base + ch[k]!]! >> ch[k + 1]!) & ch[k + 2]!) * ch[k + 4]!;
    if (c.kind === KIND_SIGNED && raw >= c.signBit) raw -= c.span;
  } else {
    raw = rawValue(d, base, c);
    if (c.kind >= KIND_FLOAT32) return c.factor === 1 && c.offset === 0 ? raw : raw * c.factor + c.offset;
  }
  if (c.divisor) {
    // one rounding: 9234 × 0.1 − 800 is 123.4, not 923.4 − 800 = 123.39999999999998
    if (!Number.isNaN(c.scaledOffset) && Math.abs(raw) < 2 ** 52) return (raw + c.scaledOffset) / c.divisor;
    return raw / c.divisor + c.offset;
  }
  const scaled = raw * c.factor;
  return c.offset ? scaled + c.offset : scaled;
}

function put(d: Uint8Array, ch: number[], half: number): void {
  for (let k = 0; k < ch.length; k += C) {
    const at = ch[k]!;
    const shift = ch[k + 1]!;
    const mask = ch[k + 2]!;
    const part = Math.floor(half / ch[k + 4]!) & mask;
    d[at] = (d[at]! & ~(mask << shift)) | (part << shift);
  }
}

/** Write a raw value (integer in the signal's range, or the IEEE value for floats) into the payload. */
export function encodeRaw(d: Uint8Array, c: SignalCodec, raw: number | bigint): void {
  if (c.kind === KIND_FLOAT32 || c.kind === KIND_FLOAT64) {
    const v = Number(raw);
    if (c.kind === KIND_FLOAT32) {
      scratch.setFloat32(0, v);
      put(d, c.lo, scratch.getUint32(0));
    } else {
      scratch.setFloat64(0, v);
      put(d, c.hi, scratch.getUint32(0));
      put(d, c.lo, scratch.getUint32(4));
    }
    return;
  }
  const big = typeof raw === "bigint" ? raw : BigInt(raw);
  const lo = c.kind === KIND_SIGNED ? -(1n << BigInt(c.length - 1)) : 0n;
  const hi = c.kind === KIND_SIGNED ? (1n << BigInt(c.length - 1)) - 1n : (1n << BigInt(c.length)) - 1n;
  if (big < lo || big > hi)
    throw new EncodeError(
      `raw value ${big} does not fit ${c.length} ${c.kind === KIND_SIGNED ? "signed" : "unsigned"} bits`,
    );
  const bits = BigInt.asUintN(c.length, big);
  put(d, c.lo, Number(bits & 0xffffffffn));
  if (c.hi.length) put(d, c.hi, Number(bits >> 32n));
}

/** The raw value that encodes a physical value; EncodeError when the signal cannot carry it. */
export function rawOf(c: SignalCodec, physical: number): number {
  if (!Number.isFinite(physical) && c.kind < KIND_FLOAT32) throw new EncodeError(`${physical} is not a finite number`);
  if (c.kind >= KIND_FLOAT32) return c.factor === 1 && c.offset === 0 ? physical : (physical - c.offset) / c.factor;
  const raw = Math.round(c.divisor ? (physical - c.offset) * c.divisor : (physical - c.offset) / c.factor);
  // Object.is: -0 rounds to a raw 0 like +0
  return Object.is(raw, -0) ? 0 : raw;
}

/** Encode a physical value into the payload; EncodeError when it is outside what the bits can hold. */
export function encodeSignal(d: Uint8Array, c: SignalCodec, physical: number): void {
  encodeRaw(d, c, rawOf(c, physical));
}

/** Physical limits of the raw range (for clamping a value before encoding it). */
export function physicalLimits(c: SignalCodec): { lo: number; hi: number } {
  if (c.kind >= KIND_FLOAT32) return { lo: -Number.MAX_VALUE, hi: Number.MAX_VALUE };
  const r = rawRange({ length: c.length, valueType: c.kind === KIND_SIGNED ? "signed" : "unsigned" });
  const a = r.lo * c.factor + c.offset;
  const b = r.hi * c.factor + c.offset;
  return { lo: Math.min(a, b), hi: Math.max(a, b) };
}

/**
 * Encode a whole frame of a message from physical values by signal name.
 * Multiplexer signals not given are set so that every given multiplexed
 * signal is present; values that need different multiplexer values, unknown
 * names and values a signal cannot carry are an EncodeError. Signals not
 * given are 0 (raw). For command frames (automation) and tests.
 */
export function encodeMessage(m: MessageDef, values: Readonly<Record<string, number>>): Uint8Array {
  const data = new Uint8Array(m.length);
  const byName = new Map(m.signals.map((s) => [s.name, s]));
  for (const k of Object.keys(values)) if (!byName.has(k)) throw new EncodeError(`${m.name} has no signal "${k}"`);
  const selectors = new Map<string, number>();
  for (const s of m.signals) if (s.multiplexer && values[s.name] !== undefined) selectors.set(s.name, values[s.name]!);
  // walk each given multiplexed signal up its multiplexer chain, choosing selector values
  for (const k of Object.keys(values)) {
    for (let cur = byName.get(k); cur?.muxedBy; cur = byName.get(cur.muxedBy.selector)) {
      const { selector, values: allowed } = cur.muxedBy;
      const have = selectors.get(selector);
      if (have === undefined) selectors.set(selector, allowed[0]!);
      else if (!allowed.includes(have))
        throw new EncodeError(
          `${m.name}.${cur.name} needs ${selector} in [${allowed.join(", ")}] but the frame has ${selector} = ${have}`,
        );
    }
  }
  for (const s of m.signals) {
    const given = s.multiplexer ? selectors.get(s.name) : values[s.name];
    if (given === undefined) continue;
    try {
      // a multiplexer value is raw, like the mN values that refer to it
      if (s.multiplexer) encodeRaw(data, compileSignal(s), given);
      else encodeSignal(data, compileSignal(s), given);
    } catch (err) {
      if (err instanceof EncodeError) throw new EncodeError(`${m.name}.${s.name}: ${err.message}`);
      throw err;
    }
  }
  return data;
}
