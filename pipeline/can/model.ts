import { z } from "zod";

// The CAN database as plain data, whatever file format it came from (KCD or
// DBC): messages keyed by (arbitration id, extended), their signals with the
// exact bit layout, value type, scaling, physical range, value labels and
// multiplexing. Loaders produce it; the decode table (table.ts) compiles it.
//
// Bit positions use one numbering for both formats (the DBC one): bit k of the
// payload is bit (k % 8) of byte (k >> 3), bit 0 being the byte's least
// significant bit. `startBit` is the position of the signal's least
// significant bit for little-endian (Intel) signals and of its most
// significant bit for big-endian (Motorola) signals.

/** Payload sizes a CAN FD frame can have; classic frames have 0–8 bytes. */
export const FD_LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64] as const;

export const valueTypeSchema = z.enum(["unsigned", "signed", "float32", "float64"]);
export type ValueType = z.infer<typeof valueTypeSchema>;

const name = z
  .string()
  .min(1, "name must not be empty")
  // control characters would corrupt logs and dead-letter reasons
  .refine(
    (s) => ![...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f),
    "name must not contain control characters",
  );

export const labelSchema = z.object({
  /** Raw value (or the first of a range) the label names. */
  from: z.number().int(),
  /** Last raw value of a range (KCD LabelGroup); equal to `from` for one value. */
  to: z.number().int(),
  name: z.string(),
});
export type Label = z.infer<typeof labelSchema>;

export const signalDefSchema = z
  .object({
    name,
    startBit: z.number().int().min(0).max(511),
    length: z.number().int().min(1).max(64),
    byteOrder: z.enum(["little", "big"]),
    valueType: valueTypeSchema,
    factor: z
      .number()
      .finite()
      .refine((v) => v !== 0, "factor (slope) must not be 0"),
    offset: z.number().finite(),
    /** Physical range; a decoded value outside it is stored with status out_of_range. */
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    unit: z.string(),
    /** Value table (KCD LabelSet, DBC VAL_): names for raw values. */
    labels: z.array(labelSchema).optional(),
    /** This signal selects which multiplexed signals a frame carries. */
    multiplexer: z.boolean(),
    /** Present only when the named multiplexer signal's raw value is one of `values`. */
    muxedBy: z.object({ selector: z.string(), values: z.array(z.number().int().min(0)).min(1) }).optional(),
  })
  .superRefine((s, ctx) => {
    if (s.valueType === "float32" && s.length !== 32)
      ctx.addIssue({ code: "custom", path: ["length"], message: `an IEEE single needs 32 bits, not ${s.length}` });
    if (s.valueType === "float64" && s.length !== 64)
      ctx.addIssue({ code: "custom", path: ["length"], message: `an IEEE double needs 64 bits, not ${s.length}` });
    if (s.min !== undefined && s.max !== undefined && s.min > s.max)
      ctx.addIssue({ code: "custom", path: ["min"], message: `range minimum ${s.min} is above maximum ${s.max}` });
  });
export type SignalDef = z.infer<typeof signalDefSchema>;

export const messageDefSchema = z.object({
  name,
  id: z.number().int().min(0),
  extended: z.boolean(),
  /** A CAN FD frame (payload up to 64 bytes). */
  fd: z.boolean(),
  /** Payload length in bytes. */
  length: z.number().int().min(0).max(64),
  /** Expected reporting interval in ms (DBC GenMsgCycleTime, KCD interval), when the file gives one. */
  cycleTimeMs: z.number().int().positive().optional(),
  signals: z.array(signalDefSchema),
});
export type MessageDef = z.infer<typeof messageDefSchema>;

/** A message the loader refused: nothing of it is decoded; frames with its id are dead-lettered. */
export interface Refusal {
  message: string;
  id: number | undefined;
  extended: boolean | undefined;
  signal: string | undefined;
  reason: string;
  /** One line for the log: file, message, signal and why. */
  text: string;
}

export interface CanDb {
  file: string;
  format: "kcd" | "dbc";
  messages: MessageDef[];
  refused: Refusal[];
  /** Things that do not stop a message from decoding exactly but look wrong (overlapping signals, duplicate names). */
  warnings: string[];
}

/** Key of a message in the decode table: the id, with bit 31 set for a 29-bit id (as DBC writes it). */
export function messageKey(id: number, extended: boolean): number {
  return extended ? id + 0x80000000 : id;
}

export function formatId(id: number, extended: boolean): string {
  return extended
    ? `0x${id.toString(16).toUpperCase().padStart(8, "0")} (29-bit)`
    : `0x${id.toString(16).toUpperCase().padStart(3, "0")} (11-bit)`;
}

/** Smallest and largest raw value a signal's bits can hold (integers), as doubles. */
export function rawRange(s: Pick<SignalDef, "length" | "valueType">): { lo: number; hi: number } {
  if (s.valueType === "signed") return { lo: -(2 ** (s.length - 1)), hi: 2 ** (s.length - 1) - 1 };
  return { lo: 0, hi: 2 ** s.length - 1 };
}

/**
 * Every reason the decoder cannot decode this message exactly (empty = fine):
 * signals outside the payload, a payload length no frame can have, an id
 * its kind cannot hold, multiplexing that does not resolve. Schema problems
 * are checked by the loaders first.
 */
export function layoutProblems(m: MessageDef): { signal: string | undefined; reason: string }[] {
  const out: { signal: string | undefined; reason: string }[] = [];
  if (m.extended ? m.id > 0x1fffffff : m.id > 0x7ff)
    out.push({
      signal: undefined,
      reason: `id 0x${m.id.toString(16)} does not fit a ${m.extended ? "29" : "11"}-bit identifier`,
    });
  if (!m.fd && m.length > 8)
    out.push({ signal: undefined, reason: `a classic CAN frame carries at most 8 bytes, not ${m.length}` });
  if (m.fd && !(FD_LENGTHS as readonly number[]).includes(m.length))
    out.push({
      signal: undefined,
      reason: `${m.length} bytes is not a CAN FD payload size (${FD_LENGTHS.join(", ")})`,
    });
  const byName = new Map<string, SignalDef>();
  for (const s of m.signals) if (!byName.has(s.name)) byName.set(s.name, s);
  for (const s of m.signals) {
    const pos = signalBits(s);
    const last = Math.max(...pos);
    if (last >= m.length * 8 || Math.min(...pos) < 0)
      out.push({
        signal: s.name,
        reason: `its bits reach bit ${last} (byte ${last >> 3}) but the message has ${m.length} bytes`,
      });
    if (s.muxedBy) {
      const sel = byName.get(s.muxedBy.selector);
      if (!sel) out.push({ signal: s.name, reason: `its multiplexer "${s.muxedBy.selector}" is not a signal here` });
      else if (!sel.multiplexer || sel.valueType === "float32" || sel.valueType === "float64")
        out.push({ signal: s.name, reason: `"${sel.name}" is not an integer multiplexer signal` });
      else {
        const { hi } = rawRange({ length: sel.length, valueType: "unsigned" });
        const bad = s.muxedBy.values.filter((v) => v > hi);
        if (bad.length)
          out.push({
            signal: s.name,
            reason: `multiplexer value ${bad.join(", ")} cannot be held by the ${sel.length} bits of "${sel.name}"`,
          });
      }
    }
  }
  // a chain of multiplexers must end (no cycle)
  for (const s of m.signals) {
    const seen = new Set<string>();
    for (let cur: SignalDef | undefined = s; cur?.muxedBy; cur = byName.get(cur.muxedBy.selector)) {
      if (seen.has(cur.name)) {
        out.push({ signal: s.name, reason: "its multiplexers select each other in a cycle" });
        break;
      }
      seen.add(cur.name);
    }
  }
  return out;
}

/**
 * What looks wrong in a message that still decodes exactly as written: signals
 * present in the same frame that share bits (each is decoded from the bits
 * the file gives it), two signals with one name (the site file cannot map
 * such a name: it is ambiguous there).
 */
export function layoutWarnings(m: MessageDef): { signal: string; reason: string }[] {
  const out: { signal: string; reason: string }[] = [];
  const byName = new Map<string, SignalDef>();
  for (const s of m.signals) {
    if (byName.has(s.name)) out.push({ signal: s.name, reason: "two signals of this message have this name" });
    else byName.set(s.name, s);
  }
  const bits = m.signals.map((s) => new Set(signalBits(s)));
  for (let i = 0; i < m.signals.length; i++) {
    for (let j = i + 1; j < m.signals.length; j++) {
      const a = m.signals[i]!;
      const b = m.signals[j]!;
      if (a.name === b.name || exclusive(a, b, byName)) continue;
      const bb = bits[j]!;
      for (const p of bits[i]!)
        if (bb.has(p)) {
          out.push({ signal: b.name, reason: `its bits overlap those of "${a.name}", which the same frame carries` });
          break;
        }
    }
  }
  return out;
}

/** Two signals are never in the same frame when some multiplexer selects them with disjoint values. */
function exclusive(a: SignalDef, b: SignalDef, byName: Map<string, SignalDef>): boolean {
  const chain = (s: SignalDef) => {
    const c = new Map<string, number[]>();
    const seen = new Set<string>();
    for (
      let cur: SignalDef | undefined = s;
      cur?.muxedBy && !seen.has(cur.name);
      cur = byName.get(cur.muxedBy.selector)
    ) {
      seen.add(cur.name);
      c.set(cur.muxedBy.selector, cur.muxedBy.values);
    }
    return c;
  };
  const ca = chain(a);
  const cb = chain(b);
  for (const [sel, va] of ca) {
    const vb = cb.get(sel);
    if (vb && !va.some((v) => vb.includes(v))) return true;
  }
  return false;
}

/** Payload bit positions of a signal, least significant first. */
export function signalBits(s: Pick<SignalDef, "startBit" | "length" | "byteOrder">): number[] {
  const out: number[] = new Array(s.length);
  if (s.byteOrder === "little") {
    for (let i = 0; i < s.length; i++) out[i] = s.startBit + i;
    return out;
  }
  // Motorola: from the MSB at startBit downwards within the byte, then on to bit 7 of the next byte
  let p = s.startBit;
  for (let i = s.length - 1; i >= 0; i--) {
    out[i] = p;
    p = (p & 7) === 0 ? p + 15 : p - 1;
  }
  return out;
}
