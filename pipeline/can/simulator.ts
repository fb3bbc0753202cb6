import type { Site } from "../../db/site.js";
import { encodeRaw, encodeSignal, physicalLimits } from "./codec.js";
import { nodeStatusNames } from "./commands.js";
import { type CanFrame, type FrameSource, isoMicros, type OutgoingFrame } from "./frame.js";
import { type CanDb, messageKey } from "./model.js";
import { SimulatedNodes } from "./nodes.js";
import { type RoomClimate, RoomModel } from "./room-model.js";
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
//
// Closed loop: given the CAN database, the simulator also runs the actuator
// nodes (pipeline/can/nodes.ts): the frames transmitted to it reach them,
// their status frames go out on the simulated bus like any frame, and every
// room with an actuator on such a node is a closed-loop room
// (pipeline/can/room-model.ts) whose temperature, humidity and CO2 follow the
// outputs the nodes apply instead of the day curves.

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
  /** The CAN database: with it the actuator nodes and closed-loop rooms are simulated. */
  candb?: Pick<CanDb, "messages"> | undefined;
  /** The real clock the pace follows (epoch ms; tests inject one); default Date.now. */
  clock?: (() => number) | undefined;
  /** Longest sleep between two looks at the clock (ms; tests with an injected clock use a short one). */
  pollMs?: number | undefined;
}

/** What the closed loop changes in one simulated second: status messages the nodes send, rooms the models hold. */
export interface ClosedLoop {
  /** messageKey of the messages the nodes send: not simulated as sensor curves. */
  skip: ReadonlySet<number>;
  /** The climate of the room of node `salt` when a model holds it. */
  climate(salt: number): RoomClimate | undefined;
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
export function simulatedSecond(
  opts: SimOptions,
  k: number,
  rooms = messageRooms(opts.table, opts.site),
  loop?: ClosedLoop,
): CanFrame[] {
  const epochMs = opts.startMs + k * 1000;
  const epochS = epochMs / 1000;
  // the actuator nodes' status messages are theirs to send (Simulation), never a sensor curve
  const nodes = nodeStatusNames(opts.site);
  const msgs: TableMessage[] = Object.values(opts.table.messages).filter(
    (m) => m.mapped > 0 && !nodes.has(m.name) && !loop?.skip.has(messageKey(m.id, m.extended)),
  );
  const frames: CanFrame[] = [];
  const states = new Map<number, RoomState>();
  let idx = 0;
  for (const m of msgs) {
    const r = rooms.get(m);
    const salt = r?.salt ?? m.id;
    let st = states.get(salt);
    if (!st) {
      st = roomState(r?.room, epochS, salt);
      const held = loop?.climate(salt);
      if (held) {
        // a node's own sensors differ a little from its neighbour's in the same room
        st.temp = held.t + 0.05 * noise(salt * 31 + 1, Math.floor(epochS));
        st.rh = Math.min(100, Math.max(0, held.rh + 0.2 * noise(salt * 31 + 2, Math.floor(epochS))));
        st.co2 = Math.max(0, held.co2 + 3 * noise(salt * 31 + 3, Math.floor(epochS)));
      }
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

/**
 * A simulation stepped one second at a time: the sensor frames, the nodes'
 * watchdogs and status reports, and the closed-loop rooms. `transmit` puts a
 * frame on the simulated bus at a given simulated time; the nodes' answers are
 * collected for the next `answers()`.
 */
export class Simulation {
  readonly nodes: SimulatedNodes | null;
  readonly models = new Map<number, RoomModel>();
  private readonly rooms: ReturnType<typeof messageRooms>;
  private readonly modelOfSalt = new Map<number, RoomModel>();
  private readonly loop: ClosedLoop;
  private pending: CanFrame[] = [];
  /** The next simulated second to produce (0 = startMs). */
  k = 0;

  constructor(readonly opts: SimOptions) {
    this.rooms = messageRooms(opts.table, opts.site);
    this.nodes = opts.candb ? new SimulatedNodes(opts.candb, opts.site, opts.iface) : null;
    if (this.nodes?.nodes.length) {
      const driven = new Set(this.nodes.nodes.flatMap((n) => [...n.actuators.values()]));
      const startS = opts.startMs / 1000;
      for (const room of opts.site.rooms) {
        if (!opts.site.actuators.some((a) => a.room_id === room.id && driven.has(a.id))) continue;
        const st = roomState(room, startS, room.id);
        const model = new RoomModel(room, opts.site.actuators, opts.site.facility.timezone, {
          t: st.temp,
          rh: st.rh,
          co2: st.co2,
        });
        this.models.set(room.id, model);
        for (const d of opts.site.devices) if (d.room_id === room.id) this.modelOfSalt.set(d.node_id, model);
      }
    }
    const skip = this.nodes?.statusKeys ?? new Set<number>();
    this.loop = { skip, climate: (salt) => this.modelOfSalt.get(salt)?.climate };
  }

  /** The simulated time of second `k`. */
  timeOf(k: number): number {
    return this.opts.startMs + k * 1000;
  }

  /** A frame put on the simulated bus at simulated time `atMs`; a node's answer waits in answers(). */
  transmit(frame: Pick<CanFrame, "id" | "ext" | "data">, atMs: number): void {
    if (this.nodes) this.pending.push(...this.nodes.receive(frame, atMs));
  }

  /** The nodes' answers since the last call. */
  answers(): CanFrame[] {
    const out = this.pending;
    this.pending = [];
    return out;
  }

  /** The frames of the next simulated second (watchdogs first, then the rooms' physics over that second). */
  next(): CanFrame[] {
    const k = this.k++;
    const ms = this.timeOf(k);
    const frames: CanFrame[] = [];
    if (this.nodes) {
      frames.push(...this.nodes.tick(ms));
      if (this.models.size) {
        const outputs = this.nodes.outputs();
        const outside = roomState(undefined, ms / 1000, 0).temp;
        for (const m of this.models.values()) m.step(1, ms, outside, outputs);
      }
    }
    frames.push(...simulatedSecond(this.opts, k, this.rooms, this.loop));
    if (this.nodes) frames.push(...this.nodes.statusFrames(ms + 999));
    return frames;
  }
}

const sleep = (ms: number, wake?: Promise<void>) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    void wake?.then(() => {
      clearTimeout(t);
      r();
    });
  });

/**
 * The simulator as a frame source, paced by the clock at `speed`. Its send
 * side delivers frames to the simulated nodes at the current simulated time;
 * their answers go out at once (the pace's sleep is cut short).
 */
export function simulatorSource(
  opts: SimOptions,
): FrameSource & { simulation: Simulation; transmit(f: OutgoingFrame): Promise<void> } {
  let closed = false;
  const clock = opts.clock ?? Date.now;
  const sim = new Simulation(opts);
  let t0: number | null = null;
  let wakeUp: (() => void) | null = null;
  let woken = new Promise<void>((r) => {
    wakeUp = r;
  });
  const wake = () => {
    wakeUp?.();
    woken = new Promise<void>((r) => {
      wakeUp = r;
    });
  };
  const nowSim = () => opts.startMs + (clock() - (t0 ?? clock())) * opts.speed;
  return {
    name: "simulator",
    src: "simulator",
    pausable: true,
    simulation: sim,
    close() {
      closed = true;
      wake();
    },
    async transmit(frame) {
      sim.transmit(frame, nowSim());
      wake();
    },
    async *frames() {
      t0 = clock();
      const end = opts.durationS === undefined ? Number.POSITIVE_INFINITY : Math.ceil(opts.durationS);
      const poll = opts.pollMs ?? 1000;
      while (!closed && sim.k < end) {
        const answers = sim.answers();
        if (answers.length) {
          yield answers;
          continue;
        }
        const due = Math.min(end, Math.floor(((clock() - t0) * opts.speed) / 1000) + 1);
        if (sim.k >= due) {
          const nextAt = t0 + (sim.k * 1000) / opts.speed;
          await sleep(Math.max(1, Math.min(poll, nextAt - clock())), woken);
          continue;
        }
        // chunks of up to ~64 simulated seconds keep the memory flat at high speed
        const chunk: CanFrame[] = [];
        const last = Math.min(due, sim.k + 64);
        while (sim.k < last) chunk.push(...sim.next());
        yield chunk;
      }
    },
  };
}
