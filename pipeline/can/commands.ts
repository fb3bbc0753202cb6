import type { Site } from "../../db/site.js";
import { ConfigError } from "../runtime/errors.js";
import { compileSignal, encodeMessage, physicalValue } from "./codec.js";
import { toHex } from "./frame.js";
import type { CanDb, MessageDef } from "./model.js";

// Command frames of the actuators. Each actuator of the site file names one
// signal of a command message ("Cmd_N1.heater"); a command frame sets every
// output of its message at once, with a sequence number the node echoes in its
// status frame and the watchdog timeout after which the node puts its outputs
// in their safe state when no further command arrives.

/** Signals every command message carries besides the outputs. */
export const COMMAND_SEQ = "seq";
export const COMMAND_WATCHDOG = "watchdog_s";

export interface CommandMessage {
  message: MessageDef;
  /** Actuator id → its output signal in this message. */
  outputs: Map<string, string>;
}

export interface CommandTable {
  /** By message name. */
  messages: Map<string, CommandMessage>;
  /** Actuator id → message name. */
  messageOf: Map<string, string>;
}

/** Why the site file's actuators and the CAN database disagree (empty = they agree). */
export function commandProblems(db: CanDb, site: Site, siteFile: string): string[] {
  const problems: string[] = [];
  const byName = new Map(db.messages.map((m) => [m.name, m]));
  site.actuators.forEach((a, i) => {
    const at = `${siteFile}: actuators.${i}.command`;
    const dot = a.command.lastIndexOf(".");
    const mName = a.command.slice(0, dot);
    const sName = a.command.slice(dot + 1);
    const m = byName.get(mName);
    const refused = db.refused.find((r) => r.message === mName);
    if (!m) {
      problems.push(
        refused
          ? `${at}: "${a.command}" is in a refused message: ${refused.text}`
          : `${at}: "${a.command}": no message ${mName} in ${db.file}`,
      );
      return;
    }
    const s = m.signals.find((x) => x.name === sName);
    if (!s) problems.push(`${at}: "${a.command}": ${mName} has no signal ${sName} in ${db.file}`);
    else if (s.multiplexer || s.muxedBy) problems.push(`${at}: "${a.command}": a command output cannot be multiplexed`);
    for (const need of [COMMAND_SEQ, COMMAND_WATCHDOG])
      if (!m.signals.some((x) => x.name === need))
        problems.push(`${at}: "${a.command}": command message ${mName} lacks the signal ${need}`);
  });
  return problems;
}

/** The command table of the site's actuators; ConfigError naming every disagreement with the CAN database. */
export function buildCommandTable(db: CanDb, site: Site, siteFile: string): CommandTable {
  const problems = commandProblems(db, site, siteFile);
  if (problems.length) throw new ConfigError(`site file and CAN database disagree\n${problems.join("\n")}`);
  const messages = new Map<string, CommandMessage>();
  const messageOf = new Map<string, string>();
  for (const a of site.actuators) {
    const dot = a.command.lastIndexOf(".");
    const mName = a.command.slice(0, dot);
    const message = db.messages.find((m) => m.name === mName);
    if (!message) continue; // excluded by commandProblems
    const cm = messages.get(mName) ?? { message, outputs: new Map<string, string>() };
    cm.outputs.set(a.id, a.command.slice(dot + 1));
    messages.set(mName, cm);
    messageOf.set(a.id, mName);
  }
  return { messages, messageOf };
}

export interface CommandFrame {
  message: string;
  id: number;
  ext: boolean;
  fd: boolean;
  /** Payload, upper-case hex like the raw stream's `data`. */
  data: string;
}

/** The frame that sets every output of `cm` (true = on) with its seq and watchdog. */
export function encodeCommand(
  cm: CommandMessage,
  states: ReadonlyMap<string, boolean>,
  seq: number,
  watchdogS: number,
): CommandFrame {
  const values: Record<string, number> = { [COMMAND_SEQ]: seq & 0xff, [COMMAND_WATCHDOG]: watchdogS };
  for (const [actuator, signal] of cm.outputs) values[signal] = states.get(actuator) ? 1 : 0;
  const m = cm.message;
  return { message: m.name, id: m.id, ext: m.extended, fd: m.fd, data: toHex(encodeMessage(m, values)) };
}

// The node's answer: a command message `Cmd_<x>` is acknowledged by the status
// message `Status_<x>` of the same CAN database (the pair the database's
// header describes), which carries the outputs as applied (same signal names),
// `safe` (outputs in the node's safe state) and `seq` (the last command
// applied). A command message without such a pair expects no answer.

export const COMMAND_PREFIX = "Cmd_";
export const STATUS_PREFIX = "Status_";
export const STATUS_SAFE = "safe";

/** The name of the status message that answers command message `command` (null: not a command message). */
export function statusNameFor(command: string): string | null {
  return command.startsWith(COMMAND_PREFIX) ? STATUS_PREFIX + command.slice(COMMAND_PREFIX.length) : null;
}

/** The status messages the site file's actuator nodes send (by name; those the CAN database has are theirs). */
export function nodeStatusNames(site: Pick<Site, "actuators">): Set<string> {
  const out = new Set<string>();
  for (const a of site.actuators) {
    const s = statusNameFor(a.command.slice(0, a.command.lastIndexOf(".")));
    if (s) out.add(s);
  }
  return out;
}

/** The status message that answers `command`, or null when the database has none (or it carries no seq). */
export function statusMessageFor(db: Pick<CanDb, "messages">, command: string): MessageDef | null {
  const name = statusNameFor(command);
  if (!name) return null;
  const m = db.messages.find((x) => x.name === name);
  return m?.signals.some((s) => s.name === COMMAND_SEQ) ? m : null;
}

/** A status frame decoded: the seq it echoes, the safe flag and every other signal (the outputs as applied). */
export interface StatusReport {
  seq: number;
  safe: boolean;
  applied: Record<string, number>;
}

export function decodeStatus(m: MessageDef, data: Uint8Array): StatusReport {
  const applied: Record<string, number> = {};
  let seq = -1;
  let safe = false;
  for (const s of m.signals) {
    const v = physicalValue(data, 0, compileSignal(s));
    if (s.name === COMMAND_SEQ) seq = v;
    else if (s.name === STATUS_SAFE) safe = v === 1;
    else applied[s.name] = v;
  }
  return { seq, safe, applied };
}
