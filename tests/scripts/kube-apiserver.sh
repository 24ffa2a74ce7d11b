#!/usr/bin/env bash
# A real Kubernetes API server (1.20, with etcd) on 127.0.0.1 for tollgate's inventory tests.
#
#   kube-apiserver.sh install        build kube-apiserver from Debian's source package (cached
#                                    outside the repo, by version) and install etcd and kubectl
#   kube-apiserver.sh start DIR      start etcd + kube-apiserver with state, certificates and
#                                    logs in DIR; prints the path of an admin kubeconfig
#   kube-apiserver.sh stop DIR       stop both
#   kube-apiserver.sh restart DIR    kill kube-apiserver and start it again (KUBE_DOWN_SECONDS later)
#   kube-apiserver.sh kubectl        print the path of a kubectl of the same version
#
# With KUBE_WATCH_PID set, both exit when that process does (test suites).
# DIR/{admin,agent,nobody}.kubeconfig use three bearer tokens: "admin" (system:masters),
# "agent" and "nobody" (no roles: tests bind the roles they want).
# Only the API server runs: no scheduler, no controllers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/kubernetes-build.sh"
version="$kubernetes_version"
cache="${TOLLGATE_CACHE:-/var/cache/tollgate}/kube-apiserver-$version"
binary="$cache/kube-apiserver"

build() {
  echo "building kube-apiserver $version from Debian's source package (3-5 minutes, once) ..." >&2
  kubernetes_build "$cache" cmd/kube-apiserver
}

# Debian's kubectl, unpacked into the cache: another kubectl may own /usr/bin/kubectl.
kubectl_binary="$cache/kubectl"
kubectl() { "$kubectl_binary" "$@"; }

install_kubectl() {
  [ -x "$kubectl_binary" ] && return
  local work
  work="$(mktemp -d)"
  (cd "$work" && apt-get download -qq kubernetes-client >/dev/null 2>&1) \
    || (apt-get update -qq && cd "$work" && apt-get download -qq kubernetes-client >/dev/null)
  dpkg-deb -x "$work"/kubernetes-client_*.deb "$work/root"
  mkdir -p "$cache"
  cp "$work/root/usr/bin/kubectl" "$kubectl_binary.partial"
  mv "$kubectl_binary.partial" "$kubectl_binary"
  rm -rf "$work"
}

install() {
  apt_install etcd-server openssl curl
  [ -x "$binary" ] && [ -x "$kubectl_binary" ] && return
  mkdir -p "$(dirname "$cache")"
  exec 8>"$cache.lock"
  flock 8
  [ -x "$binary" ] || build
  install_kubectl
}


certificates() { # dir
  local d="$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tollgate-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

kubeconfig() { # dir, port, user, token -> file
  cat > "$1/$3.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$2
    certificate-authority: $1/ca.crt
users:
- name: $3
  user:
    token: $4
contexts:
- name: test
  context: {cluster: test, user: $3}
current-context: test
EOF
}

watch() { # pid file, then exit with KUBE_WATCH_PID
  [ -n "${KUBE_WATCH_PID:-}" ] || return 0
  local target="$1"
  (
    while kill -0 "$KUBE_WATCH_PID" 2>/dev/null; do sleep 1; done
    kill -TERM "$(cat "$target")" 2>/dev/null || true
  ) >/dev/null 2>&1 &
}

ready() { # dir
  kubectl --kubeconfig "$1/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/admin.kubeconfig" ] && ready "$dir"; then echo "$dir/admin.kubeconfig"; return; fi
  certificates "$dir"
  local admin agent nobody etcd_port peer_port port
  admin="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  agent="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  nobody="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s,admin,admin,system:masters\n%s,agent,agent\n%s,nobody,nobody\n' "$admin" "$agent" "$nobody" > "$dir/tokens.csv"
  { read -r etcd_port; read -r peer_port; read -r port; } < <(python3 "$here/free_ports.py" 3)
  nohup etcd --data-dir "$dir/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" > "$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  watch "$dir/etcd.pid"
  printf '%s\n' --bind-address=127.0.0.1 --secure-port="$port" --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$etcd_port" --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC --tls-cert-file="$dir/server.crt" --tls-private-key-file="$dir/server.key" \
    --client-ca-file="$dir/ca.crt" --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.96.0.0/16 --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true > "$dir/apiserver.args"
  kubeconfig "$dir" "$port" admin "$admin"
  kubeconfig "$dir" "$port" agent "$agent"
  kubeconfig "$dir" "$port" nobody "$nobody"
  launch "$dir"
}

launch() { # dir: start kube-apiserver with the saved arguments, wait until ready
  local dir="$1" args
  mapfile -t args < "$dir/apiserver.args"
  nohup "$binary" "${args[@]}" >> "$dir/apiserver.log" 2>&1 &
  echo $! > "$dir/apiserver.pid"
  watch "$dir/apiserver.pid"
  for _ in $(seq 300); do
    if ready "$dir"; then echo "$dir/admin.kubeconfig"; return; fi
    kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "kube-apiserver did not start; see $dir/apiserver.log" >&2
  tail -n 20 "$dir/apiserver.log" >&2 || true
  return 1
}

restart() { # dir: kill kube-apiserver (watches break), start it again on the same port
  local dir="$1" pid
  pid="$(cat "$dir/apiserver.pid")"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  sleep "${KUBE_DOWN_SECONDS:-0}"
  launch "$dir"
}

stop() {
  local dir="$1" name pid
  for name in apiserver etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid="$(cat "$dir/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?state directory}" ;;
  stop) stop "${2:?state directory}" ;;
  restart) restart "${2:?state directory}" ;;
  kubectl) install >/dev/null; echo "$kubectl_binary" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
