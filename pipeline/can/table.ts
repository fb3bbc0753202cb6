import type { Site } from "../../db/site.js";
import { ConfigError } from "../runtime/errors.js";
import { compileSignal, physicalValue, rawValue, type SignalCodec } from "./codec.js";
import { COMMAND_SEQ, nodeStatusNames, STATUS_SAFE } from "./commands.js";
import { type CanDb, type Label, messageKey, type SignalDef } from "./model.js";

// The decode table: the CAN database joined with the site file and compiled.
// It holds, per message (keyed by id and extended flag), only the signals
// that map to a sensor plus the multiplexers that select them, so it stays
// small however large the facility's CAN database is (it is handed to decode
// threads with every batch). decodeMessage() is the per-frame decode that the
// scanner's live values and the worker's decode stage both call.

/** One signal as the decoder uses it; sensorId 0 = a multiplexer no sensor maps. */
export interface TableSignal extends SignalCodec {
  name: string;
  sensorId: number;
  /** stored value = decoded physical value + calibration_offset (site file). */
  calibration: number;
  sensorName: string;
  /** Physical range, widened by a rounding tolerance; ±Infinity when the file gives none. */
  min: number;
  max: number;
  /** Index in TableMessage.signals of the multiplexer that selects this signal, -1 = always present. */
  mux: number;
  /** Raw multiplexer values that select this signal. */
  muxValues: number[];
  multiplexer: boolean;
}

export interface TableMessage {
  name: string;
  id: number;
  extended: boolean;
  /** A CAN FD message. */
  fd: boolean;
  length: number;
  /** Multiplexers before the signals they select. */
  signals: TableSignal[];
  /** Number of signals that map to a sensor; 0 = frames of this message are dead letters. */
  mapped: number;
  /** Any signal multiplexed (decode checks selectors). */
  muxed: boolean;
}

/** The join of CAN database and site file: (id, extended) → message → signals → sensors. */
export interface DecodeTable {
  /** Keyed by messageKey(id, extended). */
  messages: Record<number, TableMessage>;
  /** Messages the CAN database refused, by key: their frames are dead letters naming the reason. */
  refused: Record<number, string>;
  /** Content hash of the sensor mapping; changes when the site changes. */
  version: string;
  /** The rooms' derived sensors (site file `derived`), computed by stages/derived.ts from the same batch. */
  derived: DerivedInputs[];
}

/** One room's derived sensors and their inputs, as sensor ids; 0 = that derived kind is not declared. */
export interface DerivedInputs {
  room: number;
  temperature: number;
  humidity: number;
  leafOffsetC: number;
  airVpd: number;
  leafVpd: number;
  dewPoint: number;
}

function derivedInputs(site: Site): DerivedInputs[] {
  return site.derived.map((g) => {
    const id = (kind: string) => g.sensors.find((s) => s.kind === kind)?.id ?? 0;
    return {
      room: g.room_id,
      temperature: g.temperature_sensor,
      humidity: g.humidity_sensor,
      leafOffsetC: g.leaf_offset_c ?? 0,
      airVpd: id("air_vpd"),
      leafVpd: id("leaf_vpd"),
      dewPoint: id("dew_point"),
    };
  });
}

/** A sensor of the site file with the CAN database signal it reads (the API names its values from it). */
export interface SensorSignal {
  sensorId: number;
  message: string;
  signal: SignalDef;
  calibration: number;
}

export interface DecodeTableResult {
  table: DecodeTable;
  /** CAN database signals no sensor maps (not decoded, not stored). */
  unmapped: string[];
  /**
   * Signals that are not readings by design, so not unmapped: those of the
   * site's command messages (the platform sends them) and the seq/safe fields
   * of the nodes' status messages.
   */
  protocol: string[];
  /** Every mapped sensor with its full signal definition (value table included); kept out of `table`, which travels to decode threads. */
  sensors: SensorSignal[];
}

/** Map a site file "Message.Signal" to the message and signal, even when names contain dots. */
function signalIndex(db: CanDb): Map<string, { m: number; s: number } | "ambiguous"> {
  const idx = new Map<string, { m: number; s: number } | "ambiguous">();
  db.messages.forEach((m, mi) => {
    m.signals.forEach((s, si) => {
      const k = `${m.name}.${s.name}`;
      idx.set(k, idx.has(k) ? "ambiguous" : { m: mi, s: si });
    });
  });
  return idx;
}

function tolerance(bound: number): number {
  // decimal bounds (85, 6553.5) against values computed in binary
  return 1e-9 * Math.max(1, Math.abs(bound));
}

/**
 * Join the CAN database with the site file. Every sensor's signal must exist in
 * the CAN database (ConfigError naming the site file and the sensor's path
 * otherwise, also when the signal is in a refused message); signals without a
 * sensor are returned as warnings.
 */
export function buildDecodeTable(db: CanDb, site: Site, siteFile: string): DecodeTableResult {
  const idx = signalIndex(db);
  const refusedByName = new Map(db.refused.map((r) => [r.message, r]));
  const wanted = new Map<string, { id: number; calibration: number; name: string }>();
  const problems: string[] = [];
  site.devices.forEach((d, di) => {
    d.sensors.forEach((s, si) => {
      const at = `${siteFile}: devices.${di}.sensors.${si}.signal`;
      const hit = idx.get(s.signal);
      const refused = [...refusedByName.values()].find((r) => s.signal.startsWith(`${r.message}.`));
      if (hit === "ambiguous")
        problems.push(`${at}: "${s.signal}" names more than one signal of ${db.file} (names with dots)`);
      else if (!hit && refused) problems.push(`${at}: "${s.signal}" is in a refused message: ${refused.text}`);
      else if (!hit) problems.push(`${at}: "${s.signal}" is not a signal of ${db.file}`);
      else if (wanted.has(s.signal)) problems.push(`${at}: "${s.signal}" is mapped by two sensors`);
      wanted.set(s.signal, { id: s.id, calibration: s.calibration_offset, name: s.name });
    });
  });
  if (problems.length) throw new ConfigError(`site file and CAN database disagree\n${problems.join("\n")}`);
  const messages: Record<number, TableMessage> = {};
  const unmapped: string[] = [];
  const protocol: string[] = [];
  const commandMessages = new Set(site.actuators.map((a) => a.command.slice(0, a.command.lastIndexOf("."))));
  const statusMessages = nodeStatusNames(site);
  const sensors: SensorSignal[] = [];
  for (const m of db.messages) {
    const byName = new Map(m.signals.map((s) => [s.name, s]));
    const keep = new Set<string>();
    for (const s of m.signals) {
      const sensor = wanted.get(`${m.name}.${s.name}`);
      if (!sensor) {
        const byDesign =
          commandMessages.has(m.name) ||
          (statusMessages.has(m.name) && (s.name === COMMAND_SEQ || s.name === STATUS_SAFE));
        (byDesign ? protocol : unmapped).push(`${m.name}.${s.name}`);
        continue;
      }
      sensors.push({ sensorId: sensor.id, message: m.name, signal: s, calibration: sensor.calibration });
      // a mapped signal needs its multiplexer chain
      for (
        let cur: typeof s | undefined = s;
        cur && !keep.has(cur.name);
        cur = cur.muxedBy && byName.get(cur.muxedBy.selector)
      )
        keep.add(cur.name);
    }
    // multiplexers first: a signal's selector is decoded before the signal
    const depth = (name: string): number => {
      const s = byName.get(name);
      return s?.muxedBy ? 1 + depth(s.muxedBy.selector) : 0;
    };
    const order = m.signals.filter((s) => keep.has(s.name)).sort((a, b) => depth(a.name) - depth(b.name));
    const pos = new Map(order.map((s, i) => [s.name, i]));
    let mapped = 0;
    const signals = order.map((s): TableSignal => {
      const sensor = wanted.get(`${m.name}.${s.name}`);
      if (sensor) mapped++;
      return {
        ...compileSignal(s),
        name: s.name,
        sensorId: sensor?.id ?? 0,
        calibration: sensor?.calibration ?? 0,
        sensorName: sensor?.name ?? "",
        min: s.min === undefined ? Number.NEGATIVE_INFINITY : s.min - tolerance(s.min),
        max: s.max === undefined ? Number.POSITIVE_INFINITY : s.max + tolerance(s.max),
        mux: s.muxedBy ? (pos.get(s.muxedBy.selector) ?? -1) : -1,
        muxValues: s.muxedBy?.values ?? [],
        multiplexer: s.multiplexer,
      };
    });
    messages[messageKey(m.id, m.extended)] = {
      name: m.name,
      id: m.id,
      extended: m.extended,
      fd: m.fd,
      length: m.length,
      signals,
      mapped,
      muxed: signals.some((s) => s.mux >= 0),
    };
  }
  const refused: Record<number, string> = {};
  for (const r of db.refused)
    if (r.id !== undefined && r.extended !== undefined) refused[messageKey(r.id, r.extended)] = r.text;
  const derived = derivedInputs(site);
  const version = JSON.stringify([[...wanted.entries()].sort(), derived]);
  return { table: { messages, refused, version: hashString(version), derived }, unmapped, protocol, sensors };
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

/** The message of a frame, or why the frame cannot be used. */
export function frameMessage(table: DecodeTable, key: number, length: number): TableMessage | string {
  const m = table.messages[key];
  if (!m) {
    const refused = table.refused[key];
    const id = key >= 0x80000000 ? `0x${(key - 0x80000000).toString(16)} (29-bit)` : `0x${key.toString(16)}`;
    return refused ? `message refused by the CAN database: ${refused}` : `unknown arbitration id ${id}`;
  }
  if (length < m.length) return `data length ${length} < ${m.length} bytes of ${m.name}`;
  if (m.mapped === 0) return `no sensor for any signal of ${m.name}`;
  return m;
}

/** Reusable output of decodeMessage (one per decoder; sized for the largest message). */
export interface DecodedSignals {
  count: number;
  signal: TableSignal[];
  /** Index of each decoded signal in TableMessage.signals. */
  index: Uint32Array;
  /** Physical value, before calibration. */
  value: Float64Array;
  /** 1 = outside the signal's physical range. */
  outOfRange: Uint8Array;
  /** Scratch: raw value of each signal of the message (multiplexers). */
  raw: Float64Array;
  present: Uint8Array;
}

export function decodedSignals(table: DecodeTable): DecodedSignals {
  let n = 1;
  for (const m of Object.values(table.messages)) n = Math.max(n, m.signals.length);
  return {
    count: 0,
    signal: new Array(n),
    index: new Uint32Array(n),
    value: new Float64Array(n),
    outOfRange: new Uint8Array(n),
    raw: new Float64Array(n),
    present: new Uint8Array(n),
  };
}

/**
 * Decode the mapped signals a frame of message `m` carries (payload at
 * `base`) into `out`. Returns null, or the dead-letter reason when a value is
 * not a finite number a double holds exactly (IEEE NaN/Infinity, an integer
 * wider than 53 bits beyond 2^53).
 */
export function decodeMessage(m: TableMessage, d: Uint8Array, base: number, out: DecodedSignals): string | null {
  const sigs = m.signals;
  let n = 0;
  if (!m.muxed) {
    // no multiplexing: every signal of the table is a mapped one
    for (let i = 0; i < sigs.length; i++) {
      const s = sigs[i]!;
      const v = physicalValue(d, base, s);
      if (!Number.isFinite(v)) {
        out.count = 0;
        return `value of ${m.name}.${s.name} is not a finite number a double holds exactly`;
      }
      out.signal[n] = s;
      out.index[n] = i;
      out.value[n] = v;
      out.outOfRange[n] = v < s.min || v > s.max ? 1 : 0;
      n++;
    }
    out.count = n;
    return null;
  }
  for (let i = 0; i < sigs.length; i++) {
    const s = sigs[i]!;
    if (m.muxed) {
      const present = s.mux < 0 || (out.present[s.mux] === 1 && s.muxValues.includes(out.raw[s.mux]!));
      out.present[i] = present ? 1 : 0;
      if (!present) continue;
      if (s.multiplexer) out.raw[i] = rawValue(d, base, s);
    }
    if (!s.sensorId) continue;
    const v = physicalValue(d, base, s);
    if (!Number.isFinite(v)) {
      out.count = 0;
      return `value of ${m.name}.${s.name} is not a finite number a double holds exactly`;
    }
    out.signal[n] = s;
    out.index[n] = i;
    out.value[n] = v;
    out.outOfRange[n] = v < s.min || v > s.max ? 1 : 0;
    n++;
  }
  out.count = n;
  return null;
}

/** The name of a raw value in a value table, if it has one. */
export function labelOf(labels: readonly Label[] | undefined, raw: number): string | undefined {
  return labels?.find((l) => raw >= l.from && raw <= l.to)?.name;
}
