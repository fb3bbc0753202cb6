#!/usr/bin/env bash
# Local stack for demo, tests and benchmarks: npm dependencies, TimescaleDB for
# the machine's PostgreSQL, a private PostgreSQL cluster and a private Redis.
#
# Contract:
#   ops/stack.sh up      idempotent; installs/starts what is missing, writes
#                        $CEA_STATE_DIR/stack.env (CEA_DATABASE_URL, CEA_REDIS_URL, ...)
#   ops/stack.sh up --test-tools
#                        the same, plus the tools the tests use (shellcheck)
#   ops/stack.sh down    stops the private PostgreSQL and Redis (data kept)
#   ops/stack.sh status  prints where everything is
# A step that cannot be done stops with "stack: <step>: <why>" and exit 1.
# CEA_DATABASE_URL / CEA_REDIS_URL set by the caller mean "use that one": the
# matching private service is then neither built nor started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${CEA_STATE_DIR:-$ROOT/.state}"
PG_MAJOR="${CEA_PG_MAJOR:-15}"
PG_BINDIR="${CEA_PG_BINDIR:-/usr/lib/postgresql/$PG_MAJOR/bin}"
DB_NAME="${CEA_STACK_DB:-cea}"
# Debian release whose source package `timescaledb` (Apache edition) we build.
TSDB_SUITE="${CEA_TSDB_SUITE:-trixie}"

step=""
died=""
die() { echo "stack: ${step:-setup}: $*" >&2; died=1; exit 1; }
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

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}
# Ports: the caller's choice, else the one this stack used before, else the
# first free one from the default up (another checkout's stack may hold it).
if [ -n "${CEA_STACK_PG_PORT:-}" ]; then
  PG_PORT="$CEA_STACK_PG_PORT"
elif [ -f "$PG_DATA/postgresql.conf" ] && [ -n "$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$PG_DATA/postgresql.conf" | tail -n1)" ]; then
  PG_PORT="$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$PG_DATA/postgresql.conf" | tail -n1)"
else
  PG_PORT="$(free_port 55432)"
fi
if [ -n "${CEA_STACK_REDIS_PORT:-}" ]; then
  REDIS_PORT="$CEA_STACK_REDIS_PORT"
elif [ -f "$STATE/redis/port" ]; then
  REDIS_PORT="$(cat "$STATE/redis/port")"
else
  REDIS_PORT="$(free_port 56379)"
fi
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

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
  [ ${#pkgs[@]} -eq 0 ] || { say "installing build tools: ${pkgs[*]}"; apt_install "${pkgs[@]}"; }

  # A private apt configuration: our own sources list and state folders, so the
  # system's apt sources and lists are never touched.
  local apt="$STATE/apt"
  mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $TSDB_SUITE main" \
    >"$apt/etc/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/etc/sources.list" -o "Dir::Etc::sourceparts=$apt/etc/sources.list.d"
    -o "Dir::Etc::preferencesparts=$apt/etc/preferences.d" -o "Dir::State=$apt" -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  say "fetching the timescaledb source package from Debian $TSDB_SUITE"
  apt-get "${opts[@]}" update -qq >"$apt/update.log" 2>&1 || die "private apt-get update failed; see $apt/update.log"
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

ensure_postgres() {
  step="private PostgreSQL"
  mkdir -p "$PG_BASE"
  [ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PG_BASE"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initdb $PG_DATA"
    as_pg "$PG_BINDIR/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1 ||
      die "initdb failed; see $PG_BASE/initdb.log"
    cat >>"$PG_DATA/postgresql.conf" <<EOF
# --- cea-telemetry private cluster ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
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
  mkdir -p "$PG_SOCK"
  [ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PG_SOCK"
  if ! as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    if port_busy "$PG_PORT"; then
      [ -z "${CEA_STACK_PG_PORT:-}" ] || die "port $PG_PORT (CEA_STACK_PG_PORT) is taken by another process"
      PG_PORT="$(free_port "$PG_PORT")"
      echo "port = $PG_PORT" >>"$PG_DATA/postgresql.conf"
    fi
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_BASE/postgres.log" -w -t 60 start >/dev/null ||
      die "pg_ctl start failed; see $PG_BASE/postgres.log"
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
}

# The Redis on our port is ours if it keeps its files in our state folder.
our_redis() {
  [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get dir 2>/dev/null | sed -n 2p)" = "$STATE/redis" ]
}

ensure_redis() {
  step="private Redis"
  mkdir -p "$STATE/redis"
  if our_redis; then return; fi
  need_cmd redis-server || apt_install redis-server
  if port_busy "$REDIS_PORT"; then
    [ -z "${CEA_STACK_REDIS_PORT:-}" ] || die "port $REDIS_PORT (CEA_STACK_REDIS_PORT) is taken by another process"
    REDIS_PORT="$(free_port "$REDIS_PORT")"
  fi
  echo "$REDIS_PORT" >"$STATE/redis/port"
  say "starting Redis on 127.0.0.1:$REDIS_PORT (append-only)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --appendonly yes --appendfsync everysec \
    --save "" --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" ||
    die "redis-server failed to start; see $STATE/redis/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return
    sleep 0.1
  done
  die "Redis did not answer on port $REDIS_PORT; see $STATE/redis/redis.log"
}

write_env() {
  step="write stack.env"
  local db="${CEA_DATABASE_URL:-$(pg_url)}" redis="${CEA_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
  cat >"$STATE/stack.env.tmp" <<EOF
CEA_DATABASE_URL=$db
CEA_REDIS_URL=$redis
CEA_PG_BINDIR=$PG_BINDIR
EOF
  [ -n "${CEA_DATABASE_URL:-}" ] || db_role_env >>"$STATE/stack.env.tmp"
  mv "$STATE/stack.env.tmp" "$STATE/stack.env"
}

ensure_test_tools() {
  step="test tools"
  need_cmd shellcheck || { say "installing shellcheck"; apt_install shellcheck; }
}

cmd_up() {
  mkdir -p "$STATE"
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
  if [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    say "PostgreSQL stopped"
  fi
  if our_redis; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    say "Redis stopped"
  fi
  step=""
}

cmd_status() {
  echo "state dir:   $STATE"
  echo "postgres:    $PG_DATA (port $PG_PORT, binaries $PG_BINDIR)"
  echo "redis:       $STATE/redis (port $REDIS_PORT)"
  [ -f "$STATE/stack.env" ] && cat "$STATE/stack.env"
}

case "${1:-up}" in
  up) cmd_up "${2:-}" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
