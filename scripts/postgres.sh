#!/usr/bin/env bash
# A private PostgreSQL server for `nnkit tune --storage postgresql://...` (studies shared by several machines)
# and for the tests of that path, which use the real server, never a mock.
#   scripts/postgres.sh start DIR   install PostgreSQL if it is missing (apt-get, as root), create a cluster in
#                                   DIR if there is none, start it on a Unix socket in DIR (no TCP port, so it
#                                   never collides with another server), create the database "nnkit", and print
#                                   the storage URL to give nnkit tune
#   scripts/postgres.sh stop DIR    stop that server (the cluster stays in DIR)
# The server runs as the user "postgres" when started by root (PostgreSQL refuses to run as root), else as the
# caller. Authentication is "trust" on the socket only: a test server, reachable only through DIR.
set -euo pipefail
what=${1:-}
dir=${2:-}
if [ -z "$what" ] || [ -z "$dir" ]; then
  sed -n '4,10p' "$0" | sed 's/^# //' >&2
  exit 2
fi
bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do  # Debian/Ubuntu keep the server binaries out of PATH
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}
if ! bin=$(bindir); then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/postgres.sh: PostgreSQL is not installed; install it (apt-get install postgresql) or run this as root" >&2
    exit 3
  fi
  echo "scripts/postgres.sh: installing PostgreSQL (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
  bin=$(bindir) || { echo "scripts/postgres.sh: apt-get installed no initdb" >&2; exit 3; }
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
as() {  # run a server command as the user who owns the cluster
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
data=$dir/data
case "$what" in
  start)
    if [ ! -f "$data/PG_VERSION" ]; then
      as "$bin/initdb" -D "$data" -U postgres --auth=trust --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! as "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=50" start >/dev/null \
        || { tail -5 "$dir/server.log" >&2; exit 1; }
    fi
    if ! as "$bin/psql" -h "$dir" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'nnkit'" postgres \
        | grep -q 1; then
      as "$bin/createdb" -h "$dir" -U postgres nnkit
    fi
    echo "postgresql+psycopg2://postgres@/nnkit?host=$dir"
    ;;
  stop)
    [ -f "$data/PG_VERSION" ] && as "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    sed -n '4,10p' "$0" | sed 's/^# //' >&2
    exit 2
    ;;
esac
