#!/usr/bin/env bash
# Start the CEA services in order, after checking the database schema.
#
#   ops/start_all_services.sh [--no-health]
#
# 1. `node dist/pipeline/cli.js schema verify`: when the schema is missing or
#    incomplete, nothing is started and the report says what is missing.
# 2. systemctl start, in order: can-setup, can-scanner, can-worker, cea-backend,
#    automation-service
#    (redis-server and postgresql are pulled in by the units' Wants=).
# 3. Health check (skipped with --no-health): can-scanner --check,
#    can-worker --check, automation-service --check, GET /api/v1/health of
#    cea-backend (retried for CEA_HEALTH_WAIT_S seconds, default 15, while
#    the API comes up).
# 4. A summary. Exit 0 when every service started and every check passed,
#    1 otherwise (or when systemd is not available), 2 on bad usage.
#
# Environment: the services' settings from /etc/cea/cea.env (CEA_ENV_FILE), or
# the local stack's .state/stack.env when run from a checkout; variables
# already set win. SYSTEMCTL names the systemctl binary (tests use a stub),
# CEA_APP_DIR the installed application (default: this script's parent
# directory when it holds dist/, else /opt/cea-telemetry), NODE the node binary.
set -u -o pipefail

SERVICES=(can-setup can-scanner can-worker cea-backend automation-service)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SYSTEMCTL=${SYSTEMCTL:-systemctl}
NODE=${NODE:-node}
if [[ -z "${CEA_APP_DIR:-}" ]]; then
  if [[ -d "$HERE/../dist" ]]; then CEA_APP_DIR=$(cd "$HERE/.." && pwd); else CEA_APP_DIR=/opt/cea-telemetry; fi
fi

health=1
for arg in "$@"; do
  case "$arg" in
    --no-health) health=0 ;;
    -h | --help)
      sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

# shellcheck source-path=SCRIPTDIR source=env_file.sh
source "$(dirname "${BASH_SOURCE[0]}")/env_file.sh"
env_file=${CEA_ENV_FILE:-/etc/cea/cea.env}
if [[ -r "$env_file" ]]; then
  cea_load_env_file "$env_file"
  echo "settings: $env_file"
elif [[ -r "$CEA_APP_DIR/.state/stack.env" ]]; then
  cea_load_env_file "$CEA_APP_DIR/.state/stack.env"
  echo "settings: $CEA_APP_DIR/.state/stack.env (local stack)"
else
  echo "settings: environment only ($env_file not found)"
fi

if [[ ! -f "$CEA_APP_DIR/dist/pipeline/cli.js" ]]; then
  echo "REFUSING TO START: $CEA_APP_DIR/dist/pipeline/cli.js not found (build with npm run build, or set CEA_APP_DIR)" >&2
  exit 1
fi

echo "== 1. schema check (cea schema verify)"
if ! verify=$(cd "$CEA_APP_DIR" && "$NODE" dist/pipeline/cli.js schema verify 2>&1); then
  echo "$verify"
  echo
  echo "REFUSING TO START any service: the schema check failed (see above)." >&2
  echo "Apply the schema with: node dist/pipeline/cli.js schema apply (CEA_DATABASE_URL=$(cea_redact_url "${CEA_DATABASE_URL:-unset}"))" >&2
  exit 1
fi
echo "$verify"

echo "== 2. starting services"
if ! command -v "$SYSTEMCTL" >/dev/null 2>&1; then
  echo "systemd is not available: '$SYSTEMCTL' not found. Start the services by hand, e.g." >&2
  echo "  node dist/pipeline/can-scanner.js & node dist/pipeline/can-worker.js & node dist/pipeline/cea-backend.js & node dist/pipeline/automation-service.js" >&2
  exit 1
fi
if [[ "$SYSTEMCTL" == systemctl && ! -d /run/systemd/system ]]; then
  echo "systemd is not running on this machine (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)):" >&2
  echo "systemctl cannot start services here. Start them by hand (node dist/pipeline/<service>.js)." >&2
  exit 1
fi

declare -A started=()
problems=0
for svc in "${SERVICES[@]}"; do
  unit="$svc.service"
  if out=$("$SYSTEMCTL" start "$unit" 2>&1); then
    state=$("$SYSTEMCTL" is-active "$unit" 2>/dev/null)
    state=${state%%$'\n'*}
    started[$svc]="started (${state:-unknown})"
    echo "$unit: started, ${state:-unknown}"
    if [[ "$state" != active && "$state" != activating ]]; then problems=$((problems + 1)); fi
  else
    started[$svc]="FAILED: ${out//$'\n'/ }"
    problems=$((problems + 1))
    echo "$unit: FAILED to start: $out"
  fi
done

declare -A checks=()
if ((health)); then
  echo "== 3. health check"
  for svc in can-scanner can-worker automation-service; do
    if [[ ! -f "$CEA_APP_DIR/dist/pipeline/$svc.js" ]]; then
      checks[$svc]="FAILED: dist/pipeline/$svc.js not built"
    elif out=$(cd "$CEA_APP_DIR" && timeout 30 "$NODE" "dist/pipeline/$svc.js" --check 2>&1); then
      checks[$svc]="ok"
    else
      checks[$svc]="FAILED: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    fi
    echo "$svc --check: ${checks[$svc]}"
  done
  host=${CEA_HTTP_HOST:-127.0.0.1}
  [[ "$host" == 0.0.0.0 || "$host" == :: ]] && host=127.0.0.1
  [[ "$host" == *:* ]] && host="[$host]"
  url="http://$host:${CEA_HTTP_PORT:-8080}/api/v1/health"
  deadline=$((SECONDS + ${CEA_HEALTH_WAIT_S:-15}))
  while :; do
    # node is on every appliance (the services need it); curl may not be.
    # shellcheck disable=SC2016 # the JavaScript's ${...} is not shell
    if out=$(CEA_HEALTH_URL=$url "$NODE" -e '
      const headers = process.env.CEA_API_TOKEN ? { authorization: `Bearer ${process.env.CEA_API_TOKEN}` } : {};
      fetch(process.env.CEA_HEALTH_URL, { headers, signal: AbortSignal.timeout(3000) })
        .then(async (r) => { const t = await r.text(); console.log(`HTTP ${r.status} ${t.slice(0, 300)}`); process.exit(r.ok ? 0 : 1); })
        .catch((e) => { console.log(e.cause?.code ?? e.cause?.errors?.[0]?.code ?? e.message); process.exit(1); });' 2>&1); then
      checks[cea-backend]="ok ($out)"
      break
    fi
    if ((SECONDS >= deadline)); then
      checks[cea-backend]="FAILED: GET $url: $out"
      break
    fi
    sleep 1
  done
  echo "cea-backend GET /api/v1/health: ${checks[cea-backend]}"
  for c in "${checks[@]}"; do [[ "$c" == ok* ]] || problems=$((problems + 1)); done
fi

echo
echo "== summary"
printf '%-18s %s\n' "service" "start"
for svc in "${SERVICES[@]}"; do printf '%-18s %s\n' "$svc" "${started[$svc]}"; done
if ((health)); then
  echo
  printf '%-18s %s\n' "check" "result"
  for svc in can-scanner can-worker automation-service cea-backend; do printf '%-18s %s\n' "$svc" "${checks[$svc]}"; done
else
  echo "(health check skipped: --no-health)"
fi
if ((problems > 0)); then
  echo "$problems problem(s): see journalctl -u <service> for details"
  exit 1
fi
echo "all services started and healthy"
exit 0
