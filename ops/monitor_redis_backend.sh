#!/usr/bin/env bash
# Redis stream and backend monitor: the consumer group (pending, lag, each
# consumer's idle time), backpressure (backlog above 5000 yellow, above
# 50 000 or 80 % of the hard limit red), the scanner's drop counters, service
# health keys, a schema health check (measurements in the last hour, latest
# measurement, schema accessible), the newest stream entries, the live sensor
# values, the ingestion rate, the dead letters and the active alerts.
#
#   ops/monitor_redis_backend.sh [--once] [--interval N] [--sample N]
#
#   --once        print once and exit: 0, or 2 when PostgreSQL or Redis is down
#   --interval N  refresh every N seconds (default 5) until Ctrl-C
#   --sample N    with --once: seconds over which the insert rate is sampled
#                 (default 2; 0 = skip); in the loop it is sampled between refreshes
#
# Needs only psql and redis-cli. Settings: CEA_READER_DATABASE_URL (the read-only
# role; else CEA_DATABASE_URL), CEA_REDIS_URL,
# CEA_REDIS_PREFIX, CEA_STREAM, CEA_GROUP, CEA_DEAD_STREAM,
# CEA_STREAM_WARN_LENGTH (5000), CEA_STREAM_HARD_LIMIT from the environment,
# else /etc/cea/cea.env (CEA_ENV_FILE), else the checkout's .state/stack.env;
# MONITOR_CRIT_LENGTH (50000) sets the red threshold. Colours only on a
# terminal; NO_COLOR turns them off.
set -u -o pipefail
USAGE=$(sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//')
# shellcheck source-path=SCRIPTDIR source=monitor_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/monitor_common.sh"

# Schema health: every table the pipeline needs is there (NULL otherwise),
# rows of the last hour, and the newest measurement with its age.
SQL_SCHEMA="SELECT array_to_string(ARRAY(
         SELECT t FROM unnest(ARRAY['facility','zone','room','rack','device','sensor','measurement',
                                    'measurement_hourly','measurement_daily']) AS t
         WHERE to_regclass(t) IS NULL), ',')"
# Both per sensor over the (sensor_id, time DESC) key: there is no time index.
SQL_HEALTH="SELECT coalesce(sum(n), 0),
       coalesce(to_char(max(t) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'none'),
       coalesce(round(extract(epoch FROM now() - max(t))::numeric, 1)::text, '-')
FROM sensor s
CROSS JOIN LATERAL (SELECT count(*) AS n FROM measurement m
                    WHERE m.sensor_id = s.sensor_id AND m.time > now() - interval '1 hour') hour
LEFT JOIN LATERAL (SELECT time AS t FROM measurement m
                   WHERE m.sensor_id = s.sensor_id ORDER BY time DESC LIMIT 1) newest ON true"

schema_health() {
  local missing row
  if ! missing=$(pq -c "$SQL_SCHEMA" 2>&1); then
    echo "${C_RED}schema NOT accessible${C_OFF}: $missing"
    return
  fi
  if [[ -n "$missing" ]]; then
    echo "${C_RED}schema INCOMPLETE${C_OFF}: missing $missing (run: node dist/pipeline/cli.js schema apply)"
    return
  fi
  echo "${C_GRN}schema accessible${C_OFF} (metadata tables, measurement, measurement_hourly, measurement_daily)"
  if ! row=$(pq -c "$SQL_HEALTH" 2>&1); then
    echo "${C_RED}query failed${C_OFF}: $row"
    return
  fi
  local last_hour latest age
  IFS=$'\t' read -r last_hour latest age <<<"$row"
  echo "measurements in the last hour: $last_hour"
  echo "latest measurement: $latest (age ${age} s)"
}

scanner_stats() {
  local -A st=()
  local key=${PREFIX}stats:can-scanner
  mon_pairs st HGETALL "$key"
  if ((${#st[@]} == 0)); then
    echo "(no counters in $key: the scanner has not run with this prefix)"
    return
  fi
  local drops=$((${st[dropped_hard_limit]:-0} + ${st[dropped_buffer]:-0}))
  echo "appended: ${st[appended]:-0}"
  if ((drops > 0)); then
    echo "${C_RED}DROPPED frames${C_OFF}: dropped_hard_limit ${st[dropped_hard_limit]:-0}, dropped_buffer ${st[dropped_buffer]:-0}"
  else
    echo "dropped_hard_limit: ${st[dropped_hard_limit]:-0}   dropped_buffer: ${st[dropped_buffer]:-0}"
  fi
  if ((${st[skipped_lines]:-0} > 0)); then
    echo "${C_YEL}replay: ${st[skipped_lines]} log lines left out${C_OFF} (not candump -l frames; the scanner's log names file:line)"
  fi
}

health_keys() {
  local key val ttl any=0
  while IFS= read -r key; do
    [[ -n "$key" ]] || continue
    any=1
    val=$(rcli GET "$key" 2>/dev/null)
    ttl=$(rcli TTL "$key" 2>/dev/null)
    printf '%-36s ttl %4ss  %s\n' "${key#"$PREFIX"}" "$ttl" "${val:0:160}"
  done < <(rcli --scan --pattern "${PREFIX}health:*" 2>/dev/null | sort)
  ((any)) || echo "${C_YEL}no health keys${C_OFF} (no service has reported within its health TTL)"
}

recent_entries() {
  local -a lines=()
  mapfile -t lines < <(rcli XREVRANGE "$K_RAW" + - COUNT 5 2>/dev/null)
  if ((${#lines[@]} == 0)); then
    echo "(no entries)"
    return
  fi
  # raw reply: entry id, then field/value lines; the next id starts a new entry
  local i=0 out="" l
  for l in "${lines[@]}"; do
    if [[ "$l" =~ ^[0-9]+-[0-9]+$ ]] && ((i % 2 == 0)); then
      [[ -n "$out" ]] && echo "$out"
      out="$l"
      i=0
      continue
    fi
    if ((i % 2 == 0)); then out+="  $l="; else out+="$l"; fi
    i=$((i + 1))
  done
  [[ -n "$out" ]] && echo "$out"
}

render() {
  mon_header "CEA Redis + backend monitor"
  mon_probe

  mon_part "consumer group" redis mon_group_status consumers
  mon_part "backpressure" redis mon_backpressure
  mon_part "can-scanner counters (${PREFIX}stats:can-scanner)" redis scanner_stats
  mon_part "service health keys" redis health_keys
  mon_part "schema health" pg schema_health
  mon_part "newest stream entries ($K_RAW)" redis recent_entries
  mon_part "live sensor values ($K_LIVE)" redis mon_live_values
  mon_part "measurement ingestion rate" pg mon_ingestion_rate
  mon_part "dead letters" redis mon_dead_letters
  mon_part "actuators (automation-service)" redis mon_actuators
  mon_part "active alerts (cea-backend)" redis mon_alerts
}

mon_parse_args "$@"
mon_setup
mon_run render
