#!/usr/bin/env bash
# Local stack for demo, tests and benchmarks: npm dependencies, TimescaleDB for
# the machine's PostgreSQL, a private PostgreSQL cluster and a private Redis.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: ops/stack.sh [command]

  up [--test-tools]  (the default) idempotent: installs and starts what is
                     missing, writes $CEA_STATE_DIR/stack.env (CEA_DATABASE_URL,
                     CEA_REDIS_URL, CEA_PG_BINDIR); --test-tools also installs
                     the tools the tests use (shellcheck; Debian's prometheus
                     and promtool into $CEA_STATE_DIR/tools/bin)
  down               stops the private PostgreSQL and Redis (data kept)
  destroy            stops them and deletes their data (the next `up` starts afresh)
  status             prints where everything is (passwords redacted)
  apt-source         prints the private apt source the TimescaleDB build would
                     use (taken from this machine's apt sources)
  -h, --help         this text

A step that cannot be done stops with "stack: <step>: <why>" and exit 1.

Environment:
  CEA_DATABASE_URL, CEA_REDIS_URL  use that service: the matching private one
                     is then neither built nor started
  CEA_STATE_DIR      where the stack lives (default: .state in the checkout)
  CEA_PG_BINDIR      PostgreSQL binaries for a NEW cluster (default
                     /usr/lib/postgresql/15/bin). A cluster keeps the binaries it
                     was created with; asking for others is refused with the
                     reason (use another CEA_STATE_DIR for them)
  CEA_STACK_PG_PORT, CEA_STACK_REDIS_PORT
                     ports to use (an existing stack moves to them); without
                     them a stack keeps its ports, and a new one takes the first
                     free ports from CEA_STACK_PG_PORT_FROM (55432) and
                     CEA_STACK_REDIS_PORT_FROM (56379) up, moving on to the next
                     one when another process takes a port while it starts
  CEA_APT_MIRROR     Debian archive for the TimescaleDB source package (default:
                     the one this machine's apt sources use)
  CEA_TSDB_SUITE     Debian release whose timescaledb source is built (trixie)
EOF
}

cmd=up
for arg in "$@"; do
  case "$arg" in -h | --help | help)
    usage
    exit 0
    ;;
  esac
done
if [ $# -gt 0 ]; then cmd=$1; fi
case "$cmd" in
  up | down | destroy | status | apt-source) ;;
  *)
    echo "stack: unknown command: $cmd" >&2
    usage >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${CEA_STATE_DIR:-$ROOT/.state}"
PG_MAJOR="${CEA_PG_MAJOR:-15}"
DEFAULT_BINDIR="/usr/lib/postgresql/$PG_MAJOR/bin"
DB_NAME="${CEA_STACK_DB:-cea}"
# Debian release whose source package `timescaledb` (Apache edition) we build.
TSDB_SUITE="${CEA_TSDB_SUITE:-trixie}"

step=""
died=""
die() {
  echo "stack: ${step:-setup}: $*" >&2
  died=1
  exit 1
}
say() { echo "stack: $*" >&2; }
# A command that fails outside die() still names the step it failed in.
on_exit() {
  local rc=$?
  [ "$rc" -eq 0 ] || [ -n "$died" ] || echo "stack: step \"${step:-setup}\" failed (exit $rc)" >&2
}
trap on_exit EXIT

# PostgreSQL refuses to run as root; as root the cluster belongs to `postgres`
# and lives where that user can reach it even if the checkout is in a private
# folder (mktemp -d is mode 700).
if [ "$(id -u)" -eq 0 ]; then
  PG_USER=postgres
  PG_BASE="${CEA_STACK_PG_DIR:-/var/tmp/cea-telemetry/$(printf '%s' "$STATE" | sha1sum | cut -c1-10)}"
else
  PG_USER="$(id -un)"
  PG_BASE="${CEA_STACK_PG_DIR:-$STATE}"
fi
PG_DATA="$PG_BASE/pg"
PG_SOCK="$PG_BASE/pgsock"
PG_LOG="$PG_BASE/postgres.log"
# the binaries the cluster was created with (a cluster is tied to them)
BINDIR_FILE="$PG_BASE/pg-bindir"

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }
need_cmd() { command -v "$1" >/dev/null 2>&1; }

# A password in a URL, for display: everything between "user:" and the last "@".
redact_url() { sed -E 's#([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):.*@#\1:***@#' <<<"$1"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}
# New lines of a log since byte offset $2 (what one start attempt wrote).
log_since() { tail -c +"$(($2 + 1))" "$1" 2>/dev/null || true; }
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# --- PostgreSQL binaries ---------------------------------------------------

# pid of the cluster's postmaster when it runs, else nothing
pg_running_pid() {
  local pid
  [ -f "$PG_DATA/postmaster.pid" ] || return 0
  pid=$(head -n1 "$PG_DATA/postmaster.pid")
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}
# the real file behind <bindir>/postgres: two bindirs are the same binaries when these agree
postgres_of() { readlink -f "$1/postgres" 2>/dev/null || echo "$1/postgres"; }
tsdb_version_of() {
  local share
  share=$("$1/pg_config" --sharedir 2>/dev/null) || {
    echo "unknown"
    return
  }
  sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$share/extension/timescaledb.control" 2>/dev/null | head -n1 || true
}

# The binaries an existing cluster belongs to: as recorded when it was created
# (or first started by this script); for an older cluster without the record,
# the running server's, else the ones the last stack.env named.
cluster_bindir() {
  local pid
  [ -f "$PG_DATA/PG_VERSION" ] || return 0
  if [ -s "$BINDIR_FILE" ]; then
    cat "$BINDIR_FILE"
    return
  fi
  pid=$(pg_running_pid)
  if [ -n "$pid" ]; then
    dirname "$(readlink -f "/proc/$pid/exe")"
    return
  fi
  if [ -f "$STATE/stack.env" ]; then sed -n 's/^CEA_PG_BINDIR=//p' "$STATE/stack.env" | tail -n1; fi
}

CLUSTER_BINDIR="$(cluster_bindir)"
PG_BINDIR="${CEA_PG_BINDIR:-${CLUSTER_BINDIR:-$DEFAULT_BINDIR}}"

# Refuse, with the reason, binaries other than the cluster's own (requested by
# CEA_PG_BINDIR, or a server someone started from other binaries): writing the
# new path while the old server keeps running would point every command at the
# wrong TimescaleDB build.
check_bindir() {
  step="PostgreSQL binaries"
  local pid running="" how keep=${CLUSTER_BINDIR:-the binaries the cluster runs on}
  [ -f "$PG_DATA/PG_VERSION" ] || return 0
  pid=$(pg_running_pid)
  [ -z "$pid" ] || running=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
  if [ -n "$running" ] && [ "$running" != "$(postgres_of "$PG_BINDIR")" ]; then
    how="is running on the binaries in $(dirname "$running") (TimescaleDB $(tsdb_version_of "$(dirname "$running")"))"
  elif [ -n "$CLUSTER_BINDIR" ] && [ "$(postgres_of "$CLUSTER_BINDIR")" != "$(postgres_of "$PG_BINDIR")" ]; then
    how="was created with the binaries in $CLUSTER_BINDIR (TimescaleDB $(tsdb_version_of "$CLUSTER_BINDIR"))"
  else
    return 0
  fi
  die "the private cluster $PG_DATA $how, but CEA_PG_BINDIR=$PG_BINDIR (TimescaleDB $(tsdb_version_of "$PG_BINDIR")) selects other binaries.
  A cluster cannot change binaries: its databases are tied to the TimescaleDB build that created them. Either
  - run those binaries with a stack of their own: CEA_STATE_DIR=$ROOT/.state-<name> CEA_PG_BINDIR=$PG_BINDIR (and the same variables for the tests), or
  - unset CEA_PG_BINDIR to keep using $keep, or
  - delete this stack's data with ops/stack.sh destroy, then run up again."
}

# --- ports -----------------------------------------------------------------

pg_conf_port() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$PG_DATA/postgresql.conf" 2>/dev/null | tail -n1 || true; }
# Ports: the caller's choice, else the one this stack used before, else the
# first free one from the default up (another checkout's stack may hold it).
if [ -n "${CEA_STACK_PG_PORT:-}" ]; then
  PG_PORT="$CEA_STACK_PG_PORT"
elif [ -n "$(pg_conf_port)" ]; then
  PG_PORT="$(pg_conf_port)"
else
  PG_PORT="$(free_port "${CEA_STACK_PG_PORT_FROM:-55432}")"
fi
if [ -n "${CEA_STACK_REDIS_PORT:-}" ]; then
  REDIS_PORT="$CEA_STACK_REDIS_PORT"
elif [ -s "$STATE/redis/port" ]; then
  REDIS_PORT="$(cat "$STATE/redis/port")"
else
  REDIS_PORT="$(free_port "${CEA_STACK_REDIS_PORT_FROM:-56379}")"
fi
for p in "$PG_PORT" "$REDIS_PORT"; do
  if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
    step="ports"
    die "not a TCP port: '$p'"
  fi
done

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $* (or install them yourself)"
  if [ ! -f "$STATE/.apt-updated" ]; then
    apt-get update -qq >/dev/null || die "apt-get update failed"
    touch "$STATE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$STATE/apt-install.log" 2>&1 ||
    die "apt-get install $* failed; see $STATE/apt-install.log"
}

ensure_node_modules() {
  step="npm dependencies"
  local stamp="$ROOT/node_modules/.cea-lock-hash" want
  want="$(sha1sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  say "installing npm dependencies (npm ci)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  echo "$want" >"$stamp"
}

ts_installed() {
  local share lib ver
  share="$("$PG_BINDIR/pg_config" --sharedir 2>/dev/null)" || return 1
  lib="$("$PG_BINDIR/pg_config" --pkglibdir 2>/dev/null)" || return 1
  [ -f "$share/extension/timescaledb.control" ] || return 1
  ver="$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$share/extension/timescaledb.control")"
  [ -n "$ver" ] && [ -f "$lib/timescaledb-$ver.so" ]
}

# The private apt source of the timescaledb source package, in deb822 form:
# the Debian archive this machine's apt already uses (its mirror or proxy, and
# its key), from /etc/apt/sources.list, sources.list.d/*.list (one-line format)
# and sources.list.d/*.sources (deb822). Security and non-Debian archives are
# passed over. CEA_APT_MIRROR overrides the URI. Prints nothing when no Debian
# archive is configured.
apt_source() {
  local etc="${CEA_APT_ETC:-/etc/apt}" uri="" signed="" files=() f
  if [ -n "${CEA_APT_MIRROR:-}" ]; then
    uri=$CEA_APT_MIRROR
    [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ] || signed=/usr/share/keyrings/debian-archive-keyring.gpg
  else
    [ ! -f "$etc/sources.list" ] || files+=("$etc/sources.list")
    for f in "$etc"/sources.list.d/*.list; do [ ! -f "$f" ] || files+=("$f"); done
    local found=""
    if [ ${#files[@]} -gt 0 ]; then
      # one-line: deb|deb-src [ options ] uri suite components...
      found=$(awk '
        function debian(u, s, k) {
          if (u ~ /security/ || s ~ /-security$/) return 0
          return u ~ /\/debian\/?$/ || u ~ /debian\.list$/ || k ~ /debian-archive-keyring/
        }
        /^[[:space:]]*(#|$)/ { next }
        $1 == "deb" || $1 == "deb-src" {
          i = 2; key = ""
          if ($i ~ /^\[/) {
            for (; i <= NF; i++) {
              t = $i; sub(/^\[/, "", t); done = sub(/\]$/, "", t)
              if (t ~ /^signed-by=/) { key = t; sub(/^signed-by=/, "", key) }
              if (done) { i++; break }
            }
          }
          if (i + 1 <= NF && debian($i, $(i + 1), key)) { print $i "\t" key; exit }
        }' "${files[@]}")
    fi
    if [ -z "$found" ]; then
      for f in "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas; Signed-By may be a path or an embedded key (continuation lines)
        found=$(awk '
          function flush() {
            if (uris != "" && enabled !~ /^no$/ && types ~ /deb/) {
              n = split(uris, u, /[[:space:]]+/)
              for (j = 1; j <= n; j++) {
                if (u[j] == "" || u[j] ~ /security/ || suites ~ /-security( |$)/) continue
                if (u[j] ~ /\/debian\/?$/ || u[j] ~ /debian\.list$/ || key ~ /debian-archive-keyring/) {
                  gsub(/\n/, "\\n", key); print u[j] "\t" key; found = 1; exit
                }
              }
            }
            types = uris = suites = key = enabled = ""; field = ""
          }
          /^[[:space:]]*#/ { next }
          /^[[:space:]]*$/ { flush(); next }
          /^[[:space:]]/ { if (field == "signed-by") key = key "\n" $0; next }
          {
            field = tolower($0); sub(/:.*/, "", field)
            v = $0; sub(/^[^:]*:[[:space:]]*/, "", v)
            if (field == "types") types = v
            else if (field == "uris") uris = v
            else if (field == "suites") suites = v
            else if (field == "enabled") enabled = tolower(v)
            else if (field == "signed-by") key = v
          }
          END { if (!found) flush() }' "$f")
        [ -z "$found" ] || break
      done
    fi
    [ -n "$found" ] || return 0
    uri=${found%%$'\t'*}
    signed=${found#*$'\t'}
    signed=${signed//\\n/$'\n'}
  fi
  echo "Types: deb-src"
  echo "URIs: $uri"
  echo "Suites: $TSDB_SUITE"
  echo "Components: main"
  [ -z "$signed" ] || echo "Signed-By: $signed"
}

ensure_timescaledb() {
  step="TimescaleDB"
  [ -x "$PG_BINDIR/postgres" ] || die "no PostgreSQL server binaries in $PG_BINDIR (set CEA_PG_BINDIR)"
  # pg_config comes with the server dev package; installing it may move the
  # server to a newer minor release, so it happens before anything is built
  # or started, and the build below is always against the installed binaries.
  if [ ! -x "$PG_BINDIR/pg_config" ] || [ ! -d "/usr/include/postgresql/$PG_MAJOR/server" ]; then
    say "installing postgresql-server-dev-$PG_MAJOR"
    apt_install "postgresql-server-dev-$PG_MAJOR"
  fi
  if ts_installed; then return; fi
  local pkgs=()
  need_cmd cmake || pkgs+=(cmake)
  need_cmd dpkg-source || pkgs+=(dpkg-dev)
  need_cmd make || pkgs+=(make)
  need_cmd gcc || pkgs+=(gcc)
  [ -f /usr/include/openssl/ssl.h ] || pkgs+=(libssl-dev)
  [ ${#pkgs[@]} -eq 0 ] || {
    say "installing build tools: ${pkgs[*]}"
    apt_install "${pkgs[@]}"
  }

  # A private apt configuration: our own sources and state folders, so the
  # system's apt sources and lists are never touched; the archive is the one
  # the system's sources name (its mirror or proxy; apt.conf settings such as
  # a proxy still apply).
  local apt="$STATE/apt" src
  mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/src"
  src=$(apt_source)
  [ -n "$src" ] || die "no Debian archive in this machine's apt sources (${CEA_APT_ETC:-/etc/apt}/sources.list, sources.list.d/*.list, *.sources); set CEA_APT_MIRROR to a Debian mirror"
  : >"$apt/etc/sources.list"
  printf '%s\n' "$src" >"$apt/etc/sources.list.d/timescaledb.sources"
  local opts=(-o "Dir::Etc::sourcelist=$apt/etc/sources.list" -o "Dir::Etc::sourceparts=$apt/etc/sources.list.d"
    -o "Dir::Etc::preferencesparts=$apt/etc/preferences.d" -o "Dir::State=$apt" -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  say "fetching the timescaledb source package of Debian $TSDB_SUITE from $(sed -n 's/^URIs: //p' <<<"$src")"
  apt-get "${opts[@]}" update -qq >"$apt/update.log" 2>&1 ||
    die "private apt-get update failed (does the mirror carry $TSDB_SUITE? CEA_APT_MIRROR chooses another); see $apt/update.log"
  rm -rf "$apt/src" && mkdir -p "$apt/src"
  (cd "$apt/src" && apt-get "${opts[@]}" source --download-only timescaledb >"$apt/source.log" 2>&1) ||
    die "apt-get source timescaledb failed; see $apt/source.log"
  local dscs=("$apt/src"/timescaledb_*.dsc)
  local dsc="${dscs[0]}"
  (cd "$apt/src" && dpkg-source -x "$dsc" tree >"$apt/extract.log" 2>&1) || die "dpkg-source -x failed; see $apt/extract.log"
  say "building TimescaleDB (Apache edition) for PostgreSQL $PG_MAJOR"
  step="TimescaleDB build"
  (cd "$apt/src/tree" &&
    cmake -S . -B build -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DCMAKE_BUILD_TYPE=Release -DPG_CONFIG="$PG_BINDIR/pg_config" >"$apt/cmake.log" 2>&1 &&
    make -C build -j"$(nproc)" >"$apt/make.log" 2>&1 &&
    make -C build install >"$apt/install.log" 2>&1) || die "build failed; see $apt/{cmake,make,install}.log"
  ts_installed || die "built and installed, but timescaledb is still not loadable from $PG_BINDIR"
}

pg_url() { echo "postgresql://$PG_USER@127.0.0.1:$PG_PORT/$DB_NAME"; }

# The port the running server listens on (line 4 of postmaster.pid).
pg_running_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

set_pg_port() {
  as_pg sed -i '/^port = [0-9]*$/d' "$PG_DATA/postgresql.conf"
  echo "port = $1" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# Start on PG_PORT; when the port is taken (before the start, or by another
# stack while it starts) move on to the next free one, unless the caller chose it.
start_postgres() {
  local tries=0 size
  while :; do
    if port_busy "$PG_PORT"; then
      [ -z "${CEA_STACK_PG_PORT:-}" ] || die "port $PG_PORT (CEA_STACK_PG_PORT) is taken by another process"
      PG_PORT="$(free_port "$PG_PORT")"
    fi
    set_pg_port "$PG_PORT"
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    size=$(file_size "$PG_LOG")
    if as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then return; fi
    if log_since "$PG_LOG" "$size" | grep -q "Address already in use"; then
      [ -z "${CEA_STACK_PG_PORT:-}" ] || die "port $PG_PORT (CEA_STACK_PG_PORT) is taken by another process"
      tries=$((tries + 1))
      [ "$tries" -lt 20 ] || die "no free port found after $tries tries; see $PG_LOG"
      say "port $PG_PORT was taken while PostgreSQL started (another stack?); trying the next one"
      PG_PORT=$((PG_PORT + 1))
      continue
    fi
    die "pg_ctl start failed; see $PG_LOG"
  done
}

ensure_postgres() {
  step="private PostgreSQL"
  mkdir -p "$PG_BASE"
  [ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PG_BASE"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initdb $PG_DATA"
    as_pg "$PG_BINDIR/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1 ||
      die "initdb failed; see $PG_BASE/initdb.log"
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF
# --- cea-telemetry private cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCK'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
timescaledb.max_background_workers = 8
max_worker_processes = 24
fsync = on
EOF
  fi
  [ -s "$BINDIR_FILE" ] || echo "$PG_BINDIR" >"$BINDIR_FILE"
  mkdir -p "$PG_SOCK"
  [ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PG_SOCK"
  if [ -n "$(pg_running_pid)" ]; then
    # a port the caller asks for moves a running cluster there
    if [ "$(pg_running_port)" != "$PG_PORT" ]; then
      [ -n "${CEA_STACK_PG_PORT:-}" ] || PG_PORT=$(pg_running_port)
    fi
    if [ "$(pg_running_port)" != "$PG_PORT" ]; then
      say "moving PostgreSQL from port $(pg_running_port) to $PG_PORT (CEA_STACK_PG_PORT)"
      if port_busy "$PG_PORT"; then die "port $PG_PORT (CEA_STACK_PG_PORT) is taken by another process"; fi
      as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || die "pg_ctl stop failed"
      start_postgres
    fi
  else
    start_postgres
  fi
  local psql=("$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1)
  if [ "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE \"$DB_NAME\"" || die "CREATE DATABASE $DB_NAME failed"
  fi
}

# Database roles (db/migrations/0002_roles.sql): every service connects as its
# own role. The schema creates the roles NOLOGIN when they are missing; on this
# private cluster (trust authentication on 127.0.0.1, no passwords) they are
# created, or switched, to LOGIN here, so the demo, the benchmarks and the tests
# run the worker, the API and the readers with only their own rights.
ensure_db_roles() {
  step="database roles"
  "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1 -d postgres -c "
    DO \$\$ DECLARE r text; BEGIN
      FOREACH r IN ARRAY ARRAY['cea_writer', 'cea_api', 'cea_reader', 'cea_automation'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('ALTER ROLE %I LOGIN', r);
        ELSE EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
      END LOOP;
    END \$\$" || die "creating the login roles failed"
}

# The per-service connection lines of stack.env (only for the private cluster).
db_role_env() {
  echo "CEA_WORKER_DATABASE_URL=postgresql://cea_writer@127.0.0.1:$PG_PORT/$DB_NAME"
  echo "CEA_API_DATABASE_URL=postgresql://cea_api@127.0.0.1:$PG_PORT/$DB_NAME"
  echo "CEA_READER_DATABASE_URL=postgresql://cea_reader@127.0.0.1:$PG_PORT/$DB_NAME"
  echo "CEA_AUTOMATION_DATABASE_URL=postgresql://cea_automation@127.0.0.1:$PG_PORT/$DB_NAME"
}

# The Redis on a port is ours if it keeps its files in our state folder.
our_redis_on() {
  [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$1" config get dir 2>/dev/null | sed -n 2p)" = "$STATE/redis" ]
}

start_redis() {
  local tries=0 size log="$STATE/redis/redis.log"
  while :; do
    if port_busy "$REDIS_PORT"; then
      [ -z "${CEA_STACK_REDIS_PORT:-}" ] || die "port $REDIS_PORT (CEA_STACK_REDIS_PORT) is taken by another process"
      REDIS_PORT="$(free_port "$REDIS_PORT")"
    fi
    say "starting Redis on 127.0.0.1:$REDIS_PORT (append-only)"
    size=$(file_size "$log")
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --appendonly yes --appendfsync everysec \
      --save "" --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$log" ||
      die "redis-server failed to start; see $log"
    local _
    for _ in $(seq 1 100); do
      if our_redis_on "$REDIS_PORT"; then
        echo "$REDIS_PORT" >"$STATE/redis/port"
        return
      fi
      log_since "$log" "$size" | grep -q "Address already in use" && break
      sleep 0.1
    done
    if log_since "$log" "$size" | grep -q "Address already in use"; then
      [ -z "${CEA_STACK_REDIS_PORT:-}" ] || die "port $REDIS_PORT (CEA_STACK_REDIS_PORT) is taken by another process"
      tries=$((tries + 1))
      [ "$tries" -lt 20 ] || die "no free port found after $tries tries; see $log"
      say "port $REDIS_PORT was taken while Redis started (another stack?); trying the next one"
      REDIS_PORT=$((REDIS_PORT + 1))
      continue
    fi
    die "Redis did not answer on port $REDIS_PORT within 10 s; see $log"
  done
}

ensure_redis() {
  step="private Redis"
  mkdir -p "$STATE/redis"
  local old=""
  [ ! -s "$STATE/redis/port" ] || old=$(cat "$STATE/redis/port")
  if [ -n "$old" ] && our_redis_on "$old"; then
    [ "$old" != "$REDIS_PORT" ] || return 0
    say "moving Redis from port $old to $REDIS_PORT (CEA_STACK_REDIS_PORT)"
    if port_busy "$REDIS_PORT"; then die "port $REDIS_PORT (CEA_STACK_REDIS_PORT) is taken by another process"; fi
    timeout 10 redis-cli -h 127.0.0.1 -p "$old" shutdown >/dev/null 2>&1 || true
    local _
    for _ in $(seq 1 100); do
      port_busy "$old" || break
      sleep 0.1
    done
  fi
  need_cmd redis-server || apt_install redis-server
  start_redis
}

write_env() {
  step="write stack.env"
  local db="${CEA_DATABASE_URL:-$(pg_url)}" redis="${CEA_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
  # it may hold the caller's URLs with their passwords
  (
    umask 077
    cat >"$STATE/stack.env.tmp" <<EOF
CEA_DATABASE_URL=$db
CEA_REDIS_URL=$redis
CEA_PG_BINDIR=$PG_BINDIR
EOF
    [ -n "${CEA_DATABASE_URL:-}" ] || db_role_env >>"$STATE/stack.env.tmp"
  )
  mv "$STATE/stack.env.tmp" "$STATE/stack.env"
}

ensure_test_tools() {
  step="test tools"
  need_cmd shellcheck || {
    say "installing shellcheck"
    apt_install shellcheck
  }
  ensure_prometheus
}

# Debian's prometheus and promtool for the tests of ops/prometheus/. Taken out
# of the package into $STATE/tools/bin instead of installing it: the package
# would start a machine-wide Prometheus on port 9090; the tests start their
# own, on a free loopback port, and stop it.
ensure_prometheus() {
  step="prometheus"
  local bin="$STATE/tools/bin"
  if [ -x "$bin/prometheus" ] && [ -x "$bin/promtool" ]; then return; fi
  if need_cmd prometheus && need_cmd promtool; then return; fi
  need_cmd apt-get || die "no apt-get to fetch Debian's prometheus; install prometheus and promtool yourself"
  local work="$STATE/tools/deb"
  rm -rf "$work" && mkdir -p "$work" "$bin"
  say "fetching Debian's prometheus package (prometheus, promtool)"
  if ! (cd "$work" && apt-get download prometheus >"$work/download.log" 2>&1); then
    [ "$(id -u)" -eq 0 ] || die "apt-get download prometheus failed; see $work/download.log"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    (cd "$work" && apt-get download prometheus >"$work/download.log" 2>&1) ||
      die "apt-get download prometheus failed; see $work/download.log"
  fi
  local debs=("$work"/prometheus_*.deb)
  dpkg-deb -x "${debs[0]}" "$work/root" || die "dpkg-deb -x ${debs[0]} failed"
  install -m 0755 "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$bin/" || die "no binaries in ${debs[0]}"
  rm -rf "$work"
  "$bin/promtool" --version >/dev/null 2>&1 || die "$bin/promtool does not run"
}

cmd_up() {
  mkdir -p "$STATE"
  [ -n "${CEA_DATABASE_URL:-}" ] || check_bindir
  ensure_node_modules
  [ "${1:-}" != "--test-tools" ] || ensure_test_tools
  if [ -z "${CEA_DATABASE_URL:-}" ]; then
    ensure_timescaledb
    ensure_postgres
    ensure_db_roles
  fi
  [ -n "${CEA_REDIS_URL:-}" ] || ensure_redis
  write_env
  step=""
}

cmd_down() {
  step="stop"
  if [ -n "$(pg_running_pid)" ]; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    say "PostgreSQL stopped"
  fi
  if our_redis_on "$REDIS_PORT"; then
    timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    say "Redis stopped"
  fi
  step=""
}

cmd_destroy() {
  cmd_down
  step="destroy"
  rm -rf "$PG_DATA" "$PG_SOCK" "$BINDIR_FILE" "$PG_LOG" "$PG_BASE/initdb.log" "$STATE/redis" "$STATE/stack.env"
  # as root the cluster lives outside the state dir, in a folder of its own
  [ "$PG_BASE" = "$STATE" ] || rmdir "$PG_BASE" 2>/dev/null || true
  say "deleted the private PostgreSQL cluster and Redis data of $STATE"
  step=""
}

cmd_status() {
  echo "state dir:   $STATE"
  echo "postgres:    $PG_DATA (port $PG_PORT, binaries $PG_BINDIR)"
  echo "redis:       $STATE/redis (port $REDIS_PORT)"
  if [ -f "$STATE/stack.env" ]; then
    local line
    while IFS= read -r line; do redact_url "$line"; done <"$STATE/stack.env"
  fi
}

case "$cmd" in
  up) cmd_up "${2:-}" ;;
  down) cmd_down ;;
  destroy) cmd_destroy ;;
  status) cmd_status ;;
  apt-source)
    step="apt source"
    out=$(apt_source)
    [ -n "$out" ] || die "no Debian archive in this machine's apt sources; set CEA_APT_MIRROR"
    echo "$out"
    ;;
esac
