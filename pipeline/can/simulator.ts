import type { Site } from "../../db/site.js";
import { encodeRaw, encodeSignal, physicalLimits } from "./codec.js";
import { type CanFrame, type FrameSource, isoMicros } from "./frame.js";
import type { DecodeTable, TableMessage, TableSignal } from "./table.js";

// The simulator: for every message of the CAN database that carries a sensor
// of the site file, one frame per simulated second, so every sensor reports
// once a second. Values follow plausible day/night curves per room, derived
// from the room's targets (a room without a target temperature is treated as
// outdoors: colder, wider swing) plus a little deterministic noise. The signal
// *kind* (temperature, rh, co2 …) is recognised from the signal name; unknown
// signals get a gentle curve inside their physical range. A multiplexed
// message is sent once per multiplexer value its sensors need, so every
// sensor still reports once a second. Frames keep the message's id kind
// (11/29-bit) and CAN FD flag. No node or sensor list is written here:
// another site + CAN database (KCD or DBC) simulate without code changes.

export interface SimOptions {
  table: DecodeTable;
  site: Site;
  /** First simulated instant, epoch ms. */
  startMs: number;
  /** Simulated seconds per real second. */
  speed: number;
  /** Stop after this many simulated seconds (undefined = forever). */
  durationS?: number | undefined;
  iface: string;
}

interface RoomState {
  temp: number;
  rh: number;
  co2: number;
  par: number;
  wind: number;
  pressure: number;
  moisture: number;
}

/** Deterministic noise in [-1, 1] from two integers. */
function noise(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return ((h >>> 0) / 0xffffffff) * 2 - 1;
}

function roomState(room: Site["rooms"][number] | undefined, epochS: number, salt: number): RoomState {
  const indoor = room?.target_temp !== undefined;
  const hour = (((epochS / 3600) % 24) + 24) % 24;
  // 1 at 14:00, -1 at 02:00
  const day = Math.cos(((hour - 14) / 24) * 2 * Math.PI);
  const light = Math.max(0, Math.sin(((hour - 6) / 12) * Math.PI)); // 06:00–18:00
  const n = (k: number) => noise(salt * 31 + k, Math.floor(epochS));
  const base = room?.target_temp ?? 12;
  const temp = base + (indoor ? 2 : 6) * day + 0.05 * n(1);
  const rh = Math.min(98, Math.max(15, (indoor ? 62 : 72) - (indoor ? 8 : 15) * day + 0.3 * n(2)));
  return {
    temp,
    rh,
    co2: indoor ? 900 - 250 * light + 200 * (1 - light) * 0.5 + 5 * n(3) : 420 + 3 * n(3),
    par: light === 0 ? 0 : (indoor ? 850 : 1400) * light + 5 * n(4) * light,
    wind: Math.max(0, (indoor ? 0.3 : 3) + (indoor ? 0.1 : 2) * Math.sin(epochS / 5400) + 0.2 * Math.abs(n(5))),
    pressure: 1013 + 6 * Math.sin(epochS / 86400 / 3) + 0.05 * n(6),
    moisture: 45 + 10 * Math.cos((epochS / 86400) * 2 * Math.PI) + 0.2 * n(7),
  };
}

function svp(t: number): number {
  return 0.6108 * Math.exp((17.27 * t) / (t + 237.3));
}

/** The physical value of a signal, from its name and the room state. */
function signalValue(name: string, s: RoomState, lo: number, hi: number, epochS: number): number {
  const k = name.toLowerCase();
  if (k.includes("wet_bulb")) {
    const { temp: t, rh } = s;
    return (
      t * Math.atan(0.151977 * Math.sqrt(rh + 8.313659)) +
      Math.atan(t + rh) -
      Math.atan(rh - 1.676331) +
      0.00391838 * rh ** 1.5 * Math.atan(0.023101 * rh) -
      4.686035
    );
  }
  if (k.includes("dew")) {
    const g = Math.log(s.rh / 100) + (17.62 * s.temp) / (243.12 + s.temp);
    return (243.12 * g) / (17.62 - g);
  }
  if (k.includes("vpd")) return svp(s.temp) * (1 - s.rh / 100);
  if (k.includes("leaf")) return s.temp - 1.2;
  if (k.includes("substrate_temp") || k.includes("soil_temp")) return s.temp - 2;
  if (k.includes("temp") || k.includes("dry_bulb")) return s.temp;
  if (k.includes("moist")) return s.moisture;
  if (k === "rh" || k.includes("humid")) return s.rh;
  if (k.includes("co2")) return s.co2;
  if (k.includes("par") || k.includes("light")) return s.par;
  if (k.includes("wind")) return s.wind;
  if (k.includes("press")) return s.pressure;
  return lo + (hi - lo) * (0.5 + 0.25 * Math.sin(epochS / 3600));
}

/** Per message: the room of the node that produces its sensors. */
function messageRooms(
  table: DecodeTable,
  site: Site,
): Map<TableMessage, { room: Site["rooms"][number] | undefined; salt: number }> {
  const roomOfSensor = new Map<number, { room: Site["rooms"][number] | undefined; salt: number }>();
  for (const d of site.devices) {
    const room = site.rooms.find((r) => r.id === d.room_id);
    for (const s of d.sensors) roomOfSensor.set(s.id, { room, salt: d.node_id });
  }
  const out = new Map<TableMessage, { room: Site["rooms"][number] | undefined; salt: number }>();
  for (const m of Object.values(table.messages)) {
    const first = m.signals.find((s) => s.sensorId);
    if (first) out.set(m, roomOfSensor.get(first.sensorId) ?? { room: undefined, salt: m.id });
  }
  return out;
}

/** The frames one message needs so that each of its sensors is carried: one per multiplexer choice. */
function variants(m: TableMessage): { selectors: Map<number, number>; signals: TableSignal[] }[] {
  const groups = new Map<string, { selectors: Map<number, number>; signals: TableSignal[] }>();
  for (const s of m.signals) {
    if (!s.sensorId) continue;
    const selectors = new Map<number, number>();
    for (let cur: TableSignal | undefined = s; cur && cur.mux >= 0; cur = m.signals[cur.mux])
      selectors.set(cur.mux, cur.muxValues[0]!);
    const key = JSON.stringify([...selectors].sort((a, b) => a[0] - b[0]));
    const g = groups.get(key) ?? { selectors, signals: [] };
    g.signals.push(s);
    groups.set(key, g);
  }
  // signals outside the multiplexing are in every frame, as a real node sends them
  const plain = groups.get("[]");
  if (!plain || groups.size === 1) return [...groups.values()];
  groups.delete("[]");
  for (const g of groups.values()) g.signals.unshift(...plain.signals);
  return [...groups.values()];
}

/** All frames of simulated second `k` (k = 0 is startMs). Deterministic. */
export function simulatedSecond(opts: SimOptions, k: number, rooms = messageRooms(opts.table, opts.site)): CanFrame[] {
  const epochMs = opts.startMs + k * 1000;
  const epochS = epochMs / 1000;
  const msgs: TableMessage[] = Object.values(opts.table.messages).filter((m) => m.mapped > 0);
  const frames: CanFrame[] = [];
  const states = new Map<number, RoomState>();
  let idx = 0;
  for (const m of msgs) {
    const r = rooms.get(m);
    const salt = r?.salt ?? m.id;
    let st = states.get(salt);
    if (!st) {
      st = roomState(r?.room, epochS, salt);
      states.set(salt, st);
    }
    for (const v of variants(m)) {
      const data = new Uint8Array(m.length);
      for (const [sel, raw] of v.selectors) encodeRaw(data, m.signals[sel]!, raw);
      for (const s of v.signals) {
        const lo = Number.isFinite(s.min) ? s.min : 0;
        const hi = Number.isFinite(s.max) ? s.max : 100;
        const limits = physicalLimits(s);
        // a plausible value inside the signal's range, so the simulator never produces out_of_range
        const want = Math.min(hi, Math.max(lo, signalValue(s.name, st, lo, hi, epochS))) - s.calibration;
        encodeSignal(data, s, Math.min(limits.hi, Math.max(limits.lo, want)));
      }
      // frames of one second spread over it (ms offsets + varying µs), in bus order
      const us = epochMs * 1000 + idx * 2_000 + ((k * 37 + idx * 101) % 1000);
      frames.push({ ts: isoMicros(us), id: m.id, ext: m.extended, fd: m.fd, data, iface: opts.iface });
      idx++;
    }
  }
  return frames;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function simulatorSource(opts: SimOptions): FrameSource {
  let closed = false;
  return {
    name: "simulator",
    src: "simulator",
    pausable: true,
    close() {
      closed = true;
    },
    async *frames() {
      const rooms = messageRooms(opts.table, opts.site);
      const t0 = Date.now();
      const end = opts.durationS === undefined ? Number.POSITIVE_INFINITY : Math.ceil(opts.durationS);
      let k = 0;
      while (!closed && k < end) {
        const due = Math.min(end, Math.floor(((Date.now() - t0) * opts.speed) / 1000) + 1);
        if (k >= due) {
          const nextAt = t0 + (k * 1000) / opts.speed;
          await sleep(Math.max(1, Math.min(1000, nextAt - Date.now())));
          continue;
        }
        // chunks of up to ~64 simulated seconds keep the memory flat at high speed
        const chunk: CanFrame[] = [];
        const last = Math.min(due, k + 64);
        for (; k < last; k++) chunk.push(...simulatedSecond(opts, k, rooms));
        yield chunk;
      }
    },
  };
}
