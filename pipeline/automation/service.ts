import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { classifyDbError } from "../../db/pg-errors.js";
import type { Queryable } from "../../db/pool.js";
import {
  type ActuatorEvent,
  insertActuatorEvents,
  insertCommandOutcome,
  setpointsInForce,
} from "../../db/queries/automation.js";
import type { ControlledQuantity, Site } from "../../db/site.js";
import { type CommandTable, encodeCommand } from "../can/commands.js";
import type { Config } from "../runtime/config.js";
import type { RedisKeys } from "../runtime/keys.js";
import type { Logger } from "../runtime/log.js";
import { ensureGroup, readGroup } from "../runtime/stream.js";
import {
  type ActuatorState,
  type ControlPlan,
  controlPlan,
  type Decision,
  decide,
  type Reading,
  type Setpoint,
} from "./controller.js";

// The automation loop: every CEA_AUTOMATION_INTERVAL_MS it reads the live
// values (Redis, kept current by can-scanner) and the setpoints (PostgreSQL,
// read every cycle so a change applies at the next decision), decides with the
// pure controller, appends the command frames to `can:cmd` and records the
// decisions in actuator_events. Redis or PostgreSQL unreachable is an outage:
// every actuator goes to its safe state (the node's watchdog does it when the
// command cannot even reach the bus). Decisions made while PostgreSQL is down
// are kept (bounded) and recorded when it is back.

export interface AutomationDeps {
  config: Pick<
    Config,
    | "CEA_AUTOMATION_INTERVAL_MS"
    | "CEA_AUTOMATION_STALE_S"
    | "CEA_AUTOMATION_WATCHDOG_S"
    | "CEA_AUTOMATION_EVENT_BUFFER"
    | "CEA_HEALTH_TTL_S"
  >;
  site: Site;
  commands: CommandTable;
  redis: Redis;
  db: Queryable;
  keys: RedisKeys;
  log: Logger;
  dryRun: boolean;
  /** The controller's clock (tests run accelerated time); default Date.now. */
  clock?: () => number;
  /** Most command frames kept in can:cmd. */
  cmdMaxLen?: number;
  /** Hears each cycle's duration in seconds (the metrics' histogram). */
  onCycle?: (seconds: number) => void;
}

/** A bounded name for why a decision was made, for metrics. */
export function reasonClass(d: Pick<Decision, "action" | "reason" | "failsafe">): string {
  const r = d.reason;
  if (d.failsafe) {
    if (r.includes("data stale")) return "stale";
    if (r.includes("bad status")) return "bad_status";
    if (r.includes("no reading")) return "no_reading";
    if (r.includes("stopping")) return "stopping";
    return "outage";
  }
  if (r.startsWith("no ")) return "no_setpoint";
  if (r.includes("held by minimum")) return "min_time";
  if (r.includes("conflict with")) return "conflict";
  if (r.includes("switched on now")) return "stagger";
  return "control";
}

export interface AutomationStats {
  cycles: number;
  decisions: Map<string, number>;
  commandsSent: number;
  /** Command outcomes read from can:cmd:ack, by outcome. */
  outcomes: Map<string, number>;
  eventsWritten: number;
  eventsDropped: number;
  lastCycleAt: number | null;
}

const STOPPING = "service stopping";

export class AutomationService {
  readonly plan: ControlPlan;
  state = new Map<string, ActuatorState>();
  lastDecisions: Decision[] = [];
  /** Active fail-safes by room name (alerts). */
  failsafes = new Map<string, string>();
  readonly stats: AutomationStats = {
    cycles: 0,
    decisions: new Map(),
    commandsSent: 0,
    outcomes: new Map(),
    eventsWritten: 0,
    eventsDropped: 0,
    lastCycleAt: null,
  };
  pending: ActuatorEvent[] = [];
  /** Command messages whose last command went unacknowledged (an alert until the node acks again): message → why. */
  unacknowledged = new Map<string, string>();
  private ackCursor = "0";
  /** Command ids of this run that carried recorded decisions: an outcome of another of this run's commands records nothing. */
  private readonly carried = new Set<string>();
  private ackGroupReady = false;
  private readonly sensorPlace = new Map<string, { room: number; kind: string; name: string }>();
  private readonly sent = new Map<string, { states: string; atMs: number; seq: number }>();
  private readonly bootId = randomBytes(4).toString("hex");
  private cmdCounter = 0;
  private outage: { redis: string | null; db: string | null } = { redis: null, db: null };
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopping = false;
  private readonly clock: () => number;

  /** The command messages the site's actuators are driven by (CAN database names). */
  get commandMessages(): string[] {
    return [...this.d.commands.messages.keys()];
  }

  constructor(private readonly d: AutomationDeps) {
    this.plan = controlPlan(d.site);
    this.clock = d.clock ?? Date.now;
    for (const dev of d.site.devices)
      for (const s of dev.sensors)
        if (s.kind) this.sensorPlace.set(String(s.id), { room: dev.room_id, kind: s.kind, name: s.name });
  }

  private redisUp(): boolean {
    return this.d.redis.status === "ready";
  }

  /** The latest live reading of every sensor of the site file, by room and kind. */
  private async readLive(): Promise<Map<number, Map<string, Reading[]>>> {
    const raw = await this.d.redis.hgetall(this.d.keys.live);
    const out = new Map<number, Map<string, Reading[]>>();
    for (const [id, text] of Object.entries(raw)) {
      const place = this.sensorPlace.get(id);
      if (!place) continue;
      let v: { value?: unknown; time?: unknown; status?: unknown };
      try {
        v = JSON.parse(text) as typeof v;
      } catch {
        continue; // not a live value of this platform's format: it counts as no reading
      }
      const timeMs = typeof v.time === "string" ? Date.parse(v.time) : Number.NaN;
      if (typeof v.value !== "number" || Number.isNaN(timeMs)) continue;
      const room = out.get(place.room) ?? new Map<string, Reading[]>();
      out.set(place.room, room);
      const list = room.get(place.kind) ?? [];
      room.set(place.kind, list);
      list.push({ sensor: place.name, value: v.value, timeMs, status: typeof v.status === "string" ? v.status : null });
    }
    return out;
  }

  private async readSetpoints(nowMs: number): Promise<Setpoint[]> {
    const rows = await setpointsInForce(this.d.db, new Date(nowMs));
    return rows.map((r) => ({
      setpoint_id: r.setpoint_id,
      room_id: r.room_id,
      quantity: r.quantity as ControlledQuantity,
      period: r.period,
      target: r.target,
      tolerance: r.tolerance,
      effectiveFromMs: r.effective_from.getTime(),
    }));
  }

  /** One decision cycle. `final` = the stop: everything to its safe state. */
  async cycle(final = false): Promise<Decision[]> {
    const t0 = process.hrtime.bigint();
    const nowMs = this.clock();
    const { log } = this.d;
    let readings = new Map<number, Map<string, Reading[]>>();
    let setpoints: Setpoint[] = [];
    const outage: { redis: string | null; db: string | null } = { redis: null, db: null };
    if (!this.redisUp()) outage.redis = "Redis unreachable";
    else
      try {
        readings = await this.readLive();
      } catch (err) {
        // an error reply (WRONGTYPE, OOM, NOSCRIPT…) from a Redis that is up is not unreachability
        outage.redis = `${this.redisUp() ? "Redis error" : "Redis unreachable"}: ${(err as Error).message}`;
      }
    try {
      setpoints = await this.readSetpoints(nowMs);
    } catch (err) {
      const c = classifyDbError(err);
      // a server that answers (a missing table, a revoked grant, a timeout) is an outage too, but not "unreachable"
      const gone = !c.code || !/^[0-9A-Z]{5}$/.test(c.code) || /^(08|53|57P)/.test(c.code);
      outage.db = `PostgreSQL ${gone ? "unreachable" : "failed"}${c.code ? ` (${c.code})` : ""}: ${(err as Error).message}`;
    }
    for (const k of ["redis", "db"] as const)
      if (outage[k] !== this.outage[k])
        if (outage[k]) log.error({ cause: outage[k] }, "fail-safe: every actuator to its safe state");
        else log.info({ was: this.outage[k] }, "recovered: control resumes");
    this.outage = outage;
    const why = final ? STOPPING : (outage.redis ?? outage.db);
    const r = decide(
      this.plan,
      this.state,
      { nowMs, readings, setpoints, outage: why },
      { staleMs: this.d.config.CEA_AUTOMATION_STALE_S * 1000 },
    );
    this.state = r.state;
    this.lastDecisions = r.decisions;
    const commandIds = await this.sendCommands(r.decisions, nowMs, final);
    for (const dec of r.decisions) {
      const k = `${dec.action}|${reasonClass(dec)}`;
      if (dec.action !== "keep") this.stats.decisions.set(k, (this.stats.decisions.get(k) ?? 0) + 1);
      if (!dec.record) continue;
      const cmd = commandIds.get(dec.actuator);
      if (cmd) this.carried.add(cmd);
      this.pending.push({
        time: new Date(nowMs),
        room_id: dec.room_id,
        device_id: dec.device_id,
        actuator: dec.actuator,
        action: dec.action,
        quantity: dec.quantity,
        value: dec.value,
        setpoint: dec.setpoint,
        band: dec.band,
        setpoint_id: dec.setpoint_id,
        state: dec.state,
        reason: dec.reason,
        dry_run: this.d.dryRun,
        command_id: cmd ?? null,
        ack_status: cmd ? "sent" : "not_sent",
      });
      log.info(
        { actuator: dec.actuator, action: dec.action, state: dec.state, dry_run: this.d.dryRun },
        `decision: ${dec.actuator} ${dec.action}: ${dec.reason}`,
      );
    }
    const cap = this.d.config.CEA_AUTOMATION_EVENT_BUFFER;
    if (this.pending.length > cap) {
      const lost = this.pending.length - cap;
      this.pending.splice(0, lost);
      this.stats.eventsDropped += lost;
      log.error({ lost }, "actuator events dropped: PostgreSQL unreachable for too long (counted)");
    }
    if (!outage.db && this.pending.length) {
      const batch = this.pending.slice();
      try {
        await insertActuatorEvents(this.d.db, batch);
        this.pending.splice(0, batch.length);
        this.stats.eventsWritten += batch.length;
      } catch (err) {
        log.warn(
          { err: (err as Error).message, pending: this.pending.length },
          "actuator events kept for the next cycle",
        );
      }
    }
    // outcomes after the decisions they answer are written (their rows are looked up)
    if (!this.d.dryRun && !outage.db && !outage.redis && this.pending.length === 0) await this.readOutcomes();
    this.failsafes = new Map();
    for (const dec of r.decisions)
      if (dec.failsafe) {
        const room = this.plan.rooms.get(dec.room_id)?.name ?? String(dec.room_id);
        if (!this.failsafes.has(room)) this.failsafes.set(room, `${dec.actuator}: ${dec.reason}`);
      }
    await this.publish(nowMs);
    this.stats.cycles++;
    this.stats.lastCycleAt = nowMs;
    this.d.onCycle?.(Number(process.hrtime.bigint() - t0) / 1e9);
    return r.decisions;
  }

  /**
   * Append a command frame for every command message whose outputs changed,
   * and for the others every third of the watchdog (so the nodes' watchdogs
   * never fire while the service runs). Returns actuator → command id of the
   * frame that carried its change. Dry run: nothing is sent.
   */
  private async sendCommands(decisions: Decision[], nowMs: number, final: boolean): Promise<Map<string, string>> {
    const ids = new Map<string, string>();
    if (this.d.dryRun || !this.redisUp()) return ids;
    const watchdog = this.d.config.CEA_AUTOMATION_WATCHDOG_S;
    const states = new Map(decisions.map((x) => [x.actuator, x.state]));
    const changed = new Set(decisions.filter((x) => x.changed).map((x) => x.actuator));
    for (const [name, cm] of this.d.commands.messages) {
      const key = [...cm.outputs.keys()].map((a) => (states.get(a) ? "1" : "0")).join("");
      const last = this.sent.get(name);
      const due = !last || last.states !== key || final || nowMs - last.atMs >= (watchdog * 1000) / 3;
      if (!due) continue;
      const seq = ((last?.seq ?? -1) + 1) & 0xff;
      const frame = encodeCommand(cm, states, seq, watchdog);
      const cmdId = `${this.bootId}-${++this.cmdCounter}`;
      const fields = [
        "ts",
        new Date(nowMs).toISOString(),
        "id",
        String(frame.id),
        "data",
        frame.data,
        ...(frame.ext ? ["ext", "1"] : []),
        ...(frame.fd ? ["fd", "1"] : []),
        "message",
        frame.message,
        "seq",
        String(seq),
        "watchdog_s",
        String(watchdog),
        "cmd_id",
        cmdId,
      ];
      try {
        await this.d.redis.xadd(this.d.keys.cmd, "MAXLEN", "~", String(this.d.cmdMaxLen ?? 10_000), "*", ...fields);
      } catch (err) {
        this.d.log.warn({ err: (err as Error).message, message: name }, "command not appended; the next cycle retries");
        continue;
      }
      this.sent.set(name, { states: key, atMs: nowMs, seq });
      this.stats.commandsSent++;
      for (const a of cm.outputs.keys()) if (changed.has(a) || final) ids.set(a, cmdId);
    }
    return ids;
  }

  /**
   * The outcomes can-scanner reports for the command frames (stream
   * can:cmd:ack, own consumer group; own pending entries first): each is
   * recorded in actuator_events (a row per decision the command carried) and
   * acknowledged after that commit; an unacknowledged command raises an alert
   * (health degraded naming the message, a log line) that the node's next ack
   * clears. A failure leaves the entries for the next cycle.
   */
  private async readOutcomes(): Promise<void> {
    const { redis, keys, db, log, commands, site } = this.d;
    const group = "automation-service";
    try {
      if (!this.ackGroupReady) {
        await ensureGroup(redis, keys.cmdAck, group);
        this.ackGroupReady = true;
      }
      for (let round = 0; round < 10; round++) {
        const got = await readGroup(redis, keys.cmdAck, group, "automation-service-1", this.ackCursor, 100, null);
        if (got.ids.length === 0) {
          if (this.ackCursor === ">") return;
          this.ackCursor = ">";
          continue;
        }
        for (const [i, id] of got.ids.entries()) {
          const f = new Map<string, string>();
          const list = got.fields[i] ?? [];
          for (let j = 0; j + 1 < list.length; j += 2) f.set(list[j]!, list[j + 1]!);
          const outcome = f.get("outcome") ?? "?";
          const message = f.get("message") ?? "";
          this.stats.outcomes.set(outcome, (this.stats.outcomes.get(outcome) ?? 0) + 1);
          const cm = commands.messages.get(message);
          if (outcome === "unacknowledged") {
            const why = f.get("reason") ?? "no answer";
            if (!this.unacknowledged.has(message))
              log.error({ message, cmd_id: f.get("cmd_id"), reason: why }, `alert: command ${message} unacknowledged`);
            this.unacknowledged.set(message, why);
          } else if (outcome === "acked" && this.unacknowledged.delete(message))
            log.info({ message, cmd_id: f.get("cmd_id") }, `node answers again: command ${message} acknowledged`);
          const cmdId = f.get("cmd_id");
          const cmdTs = Date.parse(f.get("cmd_ts") ?? "");
          const status =
            outcome === "acked"
              ? "acked"
              : outcome === "unacknowledged"
                ? "unacknowledged"
                : outcome === "no_ack_expected"
                  ? null
                  : "not_sent";
          // a command of this run that carried no decision (a repeat for the watchdog) has no row to answer;
          // one of an earlier run is looked up
          const mayHaveRows = cmdId && (!cmdId.startsWith(`${this.bootId}-`) || this.carried.delete(cmdId));
          if (cm && cmdId && mayHaveRows && status && !Number.isNaN(cmdTs)) {
            let applied: Record<string, number> | null = null;
            const sig = f.get("applied");
            if (sig) {
              let bySignal: Record<string, unknown> = {};
              try {
                bySignal = JSON.parse(sig) as Record<string, unknown>;
              } catch {
                // not this platform's format: the ack is recorded without the applied state
              }
              applied = {};
              for (const [a, s] of cm.outputs) {
                const v = bySignal[s];
                if (typeof v === "number") applied[a] = v;
              }
            }
            const actuators = new Set(cm.outputs.keys());
            const tries = f.get("tries") ?? "?";
            await insertCommandOutcome(db, {
              command_id: cmdId,
              command_time: new Date(cmdTs),
              device_ids: [...new Set(site.actuators.filter((a) => actuators.has(a.id)).map((a) => a.device_id))],
              time: new Date(Date.parse(f.get("ts") ?? "") || cmdTs),
              ack_status: status,
              reason:
                status === "acked"
                  ? `acknowledged by the node (seq ${f.get("seq")}, ${tries} ${tries === "1" ? "try" : "tries"})`
                  : `${outcome.replace("_", " ")}: ${f.get("reason") ?? ""}`,
              applied,
            });
          }
          await redis.xack(keys.cmdAck, group, id);
          if (this.ackCursor !== ">") this.ackCursor = id;
        }
      }
    } catch (err) {
      this.ackGroupReady = false;
      this.ackCursor = "0";
      log.warn({ err: (err as Error).message }, "command outcomes kept for the next cycle");
    }
  }

  /** Health (read by cea-backend's alerts, /health and the monitors) and each actuator's state for the monitors. */
  private async publish(nowMs: number): Promise<void> {
    if (!this.redisUp()) return;
    const { redis, keys, config } = this.d;
    const problems: string[] = [];
    if (this.outage.redis) problems.push(this.outage.redis);
    if (this.outage.db) problems.push(this.outage.db);
    for (const [room, why] of this.failsafes) problems.push(`${room}: ${why}`);
    for (const [message, why] of this.unacknowledged) problems.push(`command ${message} unacknowledged: ${why}`);
    const body = JSON.stringify({
      service: "automation-service",
      status: problems.length ? "degraded" : "ok",
      reason: problems.length ? problems.join("; ") : null,
      dry_run: this.d.dryRun,
      pid: process.pid,
      at: new Date(nowMs).toISOString(),
      cycles: this.stats.cycles,
      pending_events: this.pending.length,
      unacknowledged: Object.fromEntries(this.unacknowledged),
    });
    const fields: string[] = [];
    for (const dec of this.lastDecisions)
      fields.push(
        dec.actuator,
        JSON.stringify({
          room: this.plan.rooms.get(dec.room_id)?.name ?? dec.room_id,
          state: dec.state ? "on" : "off",
          action: dec.action,
          reason: dec.reason,
          failsafe: dec.failsafe,
          dry_run: this.d.dryRun,
          time: new Date(nowMs).toISOString(),
        }),
      );
    try {
      const m = redis.multi().set(keys.health("automation-service"), body, "EX", config.CEA_HEALTH_TTL_S);
      if (fields.length) m.hset(keys.automation, ...fields).expire(keys.automation, config.CEA_HEALTH_TTL_S);
      await m.exec();
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, "health not published; the next cycle retries");
    }
  }

  /** Run a cycle every interval until stop(). */
  start(): void {
    const every = this.d.config.CEA_AUTOMATION_INTERVAL_MS;
    const loop = () => {
      if (this.stopping) return;
      const started = Date.now();
      this.running = this.cycle()
        .then(
          () => undefined,
          (err: unknown) => this.d.log.error({ err }, "decision cycle failed; the next one retries"),
        )
        .finally(() => {
          this.running = null;
          if (!this.stopping) this.timer = setTimeout(loop, Math.max(0, every - (Date.now() - started)));
        });
    };
    loop();
  }

  /** Stop: finish the cycle in hand, then one last cycle that puts every actuator in its safe state. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.cycle(true);
  }
}
