import client from "prom-client";
import { COMMAND_OUTCOMES } from "../../stages/command-transmit.js";
import { counterFrom, gaugeFrom, type Registry } from "../runtime/metrics.js";
import type { AutomationService } from "./service.js";

// automation-service's metrics, read from the service's own state when
// Prometheus scrapes. Labels are bounded by the site file (actuator, room) and
// by the controller's fixed vocabularies (action, reason class).

export const ACTIONS = ["on", "off", "hold", "safe"] as const;
export const REASON_CLASSES = [
  "control",
  "min_time",
  "conflict",
  "stagger",
  "no_setpoint",
  "stale",
  "bad_status",
  "no_reading",
  "outage",
  "stopping",
] as const;

export interface AutomationMetrics {
  /** Give to the service as onCycle. */
  observeCycle(seconds: number): void;
}

export function registerAutomationMetrics(registry: Registry, svc: () => AutomationService | null): AutomationMetrics {
  const cycle = new client.Histogram({
    name: "cea_automation_cycle_duration_seconds",
    help: "Time of one decision cycle for every actuator (reads, decisions, commands, events)",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  counterFrom(
    registry,
    "cea_automation_decisions_total",
    "Decisions other than keep, by action and reason class",
    ["action", "reason_class"],
    () => {
      const seen = svc()?.stats.decisions ?? new Map<string, number>();
      return ACTIONS.flatMap((action) =>
        REASON_CLASSES.map((rc) => [{ action, reason_class: rc }, seen.get(`${action}|${rc}`) ?? 0] as const),
      );
    },
  );
  gaugeFrom(
    registry,
    "cea_automation_actuator_state",
    "1 while the actuator's output is on (as decided), 0 while off",
    ["actuator", "room"],
    () => {
      const s = svc();
      if (!s) return [];
      return s.plan.actuators.map(
        (a) =>
          [
            { actuator: a.id, room: s.plan.rooms.get(a.room_id)?.name ?? String(a.room_id) },
            s.state.get(a.id)?.on ? 1 : 0,
          ] as const,
      );
    },
  );
  gaugeFrom(registry, "cea_automation_failsafe_active", "1 while a room has an actuator in fail-safe", ["room"], () => {
    const s = svc();
    if (!s) return [];
    return [...s.plan.rooms.values()].map((r) => [{ room: r.name }, s.failsafes.has(r.name) ? 1 : 0] as const);
  });
  counterFrom(registry, "cea_automation_commands_total", "Command frames appended to the command stream", [], () => [
    [{}, svc()?.stats.commandsSent ?? 0] as const,
  ]);
  counterFrom(registry, "cea_automation_events_written_total", "Decisions recorded in actuator_events", [], () => [
    [{}, svc()?.stats.eventsWritten ?? 0] as const,
  ]);
  counterFrom(
    registry,
    "cea_automation_events_dropped_total",
    "Decisions never recorded (PostgreSQL unreachable past the buffer)",
    [],
    () => [[{}, svc()?.stats.eventsDropped ?? 0] as const],
  );
  counterFrom(
    registry,
    "cea_automation_command_outcomes_total",
    "Command outcomes recorded from can:cmd:ack, by outcome",
    ["outcome"],
    () => {
      const seen = svc()?.stats.outcomes ?? new Map<string, number>();
      const known = COMMAND_OUTCOMES.map((o) => [{ outcome: o }, seen.get(o) ?? 0] as const);
      // an outcome a newer scanner reports and this service does not know: counted, not dropped
      let other = 0;
      for (const [o, n] of seen) if (!(COMMAND_OUTCOMES as readonly string[]).includes(o)) other += n;
      return [...known, [{ outcome: "other" }, other] as const];
    },
  );
  gaugeFrom(
    registry,
    "cea_automation_command_unacknowledged",
    "1 while the last command of this message went unacknowledged by its node (cleared by the next ack)",
    ["message"],
    () => {
      const s = svc();
      if (!s) return [];
      return s.commandMessages.map((m) => [{ message: m }, s.unacknowledged.has(m) ? 1 : 0] as const);
    },
  );
  gaugeFrom(registry, "cea_automation_events_pending", "Decisions waiting for PostgreSQL", [], () => [
    [{}, svc()?.pending.length ?? 0] as const,
  ]);
  return { observeCycle: (s) => cycle.observe(s) };
}
