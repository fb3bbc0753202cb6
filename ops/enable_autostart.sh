#!/usr/bin/env bash
# Enable every CEA service for start at boot and report what happened.
#
#   ops/enable_autostart.sh [--dry-run] [--install-units]
#
# For each service: is the unit installed, does its [Install] section have
# WantedBy=multi-user.target, is it already enabled; otherwise `systemctl enable`.
# The unit files are never edited. The summary lists the services that were
# already enabled, newly enabled, failed (with the error) and not installed.
# Exit status: 0 when nothing failed, 1 when a service failed, 2 on bad usage.
#
#   --dry-run        change nothing; say what would be done
#   --install-units  first copy the project's units (ops/systemd/*.service) into
#                    /etc/systemd/system (on systemd 254+ also the restart
#                    backoff drop-in, ops/systemd/restart-backoff.conf) and run
#                    `systemctl daemon-reload`
#
# Environment: SYSTEMCTL (the systemctl binary, default systemctl),
# SYSTEMD_UNIT_PATH (colon-separated directories searched for unit files),
# CEA_UNIT_INSTALL_DIR (target of --install-units, default /etc/systemd/system).
set -u -o pipefail

SERVICES=(redis-server postgresql can-setup can-scanner can-worker cea-backend automation-service)

SYSTEMCTL=${SYSTEMCTL:-systemctl}
UNIT_PATH=${SYSTEMD_UNIT_PATH:-/etc/systemd/system:/run/systemd/system:/lib/systemd/system:/usr/lib/systemd/system}
INSTALL_DIR=${CEA_UNIT_INSTALL_DIR:-/etc/systemd/system}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

dry_run=0
install_units=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --install-units) install_units=1 ;;
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

if ! command -v "$SYSTEMCTL" >/dev/null 2>&1; then
  echo "systemctl not found ($SYSTEMCTL): this script needs systemd" >&2
  exit 1
fi

already=()
newly=()
failed=()
missing=()

# The unit file of a service, first match along the unit path (as systemd searches).
unit_file() {
  local dir
  local IFS=:
  for dir in $UNIT_PATH; do
    if [[ -e "$dir/$1.service" ]]; then
      echo "$dir/$1.service"
      return 0
    fi
  done
  return 1
}

# True when the [Install] section of the file has WantedBy= naming multi-user.target.
wanted_by_multi_user() {
  awk '
    /^[[:space:]]*\[/ { in_install = ($0 ~ /^[[:space:]]*\[Install\][[:space:]]*$/); next }
    in_install && /^[[:space:]]*WantedBy[[:space:]]*=/ {
      sub(/^[^=]*=/, ""); n = split($0, t, /[[:space:]]+/)
      for (i = 1; i <= n; i++) if (t[i] == "multi-user.target") found = 1
    }
    END { exit found ? 0 : 1 }
  ' "$1"
}

if ((install_units)); then
  units=("$HERE"/systemd/*.service)
  if [[ ! -e "${units[0]}" ]]; then
    echo "no unit files under $HERE/systemd" >&2
    exit 1
  fi
  for u in "${units[@]}"; do
    if ((dry_run)); then
      echo "would install $u -> $INSTALL_DIR/"
    elif ! install -m 0644 "$u" "$INSTALL_DIR/"; then
      echo "could not install $u into $INSTALL_DIR" >&2
      exit 1
    else
      echo "installed $(basename "$u") -> $INSTALL_DIR/"
    fi
  done
  # restart backoff: RestartSteps/RestartMaxDelaySec exist from systemd 254 on
  sd_version=$("$SYSTEMCTL" --version 2>/dev/null | awk 'NR == 1 { print $2 }')
  if [[ "$sd_version" =~ ^[0-9]+$ ]] && ((sd_version >= 254)); then
    for svc in can-scanner can-worker cea-backend automation-service; do
      dropin="$INSTALL_DIR/$svc.service.d/10-restart-backoff.conf"
      if ((dry_run)); then
        echo "would install the restart backoff -> $dropin"
      elif ! install -D -m 0644 "$HERE/systemd/restart-backoff.conf" "$dropin"; then
        echo "could not install $dropin" >&2
        exit 1
      else
        echo "installed restart backoff -> $dropin"
      fi
    done
  else
    echo "systemd ${sd_version:-of unknown version} is older than 254: no restart backoff drop-in (restarts stay RestartSec apart, never given up)"
  fi
  if ((dry_run)); then
    echo "would run: $SYSTEMCTL daemon-reload"
  elif ! out=$("$SYSTEMCTL" daemon-reload 2>&1); then
    echo "systemctl daemon-reload failed: $out" >&2
    exit 1
  fi
fi

for svc in "${SERVICES[@]}"; do
  unit="$svc.service"
  if ! file=$(unit_file "$svc"); then
    missing+=("$unit")
    echo "$unit: not installed"
    continue
  fi
  state=$("$SYSTEMCTL" is-enabled "$unit" 2>/dev/null)
  state=${state%%$'\n'*}
  if [[ "$state" == masked* ]]; then
    failed+=("$unit: masked (systemctl unmask $unit first)")
    echo "$unit: FAILED, masked"
    continue
  fi
  if ! wanted_by_multi_user "$file"; then
    failed+=("$unit: $file has no WantedBy=multi-user.target in [Install]; not enabled (the file is not edited)")
    echo "$unit: FAILED, no WantedBy=multi-user.target in $file"
    continue
  fi
  if [[ "$state" == enabled ]]; then
    already+=("$unit")
    echo "$unit: already enabled"
    continue
  fi
  if ((dry_run)); then
    newly+=("$unit (dry run: would enable; now ${state:-unknown})")
    echo "$unit: would enable (now ${state:-unknown})"
    continue
  fi
  if ! out=$("$SYSTEMCTL" enable "$unit" 2>&1); then
    failed+=("$unit: systemctl enable failed: ${out//$'\n'/ }")
    echo "$unit: FAILED to enable"
    continue
  fi
  # trust the state systemd reports afterwards, not just the exit status
  after=$("$SYSTEMCTL" is-enabled "$unit" 2>/dev/null)
  after=${after%%$'\n'*}
  if [[ "$after" == enabled ]]; then
    newly+=("$unit")
    echo "$unit: enabled"
  else
    failed+=("$unit: still '${after:-unknown}' after systemctl enable")
    echo "$unit: FAILED, still ${after:-unknown} after enable"
  fi
done

print_list() {
  local title=$1
  shift
  echo "$title ($#):"
  if (($# == 0)); then
    echo "  (none)"
  else
    printf '  %s\n' "$@"
  fi
}

echo
echo "== autostart summary$( ((dry_run)) && echo ' (dry run, nothing changed)')"
print_list "already enabled" "${already[@]}"
print_list "$( ((dry_run)) && echo 'would be enabled' || echo 'newly enabled')" "${newly[@]}"
print_list "failed" "${failed[@]}"
print_list "not installed" "${missing[@]}"

if ((${#failed[@]} > 0)); then
  exit 1
fi
exit 0
