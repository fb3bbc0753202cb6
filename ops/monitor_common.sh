# shellcheck shell=bash
# Shared by ops/monitor_can_db.sh and ops/monitor_redis_backend.sh (sourced,
# not run). Needs only bash, coreutils, psql and redis-cli.
#
# Settings, in this order of precedence: the caller's environment; the
# monitors' own file CEA_MONITOR_ENV_FILE (default /etc/cea/monitor.env, e.g.
# the read-only role's CEA_READER_DATABASE_URL with its password), then
# CEA_ENV_FILE (default /etc/cea/cea.env); the checkout's .state/stack.env
# (CEA_STATE_DIR) when run from a checkout; the built-in defaults of
# pipeline/runtime/config.ts. The database is CEA_READER_DATABASE_URL (role
# cea_reader), else CEA_DATABASE_URL.
#
# Passwords never go on a command line (any user can read those with ps):
# psql and redis-cli get the URL or host without the password, and the
# password in the environment of that one command (PGPASSWORD, REDISCLI_AUTH).

MON_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# shellcheck source-path=SCRIPTDIR source=env_file.sh
source "$(dirname "${BASH_SOURCE[0]}")/env_file.sh"

mon_setup() {
  local env_file=${CEA_ENV_FILE:-/etc/cea/cea.env}
  local own_file=${CEA_MONITOR_ENV_FILE:-/etc/cea/monitor.env}
  local stack_env=${CEA_STATE_DIR:-$MON_HERE/../.state}/stack.env
  # A caller who names the database (CEA_DATABASE_URL) without a read-only URL
  # means that database: a file's CEA_READER_DATABASE_URL is for its own.
  local caller_db=${CEA_DATABASE_URL:-} caller_reader=${CEA_READER_DATABASE_URL:-}
  MON_SETTINGS="defaults"
  if [[ -r "$own_file" ]]; then cea_load_env_file "$own_file"; fi
  if [[ -r "$env_file" ]]; then
    cea_load_env_file "$env_file"
    MON_SETTINGS=$env_file
  elif [[ -r "$stack_env" ]]; then
    cea_load_env_file "$stack_env"
    MON_SETTINGS="$stack_env (local stack)"
  fi
  # the monitors only read: as the read-only role (cea_reader) when it is configured
  if [[ -n "$caller_db" && -z "$caller_reader" ]]; then
    DB_URL=$caller_db
  else
    DB_URL=${CEA_READER_DATABASE_URL:-${CEA_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/cea}}
  fi
  REDIS_URL=${CEA_REDIS_URL:-redis://127.0.0.1:6379}
  PREFIX=${CEA_REDIS_PREFIX:-}
  GROUP=${CEA_GROUP:-can-worker-group}
  K_RAW=$PREFIX${CEA_STREAM:-can:raw}
  K_DEAD=$PREFIX${CEA_DEAD_STREAM:-can:dead}
  K_LIVE=${PREFIX}live:values
  WARN_LENGTH=${CEA_STREAM_WARN_LENGTH:-5000}
  HARD_LIMIT=${CEA_STREAM_HARD_LIMIT:-2000000}
  # red above this length, or above 80 % of the hard limit, whichever is lower
  CRIT_LENGTH=${MONITOR_CRIT_LENGTH:-50000}
  if ((HARD_LIMIT * 8 / 10 < CRIT_LENGTH)); then CRIT_LENGTH=$((HARD_LIMIT * 8 / 10)); fi
  PSQL=${PSQL:-psql}
  REDIS_CLI=${REDIS_CLI:-redis-cli}
  mon_split_db_url "$DB_URL"
  mon_redis_conn "$REDIS_URL"

  # colours only on a terminal, and never when NO_COLOR is set (no-color.org)
  if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    C_RED=$'\e[31m' C_YEL=$'\e[33m' C_GRN=$'\e[32m' C_BOLD=$'\e[1m' C_OFF=$'\e[0m'
  else
    C_RED="" C_YEL="" C_GRN="" C_BOLD="" C_OFF=""
  fi
}

# Parse the common options into ONCE, INTERVAL, SAMPLE; USAGE is the caller's.
mon_parse_args() {
  ONCE=0 INTERVAL=5 SAMPLE=2
  while (($# > 0)); do
    case "$1" in
      --once) ONCE=1 ;;
      --interval)
        INTERVAL=${2:-}
        shift
        ;;
      --sample)
        SAMPLE=${2:-}
        shift
        ;;
      -h | --help)
        echo "$USAGE"
        exit 0
        ;;
      *)
        echo "unknown argument: $1" >&2
        echo "$USAGE" >&2
        exit 64
        ;;
    esac
    shift
  done
  if ! [[ "$INTERVAL" =~ ^[1-9][0-9]*$ && "$SAMPLE" =~ ^[0-9]+$ ]]; then
    echo "--interval needs a whole number of seconds >= 1, --sample one >= 0" >&2
    exit 64
  fi
}

# A URL without its password, for display.
mon_redact() { cea_redact_url "$1"; }

# Percent-decoding of a URL part (a backslash stays a backslash).
mon_urldecode() {
  local s=${1//\\/\\\\}
  printf '%b' "${s//%/\\x}"
}

# DB_URL → DB_URL_NOPASS (the URL without its password) and DB_PASS (decoded).
mon_split_db_url() {
  local url=$1 userinfo
  DB_URL_NOPASS=$url DB_PASS=""
  if [[ "$url" =~ ^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#]*)@(.*)$ ]]; then
    userinfo=${BASH_REMATCH[2]}
    if [[ "$userinfo" == *:* ]]; then
      DB_PASS=$(mon_urldecode "${userinfo#*:}")
      DB_URL_NOPASS="${BASH_REMATCH[1]}${userinfo%%:*}@${BASH_REMATCH[3]}"
    fi
  fi
}

# REDIS_URL (redis[s]://[user][:password]@host[:port][/db]) → REDIS_ARGS for
# redis-cli (-h, -p, -n, --user, --tls) and REDIS_PASS (decoded).
mon_redis_conn() {
  local url=$1 rest userinfo hostport path
  REDIS_ARGS=() REDIS_PASS=""
  if ! [[ "$url" =~ ^(rediss?)://(.*)$ ]]; then
    REDIS_ARGS=(-u "$url")
    return
  fi
  [[ "${BASH_REMATCH[1]}" == rediss ]] && REDIS_ARGS+=(--tls)
  rest=${BASH_REMATCH[2]}
  if [[ "$rest" =~ ^([^/?#]*)@(.*)$ ]]; then
    userinfo=${BASH_REMATCH[1]}
    rest=${BASH_REMATCH[2]}
    if [[ "$userinfo" == *:* ]]; then
      REDIS_PASS=$(mon_urldecode "${userinfo#*:}")
      userinfo=${userinfo%%:*}
    fi
    [[ -z "$userinfo" ]] || REDIS_ARGS+=(--user "$(mon_urldecode "$userinfo")")
  fi
  hostport=${rest%%[/?#]*}
  path=${rest#"$hostport"}
  if [[ "$hostport" =~ ^\[([^]]*)\](:([0-9]+))?$ || "$hostport" =~ ^([^:]*)(:([0-9]+))?$ ]]; then
    REDIS_ARGS+=(-h "${BASH_REMATCH[1]:-127.0.0.1}" -p "${BASH_REMATCH[3]:-6379}")
  fi
  if [[ "$path" =~ ^/([0-9]+) ]]; then REDIS_ARGS+=(-n "${BASH_REMATCH[1]}"); fi
}

mon_header() {
  echo "${C_BOLD}== $1 — $(date '+%Y-%m-%d %H:%M:%S %Z')${C_OFF}"
  echo "settings: $MON_SETTINGS"
  echo "PostgreSQL: $(mon_redact "$DB_URL")   Redis: $(mon_redact "$REDIS_URL")   key prefix: '${PREFIX}'"
}

mon_section() { printf '\n%s-- %s%s\n' "$C_BOLD" "$1" "$C_OFF"; }

# One section: its title, then the command when the service it reads (redis
# or pg) answered the probe, else a line saying why it was skipped.
mon_part() {
  local title=$1 needs=$2
  shift 2
  mon_section "$title"
  case $needs in
    redis) if ((REDIS_UP)); then "$@"; else echo "(skipped: Redis is down)"; fi ;;
    pg) if ((PG_UP)); then "$@"; else echo "(skipped: PostgreSQL is down)"; fi ;;
  esac
}

# redis-cli with the connection settings; -e makes an error reply exit 1.
rcli() {
  if [[ -n "$REDIS_PASS" ]]; then
    REDISCLI_AUTH=$REDIS_PASS timeout 10 "$REDIS_CLI" "${REDIS_ARGS[@]}" --no-auth-warning -e "$@"
  else
    timeout 10 "$REDIS_CLI" "${REDIS_ARGS[@]}" --no-auth-warning -e "$@"
  fi
}

# psql with the connection settings (the password, if any, in its environment).
mon_psql() {
  if [[ -n "$DB_PASS" ]]; then
    PGPASSWORD=$DB_PASS PGCONNECT_TIMEOUT=5 PGAPPNAME=cea-monitor timeout 30 "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DB_URL_NOPASS" "$@"
  else
    PGCONNECT_TIMEOUT=5 PGAPPNAME=cea-monitor timeout 30 "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DB_URL_NOPASS" "$@"
  fi
}

# psql, unaligned, no headers, tab-separated; the query on stdin or with -c.
pq() { mon_psql -A -t -F $'\t' "$@"; }

# Probe both dependencies; sets REDIS_UP / PG_UP and prints a clear line for a down one.
mon_probe() {
  local out
  REDIS_UP=1 PG_UP=1
  if ! out=$(rcli PING 2>&1) || [[ "$out" != PONG ]]; then
    REDIS_UP=0
    echo "${C_RED}REDIS DOWN${C_OFF} at $(mon_redact "$REDIS_URL"): ${out//$'\n'/ }"
  fi
  if ! out=$(pq -c "SELECT 1" 2>&1); then
    PG_UP=0
    echo "${C_RED}POSTGRESQL DOWN${C_OFF} at $(mon_redact "$DB_URL"): ${out//$'\n'/ }"
  fi
}

# "key value" lines of a flat Redis reply (HGETALL, XINFO ...) into an
# associative array named by $1.
# shellcheck disable=SC2034 # into is a nameref: assigning it fills the caller's array
mon_pairs() {
  local -n into=$1
  shift
  local k v
  into=()
  while IFS= read -r k && IFS= read -r v; do into["$k"]=$v; done < <(rcli "$@" 2>/dev/null)
}

# seconds (one decimal) since an ISO 8601 time, or "?" when it cannot be parsed
mon_age() {
  local t now
  t=$(date -d "$1" +%s%N 2>/dev/null) || {
    echo "?"
    return
  }
  now=$(date +%s%N)
  awk -v d="$((now - t))" 'BEGIN { printf "%.1f", d / 1e9 }'
}

# Consumer group status of the raw stream: length, XINFO GROUPS (pending,
# lag, entries-read), XPENDING summary; with "consumers" also each consumer's
# pending count and idle time ("summary" without). Sets GROUP_PENDING, GROUP_LAG, STREAM_LENGTH.
mon_group_status() {
  local detail=$1
  local -A stream=() g=()
  local name found=0
  STREAM_LENGTH=$(rcli XLEN "$K_RAW" 2>/dev/null) || STREAM_LENGTH="?"
  GROUP_PENDING="?" GROUP_LAG="?"
  echo "stream $K_RAW"
  echo "  stream length: $STREAM_LENGTH"
  if [[ "$STREAM_LENGTH" == 0 ]] && [[ $(rcli EXISTS "$K_RAW" 2>/dev/null) == 0 ]]; then
    echo "  (the stream does not exist yet: no scanner has written to it)"
    return
  fi
  mon_pairs stream XINFO STREAM "$K_RAW"
  echo "  entries added (ever): ${stream[entries-added]:-?}   last entry id: ${stream[last-generated-id]:-?}"
  # XINFO GROUPS answers a list of flat maps; walk it field by field
  local k v
  while IFS= read -r k && IFS= read -r v; do
    if [[ "$k" == name ]]; then
      ((found)) && break
      [[ "$v" == "$GROUP" ]] && found=1
    fi
    ((found)) && g[$k]=$v
  done < <(rcli XINFO GROUPS "$K_RAW" 2>/dev/null)
  if ((!found)); then
    echo "  ${C_YEL}consumer group $GROUP does not exist${C_OFF} (no worker has started on this stream)"
    return
  fi
  GROUP_PENDING=${g[pending]:-?}
  GROUP_LAG=${g[lag]:-}
  echo "consumer group $GROUP"
  echo "  consumers: ${g[consumers]:-?}   last delivered id: ${g[last-delivered-id]:-?}"
  echo "  pending (delivered, unacked): $GROUP_PENDING"
  if [[ -z "$GROUP_LAG" ]]; then
    # Redis cannot compute the lag after some deletions; estimate it
    GROUP_LAG="?"
    echo "  consumer lag: unknown to Redis (entries read ${g[entries-read]:-?} of ${stream[entries-added]:-?} added)"
  else
    echo "  consumer lag (not yet delivered): $GROUP_LAG   (entries read ${g[entries-read]:-?} of ${stream[entries-added]:-?} added)"
  fi
  if [[ "$GROUP_LAG" =~ ^[0-9]+$ && "$GROUP_PENDING" =~ ^[0-9]+$ ]]; then
    echo "  backlog (lag + pending): $((GROUP_LAG + GROUP_PENDING))"
  fi
  # XPENDING summary: count, smallest id, greatest id, then consumer/count pairs
  local -a xp=()
  mapfile -t xp < <(rcli XPENDING "$K_RAW" "$GROUP" 2>/dev/null)
  if ((${#xp[@]} >= 1)) && [[ "${xp[0]}" != 0 ]]; then
    echo "  XPENDING: ${xp[0]} unacked, ids ${xp[1]:-?} .. ${xp[2]:-?}"
    local i
    for ((i = 3; i + 1 < ${#xp[@]}; i += 2)); do echo "    ${xp[i]}: ${xp[i + 1]} unacked"; done
  else
    echo "  XPENDING: 0 unacked"
  fi
  if [[ "$detail" == consumers ]]; then
    echo "  consumers (pending, idle):"
    local c="" p="" idle="" any=0
    while IFS= read -r k && IFS= read -r v; do
      case "$k" in
        name) c=$v ;;
        pending) p=$v ;;
        idle)
          idle=$v
          any=1
          printf '    %-24s pending %-8s idle %ss\n' "$c" "$p" "$(awk -v ms="$idle" 'BEGIN { printf "%.1f", ms / 1000 }')"
          ;;
      esac
    done < <(rcli XINFO CONSUMERS "$K_RAW" "$GROUP" 2>/dev/null)
    ((any)) || echo "    (none)"
  fi
}

# Backpressure is about the backlog: entries the workers have not acknowledged
# (lag + pending). The stream itself always holds about CEA_STREAM_TRIM_ACKED
# acknowledged entries on purpose, so its length alone says little. Without a
# group nothing counts as acknowledged, so the whole stream is the backlog.
mon_backpressure() {
  local len=$STREAM_LENGTH backlog
  if [[ "$GROUP_LAG" =~ ^[0-9]+$ && "$GROUP_PENDING" =~ ^[0-9]+$ ]]; then
    backlog=$((GROUP_LAG + GROUP_PENDING))
  elif [[ "$GROUP_PENDING" == "?" && "$GROUP_LAG" == "?" && "$len" =~ ^[0-9]+$ ]]; then
    backlog=$len
  fi
  if ! [[ "${backlog:-}" =~ ^[0-9]+$ ]]; then
    echo "backpressure: unknown (backlog unavailable; stream length $len)"
  elif ((backlog > CRIT_LENGTH)); then
    echo "${C_RED}CRITICAL backpressure: backlog $backlog > $CRIT_LENGTH${C_OFF} (stream length $len, hard limit $HARD_LIMIT): is can-worker running and is PostgreSQL up?"
  elif ((backlog > WARN_LENGTH)); then
    echo "${C_YEL}WARNING backpressure: backlog $backlog > $WARN_LENGTH${C_OFF} (stream length $len; red above $CRIT_LENGTH)"
  else
    echo "${C_GRN}backpressure: ok${C_OFF} (backlog $backlog <= $WARN_LENGTH; stream length $len)"
  fi
}

# The live values hash: sensor id, name, value, time, age in seconds.
mon_live_values() {
  local -A live=()
  local id json name value time
  mon_pairs live HGETALL "$K_LIVE"
  if ((${#live[@]} == 0)); then
    echo "(no live values in $K_LIVE: is can-scanner running?)"
    return
  fi
  printf '%-8s %-24s %12s  %-32s %s\n' sensor name value time "age (s)"
  for id in $(printf '%s\n' "${!live[@]}" | sort -n); do
    json=${live[$id]}
    name="?" value="?" time="?"
    [[ "$json" =~ \"name\":\"([^\"]*)\" ]] && name=${BASH_REMATCH[1]}
    [[ "$json" =~ \"value\":(-?[0-9][0-9.eE+-]*|null|true|false) ]] && value=${BASH_REMATCH[1]}
    [[ "$json" =~ \"time\":\"([^\"]*)\" ]] && time=${BASH_REMATCH[1]}
    printf '%-8s %-24s %12s  %-32s %s\n' "$id" "$name" "$value" "$time" "$(mon_age "$time")"
  done
}

# Rows the hypertable's chunks have taken in (pg_stat, all time), for sampling.
MON_SQL_INSERTED="SELECT coalesce(sum(s.n_tup_ins), 0)::bigint
  FROM pg_stat_user_tables s
  JOIN timescaledb_information.chunks c ON c.chunk_schema = s.schemaname AND c.chunk_name = s.relname
  WHERE c.hypertable_name = 'measurement'"

# Rows of the last minute, counted per sensor over the (sensor_id, time DESC)
# key: without a time index a plain count would scan the whole current chunk.
MON_SQL_LAST_MINUTE="SELECT coalesce(sum(n), 0) FROM sensor s CROSS JOIN LATERAL
  (SELECT count(*) AS n FROM measurement m WHERE m.sensor_id = s.sensor_id AND m.time > now() - interval '1 minute') x"

# Ingestion rate: rows/s over the last minute of measurement time from the
# table, and rows/s inserted over a short interval by sampling the chunks'
# insert counters (in a refresh loop: since the previous refresh).
mon_ingestion_rate() {
  local last_min
  last_min=$(pq -c "$MON_SQL_LAST_MINUTE" 2>&1) || {
    echo "ingestion rate: query failed: $last_min"
    return
  }
  echo "last minute (by measurement time): $last_min rows, $(awk -v n="$last_min" 'BEGIN { printf "%.1f", n / 60 }') rows/s"
  local now_ns ins
  now_ns=$(date +%s%N)
  ins=$(pq -c "$MON_SQL_INSERTED" 2>/dev/null) || ins=""
  if [[ -z "$ins" ]]; then
    echo "sampled: unavailable (statistics not readable)"
    return
  fi
  if [[ -z "${MON_PREV_INS:-}" && "$ONCE" == 1 && "$SAMPLE" -gt 0 ]]; then
    MON_PREV_INS=$ins MON_PREV_NS=$now_ns
    sleep "$SAMPLE"
    now_ns=$(date +%s%N)
    ins=$(pq -c "$MON_SQL_INSERTED" 2>/dev/null) || ins=$MON_PREV_INS
  fi
  if [[ "$ONCE" == 1 && "$SAMPLE" == 0 ]]; then
    echo "sampled: skipped (--sample 0)"
  elif [[ -n "${MON_PREV_INS:-}" ]]; then
    awk -v d="$((ins - MON_PREV_INS))" -v ns="$((now_ns - MON_PREV_NS))" \
      'BEGIN { s = ns / 1e9; printf "sampled: %d rows inserted in %.1f s = %.1f rows/s (statistics lag up to ~1 s)\n", d, s, (s > 0 ? d / s : 0) }'
  else
    echo "sampled: first refresh, rate from the next one on"
  fi
  MON_PREV_INS=$ins MON_PREV_NS=$now_ns
}

mon_dead_letters() {
  local n
  n=$(rcli XLEN "$K_DEAD" 2>/dev/null) || n="?"
  if [[ "$n" =~ ^[0-9]+$ ]] && ((n > 0)); then
    echo "${C_YEL}dead letters: $n${C_OFF} in $K_DEAD (XRANGE $K_DEAD - + COUNT 10 shows them with the reason)"
  else
    echo "dead letters: $n in $K_DEAD"
  fi
}

# Run render once (--once: exit 0, or 2 when a dependency is down) or every
# INTERVAL seconds until interrupted.
mon_run() {
  local render=$1
  if ((ONCE)); then
    "$render"
    if ((REDIS_UP && PG_UP)); then exit 0; fi
    exit 2
  fi
  # render into a file, not a subshell, so the sampled rate keeps its
  # previous sample between refreshes; the screen is cleared only when the
  # new frame is ready
  MON_FRAME=$(mktemp)
  trap 'exit 0' INT TERM
  trap 'rm -f "$MON_FRAME"' EXIT
  while :; do
    "$render" >"$MON_FRAME" 2>&1
    [[ -t 1 ]] && printf '\e[H\e[2J'
    cat "$MON_FRAME"
    printf '\n(refresh every %ss; Ctrl-C to stop)\n' "$INTERVAL"
    sleep "$INTERVAL"
  done
}

# The active alert conditions as cea-backend evaluates them (the Redis hash
# "alerts": field = alert id, value = "severity|since|summary"). The hash
# expires when cea-backend stops evaluating, which is said plainly: no hash is
# "not evaluated", never "all clear".
# automation-service: each actuator's room, state, last decision and reason
# (hash automation:actuators, kept by the service with its health TTL), then
# its health (an active fail-safe, an outage or a command the node did not
# acknowledge makes it degraded, with the cause), and each unacknowledged
# command message on a line of its own.
mon_actuators() {
  local -A act=()
  local id json room state action reason failsafe colour
  mon_pairs act HGETALL "${PREFIX}automation:actuators"
  if ((${#act[@]} == 0)); then
    echo "${C_YEL}no actuator states${C_OFF} in ${PREFIX}automation:actuators: is automation-service running?"
  else
    printf '%-22s %-14s %-5s %-6s %s\n' actuator room state action "last decision"
    for id in $(printf '%s\n' "${!act[@]}" | sort); do
      json=${act[$id]}
      room="?" state="?" action="?" reason="" failsafe=false
      [[ "$json" =~ \"room\":\"([^\"]*)\" ]] && room=${BASH_REMATCH[1]}
      [[ "$json" =~ \"state\":\"([^\"]*)\" ]] && state=${BASH_REMATCH[1]}
      [[ "$json" =~ \"action\":\"([^\"]*)\" ]] && action=${BASH_REMATCH[1]}
      [[ "$json" =~ \"reason\":\"(([^\"\\]|\\.)*)\" ]] && reason=${BASH_REMATCH[1]}
      [[ "$json" =~ \"failsafe\":true ]] && failsafe=true
      colour=""
      [[ "$failsafe" == true ]] && colour=$C_RED
      printf '%s%-22s %-14s %-5s %-6s %s%s\n' "$colour" "$id" "$room" "$state" "$action" "${reason:0:90}" "${colour:+$C_OFF}"
    done
  fi
  local health
  health=$(rcli GET "${PREFIX}health:automation-service" 2>/dev/null)
  if [[ -z "$health" ]]; then
    echo "${C_YEL}automation-service has no health key${C_OFF} (not running, or silent for its health TTL)"
  elif [[ "$health" =~ \"status\":\"degraded\" ]]; then
    [[ "$health" =~ \"reason\":\"(([^\"\\]|\\.)*)\" ]] && reason=${BASH_REMATCH[1]}
    echo "${C_RED}FAIL-SAFE / OUTAGE / ALERT${C_OFF}: ${reason:-degraded}"
    local unacked=""
    [[ "$health" =~ \"unacknowledged\":\{([^}]*)\} ]] && unacked=${BASH_REMATCH[1]}
    while [[ "$unacked" =~ ^,?\"([^\"]+)\":\"(([^\"\\]|\\.)*)\"(.*)$ ]]; do
      echo "${C_RED}UNACKNOWLEDGED${C_OFF} command ${BASH_REMATCH[1]}: ${BASH_REMATCH[2]:0:120}"
      unacked=${BASH_REMATCH[4]}
    done
  else
    [[ "$health" =~ \"dry_run\":true ]] && echo "automation-service: ok (dry run: decisions recorded, no command sent)" && return
    echo "${C_GRN}automation-service: ok${C_OFF}"
  fi
}

mon_alerts() {
  local -A a=()
  mon_pairs a HGETALL "${PREFIX}alerts"
  if [[ -z "${a[_evaluated_at]:-}" ]]; then
    echo "${C_YEL}alert conditions not evaluated${C_OFF}: no current ${PREFIX}alerts from cea-backend (is it running?)"
    return
  fi
  echo "evaluated by cea-backend $(mon_age "${a[_evaluated_at]}") s ago"
  [[ -n "${a[_incomplete]:-}" ]] && echo "${C_YEL}incomplete${C_OFF}: ${a[_incomplete]}"
  local id sev since summary n=0 colour
  for id in $(printf '%s\n' "${!a[@]}" | grep -v '^_' | sort); do
    IFS='|' read -r sev since summary <<<"${a[$id]}"
    colour=$C_YEL
    [[ "$sev" == critical ]] && colour=$C_RED
    printf '%s%-8s%s %s (since %s)\n' "$colour" "$sev" "$C_OFF" "$summary" "$since"
    n=$((n + 1))
  done
  ((n)) || echo "${C_GRN}no active alerts${C_OFF}"
}

# Sensors with no stored reading for CEA_SILENT_INTERVALS of their expected
# interval (sensor.expected_interval_s, else CEA_SENSOR_INTERVAL_S), read from
# the database itself, so this works without cea-backend; per sensor over the
# (sensor_id, time DESC) key within the last day.
MON_SQL_SILENT="SELECT r.name, s.name, coalesce(s.kind, '-'),
       coalesce(to_char(l.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'none in 24 h'),
       coalesce(round(extract(epoch FROM now() - l.time))::text, '-'),
       coalesce(s.expected_interval_s, :'def'::float8) * :'n'::float8
FROM sensor s JOIN device d ON d.device_id = s.device_id JOIN room r ON r.room_id = d.room_id
LEFT JOIN LATERAL (SELECT m.time FROM measurement m WHERE m.sensor_id = s.sensor_id
                   AND m.time > now() - interval '1 day' ORDER BY m.time DESC LIMIT 1) l ON true
WHERE l.time IS NULL
   OR now() - l.time > make_interval(secs => coalesce(s.expected_interval_s, :'def'::float8) * :'n'::float8)
ORDER BY r.name, s.name"

mon_silent_sensors() {
  local n=${CEA_SILENT_INTERVALS:-10} def=${CEA_SENSOR_INTERVAL_S:-60} out
  if ! out=$(pq -v n="$n" -v def="$def" <<<"$MON_SQL_SILENT" 2>&1); then
    echo "${C_RED}query failed${C_OFF}: $out"
    return
  fi
  if [[ -z "$out" ]]; then
    echo "${C_GRN}no silent sensors${C_OFF} (silent = no reading for $n expected intervals)"
    return
  fi
  echo "${C_YEL}silent sensors${C_OFF} (no reading for $n expected intervals):"
  printf '  %-16s %-24s %-22s %-22s %8s %10s\n' room sensor kind "last reading" "age (s)" "silent >s"
  local room sensor kind last age after
  while IFS=$'\t' read -r room sensor kind last age after; do
    printf '  %-16s %-24s %-22s %-22s %8s %10s\n' "$room" "$sensor" "$kind" "$last" "$age" "$after"
  done <<<"$out"
}
