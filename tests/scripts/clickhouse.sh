#!/usr/bin/env bash
# A real ClickHouse 26.x server on 127.0.0.1 for tollgate's tests, demo and development.
#
#   clickhouse.sh install            install the engine (cached outside the repo, by version)
#   clickhouse.sh start DIR [PORT]   start a server whose data, config and log live in DIR;
#                                    prints its URL (a free port unless PORT is given)
#   clickhouse.sh health DIR         exit 0 if the server of DIR answers, and is that server
#   clickhouse.sh stop DIR           stop it (the data stays in DIR; start again to resume)
#   clickhouse.sh python             print the interpreter that runs the server
#   clickhouse.sh cluster DIR N      start N servers forming the sharded cluster `tollgate_shards`
#                                    (one shard each, no replicas) in DIR/node1..N; prints their
#                                    URLs, one per line. A node restarts with `start DIR/nodeK
#                                    PORT` (its cluster.xml stays); stop each with `stop`.
#
# With CLICKHOUSE_WATCH_PID set, the server exits when that process does (test suites).
#
# The engine is chdb-core (the ClickHouse engine as a Python wheel) in a virtualenv under
# ${TOLLGATE_CACHE:-/var/cache/tollgate}/chdb-<version>.
set -euo pipefail
version=26.9.0
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TOLLGATE_CACHE:-/var/cache/tollgate}/chdb-$version"
python="$venv/bin/python"

install() {
  if "$python" -c 'import chdb' 2>/dev/null; then return; fi
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (test binaries may start servers concurrently).
  exec 9>"$venv.lock"
  flock 9
  if "$python" -c 'import chdb' 2>/dev/null; then return; fi
  echo "installing ClickHouse $version (chdb-core, about 180 MB) into $venv ..." >&2
  rm -rf "$venv.partial"
  python3 -m venv "$venv.partial"
  "$venv.partial/bin/pip" install -q --disable-pip-version-check --no-deps "chdb-core==$version"
  rm -rf "$venv"
  mv "$venv.partial" "$venv"
  # A venv records its own path: recreate the entry points at the final location.
  python3 -m venv --upgrade "$venv" >/dev/null
}

query() { # dir, sql -> output
  curl -sS --max-time 10 "$(cat "$1/url")/" --data-binary "$2"
}

health() {
  local dir="$1"
  [ -f "$dir/url" ] && [ -f "$dir/token" ] || return 1
  [ "$(query "$dir" 'SELECT displayName()' 2>/dev/null)" = "$(cat "$dir/token")" ]
}

start() {
  local dir="$1" port="${2:-}"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if health "$dir"; then cat "$dir/url"; return; fi
  [ -n "$port" ] || port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/token"
  echo "http://127.0.0.1:$port" > "$dir/url"
  nohup "$python" "$here/clickhouse_server.py" --data "$dir" --port "$port" \
    --token "$(cat "$dir/token")" ${CLICKHOUSE_WATCH_PID:+--watch-pid "$CLICKHOUSE_WATCH_PID"} \
    > "$dir/launcher.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 150); do
    if health "$dir"; then cat "$dir/url"; return; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "ClickHouse did not start; see $dir/launcher.log and $dir/server.err.log" >&2
  tail -n 20 "$dir/launcher.log" >&2 || true
  return 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/pid" ] || return 0
  pid="$(cat "$dir/pid")"
  query "$dir" "KILL QUERY WHERE query LIKE '%tollgate-keepalive%' AND query NOT LIKE '%KILL QUERY%' SYNC" \
    >/dev/null 2>&1 || true
  for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

cluster() {
  local dir="$1" count="$2" i shards=""
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local http=() tcp=() ports
  mapfile -t ports < <(python3 "$here/free_ports.py" $((2 * count)))
  for i in $(seq "$count"); do
    http+=("${ports[$((2 * i - 2))]}")
    tcp+=("${ports[$((2 * i - 1))]}")
    shards+="<shard><replica><host>127.0.0.1</host><port>${tcp[$((i - 1))]}</port></replica></shard>"
  done
  for i in $(seq "$count"); do
    mkdir -p "$dir/node$i"
    cat > "$dir/node$i/cluster.xml" <<XML
  <tcp_port>${tcp[$((i - 1))]}</tcp_port>
  <macros><cluster>tollgate_shards</cluster><shard>$i</shard><replica>node$i</replica></macros>
  <remote_servers><tollgate_shards>$shards</tollgate_shards></remote_servers>
XML
  done
  for i in $(seq "$count"); do start "$dir/node$i" "${http[$((i - 1))]}"; done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?data directory}" "${3:-}" ;;
  health) health "${2:?data directory}" ;;
  stop) stop "${2:?data directory}" ;;
  python) install; echo "$python" ;;
  cluster) cluster "${2:?data directory}" "${3:?number of nodes}" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
