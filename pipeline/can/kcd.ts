import { readFileSync } from "node:fs";
import { parseKcdFile } from "socketcan/dist/parse_kcd.js";
import { z } from "zod";
import type { Site } from "../../db/site.js";
import { ConfigError } from "../runtime/errors.js";

// The CAN database (KCD) as plain data, validated, plus the decode table that
// joins it with the site file. Both are plain objects so they can be handed to
// decode threads as they are. Nothing here knows a node, a message or a sensor
// by name: another facility's KCD + site file work unchanged.

export const signalDefSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_]+$/, "signal name must be letters, digits and _"),
  /** KCD semantics (as the socketcan package's own decoder): little endian = bit offset of
   * the LSB counted from bit 0 of byte 0; big endian = offset of the MSB counted from the
   * MSB of byte 0. */
  offset: z.number().int().min(0).max(63),
  // Decoding is done in double arithmetic, exact up to 32 bits.
  length: z.number().int().min(1).max(32),
  littleEndian: z.boolean(),
  signed: z.boolean(),
  slope: z
    .number()
    .finite()
    .refine((v) => v !== 0, "slope must not be 0"),
  intercept: z.number().finite(),
  unit: z.string(),
  min: z.number().finite().optional(),
  max: z.number().finite().optional(),
});
export type SignalDef = z.infer<typeof signalDefSchema>;

export const messageDefSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_]+$/, "message name must be letters, digits and _"),
  id: z.number().int().min(0).max(0x1fffffff),
  extended: z.boolean(),
  length: z.number().int().min(1).max(8),
  signals: z.array(signalDefSchema).min(1, "a message needs at least one signal"),
});
export type MessageDef = z.infer<typeof messageDefSchema>;

export interface CanDb {
  file: string;
  messages: MessageDef[];
}

/** Parse and validate a KCD file; any problem is a ConfigError naming the file and the element. */
export function loadCanDb(file: string): CanDb {
  try {
    readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${file}: cannot read CAN database: ${(err as Error).message}`);
  }
  let network: ReturnType<typeof parseKcdFile>;
  try {
    network = parseKcdFile(file);
  } catch (err) {
    throw new ConfigError(`${file}: not a KCD NetworkDefinition: ${(err as Error).message}`);
  }
  const messages: MessageDef[] = [];
  const problems: string[] = [];
  const seenIds = new Map<number, string>();
  const seenNames = new Set<string>();
  const buses = Object.entries(network?.buses ?? {});
  if (buses.length === 0) problems.push(`${file}: NetworkDefinition: no <Bus> with messages`);
  for (const [busName, bus] of buses) {
    bus.messages.forEach((m, mi) => {
      const where = `${file}: Bus "${busName}" > Message[${mi}] "${m.name ?? "?"}"`;
      if (m.muxed) {
        problems.push(`${where}: multiplexed messages are not supported`);
        return;
      }
      const candidate = {
        name: m.name,
        id: m.id,
        extended: m.ext,
        length: m.length,
        signals: m.signals.map((s) => ({
          name: s.name,
          offset: s.bitOffset,
          length: s.bitLength,
          littleEndian: s.endianess !== "big",
          signed: s.type === "signed",
          slope: s.slope,
          intercept: s.intercept,
          unit: s.unit,
          min: s.minValue,
          max: s.maxValue,
        })),
      };
      const parsed = messageDefSchema.safeParse(candidate);
      if (!parsed.success) {
        for (const i of parsed.error.issues) {
          const [first, idx, ...rest] = i.path;
          const at =
            first === "signals" && typeof idx === "number"
              ? ` > Signal "${candidate.signals[idx]?.name ?? idx}"${rest.length ? `: ${rest.join(".")}` : ""}`
              : `: ${i.path.join(".")}`;
          problems.push(`${where}${at}: ${i.message}`);
        }
        return;
      }
      const msg = parsed.data;
      for (const s of msg.signals) {
        const end = s.littleEndian ? s.offset + s.length : s.offset + s.length;
        if (end > msg.length * 8)
          problems.push(
            `${where} > Signal "${s.name}": bits ${s.offset}..${end - 1} exceed length ${msg.length} bytes`,
          );
      }
      const dup = seenIds.get(msg.id);
      if (dup) problems.push(`${where}: id 0x${msg.id.toString(16)} already used by "${dup}"`);
      if (seenNames.has(msg.name)) problems.push(`${where}: duplicate message name`);
      seenIds.set(msg.id, msg.name);
      seenNames.add(msg.name);
      messages.push(msg);
    });
  }
  if (problems.length) throw new ConfigError(`invalid CAN database\n${problems.join("\n")}`);
  return { file, messages };
}

/** One signal as the decoder uses it; sensorId 0 = no sensor maps it. */
export interface TableSignal {
  name: string;
  offset: number;
  length: number;
  littleEndian: boolean;
  signed: boolean;
  slope: number;
  /** When 1/slope is an integer, raw / divisor is the correctly rounded decimal (0.01 → 100). */
  divisor: number;
  intercept: number;
  sensorId: number;
  /** stored value = decoded physical value + calibration_offset (site file). */
  calibration: number;
  sensorName: string;
}

export interface TableMessage {
  name: string;
  id: number;
  length: number;
  signals: TableSignal[];
  /** Number of signals that map to a sensor; 0 = frames of this message are dead letters. */
  mapped: number;
}

/** The join of CAN database and site file: arbitration id → message → signals → sensors. */
export interface DecodeTable {
  messages: Record<number, TableMessage>;
  /** Content hash of the sensor mapping; changes when the site changes. */
  version: string;
}

export interface DecodeTableResult {
  table: DecodeTable;
  /** KCD signals no sensor maps (decoded, not stored). */
  unmapped: string[];
}

function divisorOf(slope: number): number {
  if (Math.abs(slope) >= 1) return 0;
  const inv = 1 / slope;
  const r = Math.round(inv);
  return Math.abs(inv - r) < 1e-9 * Math.abs(inv) ? r : 0;
}

/**
 * Join the CAN database with the site file. Every sensor's signal must exist in
 * the KCD (ConfigError naming the site file and the sensor's path otherwise);
 * KCD signals without a sensor are returned as warnings.
 */
export function buildDecodeTable(db: CanDb, site: Site, siteFile: string): DecodeTableResult {
  const bySignal = new Map<string, { id: number; calibration: number; name: string }>();
  const problems: string[] = [];
  const known = new Set(db.messages.flatMap((m) => m.signals.map((s) => `${m.name}.${s.name}`)));
  site.devices.forEach((d, di) => {
    d.sensors.forEach((s, si) => {
      if (!known.has(s.signal))
        problems.push(`${siteFile}: devices.${di}.sensors.${si}.signal: "${s.signal}" is not a signal of ${db.file}`);
      bySignal.set(s.signal, { id: s.id, calibration: s.calibration_offset, name: s.name });
    });
  });
  if (problems.length) throw new ConfigError(`site file and CAN database disagree\n${problems.join("\n")}`);
  const messages: Record<number, TableMessage> = {};
  const unmapped: string[] = [];
  for (const m of db.messages) {
    let mapped = 0;
    const signals = m.signals.map((s): TableSignal => {
      const sensor = bySignal.get(`${m.name}.${s.name}`);
      if (sensor) mapped++;
      else unmapped.push(`${m.name}.${s.name}`);
      return {
        name: s.name,
        offset: s.offset,
        length: s.length,
        littleEndian: s.littleEndian,
        signed: s.signed,
        slope: s.slope,
        divisor: divisorOf(s.slope),
        intercept: s.intercept,
        sensorId: sensor?.id ?? 0,
        calibration: sensor?.calibration ?? 0,
        sensorName: sensor?.name ?? "",
      };
    });
    messages[m.id] = { name: m.name, id: m.id, length: m.length, signals, mapped };
  }
  const version = JSON.stringify([...bySignal.entries()].sort());
  return { table: { messages, version: hashString(version) }, unmapped };
}

function hashString(s: string): string {
  // FNV-1a, enough to notice a changed mapping.
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16);
}
