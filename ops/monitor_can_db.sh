#!/usr/bin/env bash
# CAN pipeline and database monitor: the newest measurements with their room,
# sensor and device; the consumer group (XPENDING, unacked count, lag); the
# Redis live values with their age; the measurement ingestion rate; the
# dead-letter count; the silent sensors; the active alerts.
#
#   ops/monitor_can_db.sh [--once] [--interval N] [--sample N]
#
#   --once        print once and exit: 0, or 2 when PostgreSQL or Redis is down
#   --interval N  refresh every N seconds (default 5) until Ctrl-C
#   --sample N    with --once: seconds over which the insert rate is sampled
#                 (default 2; 0 = skip); in the loop it is sampled between refreshes
#
# Needs only psql and redis-cli. Settings: CEA_READER_DATABASE_URL (the read-only
# role; else CEA_DATABASE_URL), CEA_REDIS_URL,
# CEA_REDIS_PREFIX, CEA_STREAM, CEA_GROUP, CEA_DEAD_STREAM, CEA_SILENT_INTERVALS,
# CEA_SENSOR_INTERVAL_S from the environment,
# else /etc/cea/cea.env (CEA_ENV_FILE), else the checkout's .state/stack.env.
# Colours only on a terminal; NO_COLOR turns them off.
set -u -o pipefail
USAGE=$(sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//')
# shellcheck source-path=SCRIPTDIR source=monitor_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/monitor_common.sh"

# The plan's query: newest measurements joined to sensor, device and room,
# taken per sensor over the (sensor_id, time DESC) key (there is no time index).
SQL_RECENT="SELECT r.name AS room, s.name AS sensor, d.name AS device, m.value, m.status,
       to_char(m.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS timestamp
FROM sensor s
JOIN device d ON s.device_id = d.device_id
JOIN room r ON d.room_id = r.room_id
CROSS JOIN LATERAL (SELECT time, value, status FROM measurement
                    WHERE sensor_id = s.sensor_id ORDER BY time DESC LIMIT 10) m
ORDER BY m.time DESC
LIMIT 10"

render() {
  mon_header "CEA CAN + database monitor"
  mon_probe

  mon_section "recent measurements (measurement + sensor + device + room)"
  if ((PG_UP)); then
    local out
    if out=$(mon_psql -P pager=off -P footer=off -c "$SQL_RECENT" 2>&1); then
      if [[ $(wc -l <<<"$out") -le 2 ]]; then echo "(no measurements yet)"; else echo "$out"; fi
    else
      echo "${C_RED}query failed${C_OFF}: $out"
    fi
  else
    echo "(skipped: PostgreSQL is down)"
  fi

  mon_part "consumer group status" redis mon_group_status summary
  mon_part "live values ($K_LIVE)" redis mon_live_values
  mon_part "measurement ingestion rate" pg mon_ingestion_rate
  mon_part "dead letters" redis mon_dead_letters
  mon_part "silent sensors" pg mon_silent_sensors
  mon_part "actuators (automation-service)" redis mon_actuators
  mon_part "active alerts (cea-backend)" redis mon_alerts
}

mon_parse_args "$@"
mon_setup
mon_run render
