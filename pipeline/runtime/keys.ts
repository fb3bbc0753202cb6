import type { Config } from "./config.js";

/**
 * Every Redis key the platform uses, in one place. Contract (also in
 * ops/IMPLEMENTATION_SUMMARY.md):
 * - raw:     stream, one entry per CAN frame: fields ts (receive time, ISO 8601 UTC
 *            with microseconds), id (arbitration id, decimal), data (hex), iface,
 *            ext ("1" = 29-bit id), fd ("1" = CAN FD), src (socketcan | simulator |
 *            replay; absent = an older scanner's live bus)
 * - dead:    stream of dead letters: fields orig_id, reason, deliveries, cause (when
 *            repeats of it are counted), and the original entry's fields; bounded
 *            by CEA_DEAD_MAXLEN and CEA_DEAD_MAX_AGE_S
 * - deadCauses: hash, field = cause (unknown-id:0x6ff, unmapped:Climate_N9), value =
 *            dead letters of that cause (only the first of each is in the stream)
 * - live:    hash, field = sensor_id, value = JSON {"value": number, "time": ISO,
 *            "name": sensor name}; kept current by can-scanner
 * - health:  string with an expiry per service instance, JSON status
 * - stats:   hash per service with counters (e.g. can-scanner: dropped_hard_limit,
 *            dropped_buffer, appended)
 * - cmd:     stream of command frames for the bus (automation-service appends,
 *            can-scanner transmits): fields ts, id, data, ext, fd like raw, plus
 *            message, seq, watchdog_s, cmd_id; see ops/IMPLEMENTATION_SUMMARY.md
 * - cmdAck:  stream of command outcomes (can-scanner appends, automation-service
 *            reads): fields ts, cmd_entry, cmd_id, message, seq, outcome, tries,
 *            status_message, applied, safe, reason; see ops/IMPLEMENTATION_SUMMARY.md
 * - automation: hash of automation-service's view for the monitors: field =
 *            actuator id, value = JSON {room, state, action, reason, time, failsafe}
 * - alerts:  hash of the active alert conditions (cea-backend): field = alert id,
 *            value = "severity|since|summary", plus _evaluated_at; with an expiry
 */
export function redisKeys(
  config: Pick<Config, "CEA_REDIS_PREFIX" | "CEA_STREAM" | "CEA_DEAD_STREAM"> &
    Partial<Pick<Config, "CEA_CMD_STREAM" | "CEA_CMD_ACK_STREAM">>,
) {
  const p = config.CEA_REDIS_PREFIX;
  return {
    raw: p + config.CEA_STREAM,
    dead: p + config.CEA_DEAD_STREAM,
    deadCauses: `${p}${config.CEA_DEAD_STREAM}:causes`,
    live: `${p}live:values`,
    health: (service: string) => `${p}health:${service}`,
    stats: (service: string) => `${p}stats:${service}`,
    alerts: `${p}alerts`,
    cmd: p + (config.CEA_CMD_STREAM ?? "can:cmd"),
    cmdAck: p + (config.CEA_CMD_ACK_STREAM ?? "can:cmd:ack"),
    automation: `${p}automation:actuators`,
  };
}

export type RedisKeys = ReturnType<typeof redisKeys>;
