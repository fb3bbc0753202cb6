import type { Site } from "../../db/site.js";
import { compileSignal, encodeMessage, physicalValue } from "./codec.js";
import { COMMAND_SEQ, COMMAND_WATCHDOG, STATUS_SAFE, statusMessageFor } from "./commands.js";
import { type CanFrame, isoMicros } from "./frame.js";
import { type CanDb, type MessageDef, messageKey } from "./model.js";

// The simulated actuator nodes: every command message the site file's
// actuators name that has a status pair in the CAN database (Cmd_<x> /
// Status_<x>) is one node. A node applies a command frame's outputs, answers
// with its status frame (outputs as applied, safe = 0, the command's seq) and,
// when no command arrives within the last frame's watchdog_s, puts every
// output in its safe state (the site file's safe_state of the actuator on that
// output, off for an output no actuator names) and reports safe = 1. A node
// that has heard no command yet is in its safe state. Besides the answers,
// each node reports its status once a simulated second like a sensor node.

export interface SimulatedNode {
  command: MessageDef;
  status: MessageDef;
  /** Output signal → the actuator of the site file on it. */
  actuators: Map<string, string>;
  /** Output signal → on in the node's safe state. */
  safeState: Map<string, boolean>;
  applied: Map<string, boolean>;
  safe: boolean;
  seq: number;
  /** When the watchdog puts the outputs in their safe state (epoch ms); null = no command pending. */
  deadlineMs: number | null;
  /** Commands applied, watchdog trips. */
  commands: number;
  watchdogTrips: number;
}

const NOT_OUTPUTS = new Set([COMMAND_SEQ, COMMAND_WATCHDOG]);

export class SimulatedNodes {
  readonly nodes: SimulatedNode[] = [];
  /** messageKey of every status message the nodes send (the simulator's sensor curves leave them out). */
  readonly statusKeys = new Set<number>();
  private readonly byCommand = new Map<number, SimulatedNode>();

  constructor(
    db: Pick<CanDb, "messages">,
    site: Pick<Site, "actuators">,
    private readonly iface: string,
  ) {
    const names = new Set(site.actuators.map((a) => a.command.slice(0, a.command.lastIndexOf("."))));
    for (const name of names) {
      const command = db.messages.find((m) => m.name === name);
      const status = statusMessageFor(db, name);
      if (!command || !status) continue;
      const actuators = new Map<string, string>();
      const safeState = new Map<string, boolean>();
      for (const s of command.signals) {
        if (NOT_OUTPUTS.has(s.name)) continue;
        const a = site.actuators.find((x) => x.command === `${name}.${s.name}`);
        if (a) actuators.set(s.name, a.id);
        safeState.set(s.name, a?.safe_state === "on");
      }
      const node: SimulatedNode = {
        command,
        status,
        actuators,
        safeState,
        applied: new Map(safeState),
        safe: true,
        seq: 0,
        deadlineMs: null,
        commands: 0,
        watchdogTrips: 0,
      };
      this.nodes.push(node);
      this.byCommand.set(messageKey(command.id, command.extended), node);
      this.statusKeys.add(messageKey(status.id, status.extended));
    }
  }

  /** A frame on the bus at `nowMs`: a node's command is applied and answered (its status frame); else nothing. */
  receive(frame: Pick<CanFrame, "id" | "ext" | "data">, nowMs: number): CanFrame[] {
    const node = this.byCommand.get(messageKey(frame.id, frame.ext ?? false));
    if (!node || frame.data.length < node.command.length) return [];
    let watchdogS = 0;
    for (const s of node.command.signals) {
      const v = physicalValue(frame.data, 0, compileSignal(s));
      if (s.name === COMMAND_SEQ) node.seq = v;
      else if (s.name === COMMAND_WATCHDOG) watchdogS = v;
      else node.applied.set(s.name, v === 1);
    }
    node.safe = false;
    node.commands++;
    node.deadlineMs = nowMs + Math.max(1, watchdogS) * 1000;
    return [this.statusFrame(node, nowMs)];
  }

  /** The watchdogs at `nowMs`: a node whose last command ran out goes to its safe state and says so. */
  tick(nowMs: number): CanFrame[] {
    const out: CanFrame[] = [];
    // more than watchdog_s without a command: a command exactly on time still counts
    for (const node of this.nodes)
      if (node.deadlineMs !== null && nowMs > node.deadlineMs) {
        node.deadlineMs = null;
        node.applied = new Map(node.safeState);
        node.safe = true;
        node.watchdogTrips++;
        out.push(this.statusFrame(node, nowMs));
      }
    return out;
  }

  /** Every node's status frame (the periodic report). */
  statusFrames(nowMs: number): CanFrame[] {
    return this.nodes.map((n) => this.statusFrame(n, nowMs));
  }

  /** Actuator id → on, as the nodes have applied them. */
  outputs(): Map<string, boolean> {
    const out = new Map<string, boolean>();
    for (const n of this.nodes) for (const [signal, a] of n.actuators) out.set(a, n.applied.get(signal) === true);
    return out;
  }

  private statusFrame(node: SimulatedNode, nowMs: number): CanFrame {
    const values: Record<string, number> = {};
    for (const s of node.status.signals) {
      if (s.name === COMMAND_SEQ) values[s.name] = node.seq;
      else if (s.name === STATUS_SAFE) values[s.name] = node.safe ? 1 : 0;
      else if (node.applied.has(s.name)) values[s.name] = node.applied.get(s.name) ? 1 : 0;
    }
    const m = node.status;
    return {
      ts: isoMicros(Math.round(nowMs * 1000)),
      id: m.id,
      ext: m.extended,
      fd: m.fd,
      data: encodeMessage(m, values),
      iface: this.iface,
    };
  }
}
