import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import { COMMAND_SEQ, decodeStatus, type StatusReport, statusMessageFor } from "../pipeline/can/commands.js";
import type { CanFrame, OutgoingFrame } from "../pipeline/can/frame.js";
import { type CanDb, type MessageDef, messageKey } from "../pipeline/can/model.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import { counterFrom, type Registry } from "../pipeline/runtime/metrics.js";
import { projectPath } from "../pipeline/runtime/paths.js";
import { atMost, backoffDelay, sleep } from "../pipeline/runtime/retry.js";
import type { SourceEnvelope } from "../pipeline/runtime/scanner.js";
import { noOptions, type StageSpec } from "../pipeline/runtime/stage.js";
import { ensureGroup, isNoGroup, readGroup } from "../pipeline/runtime/stream.js";
import type { Component, ComponentContext } from "../pipeline/runtime/worker-contract.js";
import { CAN_FRAMES } from "./can-ingest.js";

// The command path of can-scanner, a declared component beside its chain plus
// one pass-through stage of the chain:
//
// - CommandTransmitter reads `can:cmd` through its consumer group (own pending
//   entries first, then new ones), transmits each frame through the frame
//   source's send side and matches the node's status frame that echoes the
//   seq (Cmd_<x> → Status_<x>, pipeline/can/commands.ts) within ackMs,
//   retransmitting up to `retries` times. The outcome of every entry goes to
//   `can:cmd:ack` and the entry is acknowledged by one script, both or
//   neither (stages/command-outcome.lua), so an outcome is never lost and
//   never written twice; a Redis
//   error there is an outage (retried with backoff, health degraded). An entry
//   whose watchdog has run out when it is read (ts + watchdog_s < now) is not
//   transmitted: the node is in its safe state already and a newer frame
//   follows. A source without a bus (a replayed log) transmits nothing and
//   says so. Entries of one message are handled in stream order, those of
//   different messages side by side. On stop the entries in hand stay pending
//   and the next start handles them again.
// - command-status (the stage) shows every received frame to the transmitter
//   for the ack matching and passes the frames on unchanged.

export const CMD_GROUP = "can-scanner";

export const COMMAND_OUTCOMES = ["acked", "unacknowledged", "expired", "not_transmitted", "no_ack_expected"] as const;
export type CommandOutcome = (typeof COMMAND_OUTCOMES)[number];

export interface CommandResult {
  outcome: CommandOutcome;
  tries: number;
  status?: StatusReport;
  reason: string | null;
}

export interface TransmitterDeps {
  redis: Redis;
  keys: RedisKeys;
  candb: Pick<CanDb, "messages">;
  /** The frame source's name and send side (absent: no bus, e.g. a replayed log). */
  source: { name: string; transmit?: ((f: OutgoingFrame) => Promise<void>) | undefined };
  consumer: string;
  ackMs: number;
  retries: number;
  /** Outcomes kept in can:cmd:ack (MAXLEN ~). */
  ackMaxLen?: number;
  /** Epoch ms of "now" for the watchdog check (default Date.now). */
  clock?: () => number;
}

export interface CommandStats {
  read: number;
  transmissions: number;
  acked: number;
  unacknowledged: number;
  expired: number;
  notTransmitted: number;
  noAckExpected: number;
  malformed: number;
  pending: number;
}

interface Command {
  entry: string;
  ts: string;
  frame: OutgoingFrame;
  message: string;
  seq: number;
  watchdogS: number;
  cmdId: string;
}

interface Waiter {
  seq: number;
  done: (r: StatusReport) => void;
}

const BACKOFF = { baseMs: 200, maxMs: 5_000 };

export class CommandTransmitter implements Component {
  readonly name = "command-transmitter";
  readonly stats: CommandStats = {
    read: 0,
    transmissions: 0,
    acked: 0,
    unacknowledged: 0,
    expired: 0,
    notTransmitted: 0,
    noAckExpected: 0,
    malformed: 0,
    pending: 0,
  };
  /** The status message of each status key, and the waiters on it. */
  private readonly statusByKey = new Map<number, MessageDef>();
  private readonly waiters = new Map<number, Waiter>();
  private readonly queues = new Map<string, Promise<void>>();
  private readonly stopper = new AbortController();
  private reader: Redis | null = null;
  private loop: Promise<void> | null = null;
  private ctx: ComponentContext | null = null;
  private saidNoBus = false;
  private readonly clock: () => number;

  constructor(private readonly d: TransmitterDeps) {
    this.clock = d.clock ?? Date.now;
    for (const m of d.candb.messages) {
      const s = statusMessageFor(d.candb, m.name);
      if (s) this.statusByKey.set(messageKey(s.id, s.extended), s);
    }
  }

  start(ctx: ComponentContext): void {
    this.ctx = ctx;
    // blocking reads get their own connection, so they never hold up the appender's commands
    this.reader = this.d.redis.duplicate();
    this.reader.on("error", () => undefined);
    this.loop = this.run();
  }

  /** Stop reading; entries without a recorded outcome stay pending for the next start (bounded: Redis may be down). */
  async stop(): Promise<void> {
    this.stopper.abort();
    for (const w of this.waiters.values()) w.done({ seq: -1, safe: false, applied: {} });
    // a blocked read ends with its connection; one queued while Redis is down may never settle
    // (a client that is reconnecting does not reject its offline queue on disconnect): bounded
    this.reader?.disconnect();
    await atMost(this.loop ?? Promise.resolve(), 1_000);
    await atMost(Promise.all(this.queues.values()), 2_000);
  }

  /** Received frames (the command-status stage): a status frame answers the command waiting on its seq. */
  observe(frames: readonly CanFrame[]): void {
    if (this.waiters.size === 0) return;
    for (const f of frames) {
      const key = messageKey(f.id, f.ext ?? false);
      const w = this.waiters.get(key);
      const m = w && this.statusByKey.get(key);
      if (!w || !m || f.data.length < m.length) continue;
      const r = decodeStatus(m, f.data);
      if (r.seq === w.seq) {
        this.waiters.delete(key);
        w.done(r);
      }
    }
  }

  /** The reading side's and the publishing side's problems, reported together (one health source). */
  private readonly causes: { read: string | null; publish: string | null } = { read: null, publish: null };
  private problem(cause: string | null, side: "read" | "publish" = "read"): void {
    if (this.causes[side] === cause) return;
    this.causes[side] = cause;
    const all = [this.causes.read, this.causes.publish].filter((x) => x !== null);
    this.ctx?.problem(all.length ? all.join("; ") : null);
  }

  private async run(): Promise<void> {
    const { keys, consumer } = this.d;
    const signal = this.stopper.signal;
    const reader = this.reader!;
    let cursor = "0"; // own pending entries first (a restart resumes them), then new ones
    let grouped = false;
    let attempt = 0;
    while (!signal.aborted) {
      try {
        if (!grouped) {
          // without MKSTREAM: a scanner whose commands nobody sends (a dry run) leaves no can:cmd behind
          if (!(await reader.exists(keys.cmd))) {
            this.problem(null);
            await sleep(1_000, signal);
            continue;
          }
          await ensureGroup(reader, keys.cmd, CMD_GROUP);
          grouped = true;
        }
        // bounded: at most 64 entries in hand
        if (this.stats.pending >= 64) {
          await Promise.race([...this.queues.values(), sleep(100, signal)]);
          continue;
        }
        const got = await readGroup(reader, keys.cmd, CMD_GROUP, consumer, cursor, 32, cursor === ">" ? 1_000 : null);
        attempt = 0;
        this.problem(null);
        if (cursor !== ">" && got.ids.length === 0) {
          cursor = ">";
          continue;
        }
        got.ids.forEach((id, i) => {
          if (cursor !== ">") cursor = id;
          this.enqueue(id, got.fields[i] ?? null);
        });
      } catch (err) {
        if (signal.aborted) break;
        // a Redis that lost its data (restarted without persistence) has no group: create it again
        if (isNoGroup(err)) grouped = false;
        this.problem(`command stream ${keys.cmd} unreadable: ${(err as Error).message}`);
        await sleep(backoffDelay(BACKOFF, attempt++), signal);
      }
    }
  }

  private enqueue(entry: string, fields: string[] | null): void {
    this.stats.read++;
    this.stats.pending++;
    const cmd = parseCommand(entry, fields);
    const lane = typeof cmd === "string" ? "" : cmd.message;
    const prev = this.queues.get(lane) ?? Promise.resolve();
    const next = prev
      .then(async () => {
        if (this.stopper.signal.aborted) return; // stays pending: the next start handles it
        const result: CommandResult =
          typeof cmd === "string" ? { outcome: "not_transmitted", tries: 0, reason: cmd } : await this.deliver(cmd);
        if (typeof cmd === "string") this.stats.malformed++;
        if (this.stopper.signal.aborted && result.reason === STOPPED) return;
        await this.publish(entry, typeof cmd === "string" ? null : cmd, result);
      })
      .catch((err: unknown) => this.ctx?.log.error({ err, entry }, "command entry failed"))
      .finally(() => {
        this.stats.pending--;
        if (this.queues.get(lane) === next) this.queues.delete(lane);
      });
    this.queues.set(lane, next);
  }

  /** Transmit and wait for the ack, with retries. */
  async deliver(cmd: Command): Promise<CommandResult> {
    const log = this.ctx?.log;
    const ageMs = this.clock() - Date.parse(cmd.ts);
    if (ageMs > cmd.watchdogS * 1000) {
      this.stats.expired++;
      log?.warn(
        { message: cmd.message, seq: cmd.seq, cmd_id: cmd.cmdId, age_s: Math.round(ageMs / 1000) },
        "command not transmitted: its watchdog ran out before it was read (the node is safe; a newer frame follows)",
      );
      return { outcome: "expired", tries: 0, reason: `watchdog of ${cmd.watchdogS} s ran out before transmission` };
    }
    const send = this.d.source.transmit;
    if (!send) {
      this.stats.notTransmitted++;
      if (!this.saidNoBus)
        log?.warn(
          { source: this.d.source.name },
          "commands are not transmitted: the frame source has no bus (a replayed log); each is reported not_transmitted",
        );
      this.saidNoBus = true;
      return { outcome: "not_transmitted", tries: 0, reason: `source ${this.d.source.name} has no bus` };
    }
    const status = statusMessageFor(this.d.candb, cmd.message);
    const key = status ? messageKey(status.id, status.extended) : null;
    let sent = 0;
    let lastError: string | null = null;
    for (let attempt = 0; attempt <= this.d.retries; attempt++) {
      if (this.stopper.signal.aborted) return { outcome: "not_transmitted", tries: sent, reason: STOPPED };
      let answer: Promise<StatusReport | null> = Promise.resolve(null);
      if (key !== null) {
        // the waiter is in place before the frame leaves: an answer cannot slip past it
        answer = new Promise<StatusReport | null>((resolve) => {
          const timer = setTimeout(() => {
            if (this.waiters.get(key)?.done === done) this.waiters.delete(key);
            resolve(null);
          }, this.d.ackMs);
          const done = (r: StatusReport) => {
            clearTimeout(timer);
            resolve(r);
          };
          this.waiters.set(key, { seq: cmd.seq, done });
        });
      }
      try {
        await send(cmd.frame);
        sent++;
        this.stats.transmissions++;
      } catch (err) {
        lastError = (err as Error).message;
        log?.warn({ message: cmd.message, seq: cmd.seq, err: lastError }, "command frame not written on the bus");
      }
      if (key === null) {
        if (sent) {
          this.stats.noAckExpected++;
          return { outcome: "no_ack_expected", tries: sent, reason: `${cmd.message} has no status message` };
        }
        continue;
      }
      const r = await answer;
      if (r && r.seq >= 0) {
        this.stats.acked++;
        return { outcome: "acked", tries: attempt + 1, status: r, reason: null };
      }
      if (this.stopper.signal.aborted) return { outcome: "not_transmitted", tries: sent, reason: STOPPED };
    }
    if (!sent) {
      this.stats.notTransmitted++;
      return { outcome: "not_transmitted", tries: this.d.retries + 1, reason: `bus write failed: ${lastError}` };
    }
    this.stats.unacknowledged++;
    log?.error(
      { message: cmd.message, seq: cmd.seq, cmd_id: cmd.cmdId, tries: this.d.retries + 1 },
      "command unacknowledged: the node did not answer",
    );
    return {
      outcome: "unacknowledged",
      tries: this.d.retries + 1,
      reason: `no ${status?.name ?? "status"} echoing seq ${cmd.seq} within ${this.d.ackMs} ms after ${this.d.retries + 1} transmissions${lastError ? ` (last bus error: ${lastError})` : ""}`,
    };
  }

  /** The outcome and the acknowledgement of the entry in one MULTI; a Redis error is retried until it passes. */
  private async publish(entry: string, cmd: Command | null, r: CommandResult): Promise<void> {
    const { redis, keys } = this.d;
    const fields = [
      "ts",
      new Date(this.clock()).toISOString(),
      "cmd_entry",
      entry,
      ...(cmd ? ["cmd_id", cmd.cmdId, "cmd_ts", cmd.ts, "message", cmd.message, "seq", String(cmd.seq)] : []),
      "outcome",
      r.outcome,
      "tries",
      String(r.tries),
      ...(r.status ? ["applied", JSON.stringify(r.status.applied), "safe", r.status.safe ? "1" : "0"] : []),
      ...(r.reason ? ["reason", r.reason] : []),
    ];
    for (let attempt = 0; ; attempt++) {
      try {
        await publishOutcome(redis, keys, String(this.d.ackMaxLen ?? 10_000), entry, fields);
        this.problem(null, "publish");
        return;
      } catch (err) {
        this.problem(`command outcomes not recorded (${keys.cmdAck}): ${(err as Error).message}`, "publish");
        // on stop the entry stays pending: the next start handles it again
        if (this.stopper.signal.aborted) return;
        await sleep(backoffDelay(BACKOFF, attempt), this.stopper.signal);
      }
    }
  }
}

let outcomeScript: string | undefined;

/** Outcome published and entry acknowledged in one script (stages/command-outcome.lua, contract at its top). */
async function publishOutcome(
  redis: Redis,
  keys: RedisKeys,
  maxLen: string,
  entry: string,
  fields: string[],
): Promise<void> {
  const r = redis as Redis & { ceaCommandOutcome?: (...args: string[]) => Promise<number> };
  if (!r.ceaCommandOutcome) {
    outcomeScript ??= readFileSync(projectPath("stages/command-outcome.lua"), "utf8");
    redis.defineCommand("ceaCommandOutcome", { numberOfKeys: 2, lua: outcomeScript });
  }
  await r.ceaCommandOutcome!(keys.cmd, keys.cmdAck, CMD_GROUP, maxLen, entry, ...fields);
}

const STOPPED = "stopped before an outcome";

function parseCommand(entry: string, f: string[] | null): Command | string {
  if (!f) return "entry deleted from the stream";
  const get = (k: string) => {
    for (let i = 0; i + 1 < f.length; i += 2) if (f[i] === k) return f[i + 1];
    return undefined;
  };
  const ts = get("ts");
  const id = Number(get("id"));
  const data = get("data");
  const message = get("message");
  const seq = Number(get(COMMAND_SEQ));
  const watchdogS = Number(get("watchdog_s"));
  const cmdId = get("cmd_id") ?? "";
  const missing = [
    ts === undefined || Number.isNaN(Date.parse(ts)) ? "ts" : null,
    Number.isInteger(id) && id >= 0 ? null : "id",
    data !== undefined && /^([0-9A-Fa-f]{2})*$/.test(data) ? null : "data",
    message ? null : "message",
    Number.isInteger(seq) ? null : "seq",
    Number.isFinite(watchdogS) && watchdogS > 0 ? null : "watchdog_s",
  ].filter((x) => x !== null);
  if (missing.length) return `malformed command entry ${entry}: bad or missing ${missing.join(", ")}`;
  return {
    entry,
    ts: ts!,
    frame: { id, ext: get("ext") === "1", fd: get("fd") === "1", data: Uint8Array.from(Buffer.from(data!, "hex")) },
    message: message!,
    seq,
    watchdogS,
    cmdId,
  };
}

/** The chain's pass-through stage that shows every received frame to the transmitter (ack matching). */
export function commandStatusStage(
  tx: Pick<CommandTransmitter, "observe">,
): StageSpec<CanFrame[], CanFrame[], typeof noOptions, SourceEnvelope> {
  return {
    name: "command-status",
    consumes: CAN_FRAMES,
    emits: CAN_FRAMES,
    options: noOptions,
    failure: {
      classify: () => "fatal",
      describe: (err) => `command-status failed: ${(err as Error).message}`,
      backoff: BACKOFF,
    },
    create() {
      return {
        process(_env, frames) {
          tx.observe(frames);
          return frames;
        },
      };
    },
  };
}

/** The command path's metrics, read from the transmitter's counters when Prometheus scrapes. */
export function registerCommandMetrics(registry: Registry, stats: CommandStats): void {
  counterFrom(
    registry,
    "cea_scanner_command_transmissions_total",
    "Command frames written on the bus (retransmissions included)",
    [],
    () => [[{}, stats.transmissions]],
  );
  counterFrom(
    registry,
    "cea_scanner_command_outcomes_total",
    "Outcomes of can:cmd entries: acked, unacknowledged, expired, not_transmitted, no_ack_expected",
    ["outcome"],
    () => [
      [{ outcome: "acked" }, stats.acked],
      [{ outcome: "unacknowledged" }, stats.unacknowledged],
      [{ outcome: "expired" }, stats.expired],
      [{ outcome: "not_transmitted" }, stats.notTransmitted + stats.malformed],
      [{ outcome: "no_ack_expected" }, stats.noAckExpected],
    ],
  );
}
