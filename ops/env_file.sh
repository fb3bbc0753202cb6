# shellcheck shell=bash
# Sourced by the ops scripts: read a systemd environment file (KEY=value lines,
# optionally quoted) into the environment without overriding what the caller
# already set, so `CEA_X=... ops/script.sh` wins over /etc/cea/cea.env.
cea_load_env_file() {
  local line key value
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*([A-Z][A-Z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]] && value=${BASH_REMATCH[1]}
    [[ -n "${!key:-}" ]] || export "$key=$value"
  done <"$1"
}

# A connection URL for display: its password (between "user:" and the last
# "@" of the user information) replaced by ***. Never print a URL without it.
cea_redact_url() { sed -E 's,(//[^:/@?#]*):[^/?#]*@,\1:***@,' <<<"$1"; }
