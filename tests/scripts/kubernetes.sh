#!/usr/bin/env bash
# A real three-node Kubernetes 1.20 cluster on this machine, for tollgate's end-to-end suite:
# etcd, kube-apiserver, controller-manager and scheduler in a control-plane network
# namespace; each node a network and mount namespace of its own running containerd, kubelet and
# kube-proxy (iptables mode). Nothing touches the machine's own network namespace.
#
#   kubernetes.sh install            install the Debian packages; build the Kubernetes binaries
#                                    from Debian's source package once (up to about 16 minutes on 2
#                                    cores), cached outside the repo by version
#   kubernetes.sh cached             exit 0 if every binary is built and cached (nothing to build)
#   kubernetes.sh up DIR UNDERLAY    start the cluster with its state and logs in DIR; UNDERLAY is
#                                    `routed` (static routes between the pod ranges) or `overlay`
#                                    (a VXLAN device per node, as flannel sets it up)
#   kubernetes.sh load DIR TAR       import an image (docker-archive) into every node
#   kubernetes.sh relay DIR PORT     make 127.0.0.1:PORT (a ClickHouse here) reachable from the
#                                    nodes and pods at 172.30.0.1:8123
#   kubernetes.sh kubectl DIR ARG... run kubectl (1.20) against the cluster as its admin
#   kubernetes.sh down DIR           stop everything by PID, delete the namespaces and cgroups
#
#   control plane  172.30.0.1 (bridge, no uplink)        tgk-ctl
#   node-a         172.30.0.11  pods 10.244.1.0/24  zone r1-a, region r1   tgk-node-a
#   node-b         172.30.0.12  pods 10.244.2.0/24  zone r1-b, region r1   tgk-node-b
#   node-c         172.30.0.13  pods 10.244.3.0/24  zone r2-c, region r2   tgk-node-c
#                  (its IPAM gives out 10.244.3.2-4 only: a pod's freed address goes to the next
#                  pod, as in a full pool, for the address-reuse test)
#   internet host  203.0.113.10 (on the bridge as 172.30.0.100), reached through the nodes'
#                  masquerade                         tgk-internet
# The cluster is dual-stack (Kubernetes 1.20's IPv6DualStack feature gate, an IPv6 Service
# range): node N also has fd00:172:30::1N, the internet host 2001:db8:113::10 (fd00:172:30::100
# on the bridge). Over the routed underlay pods get fd00:10:244:N::/64 addresses too; over the
# overlay they are IPv4 only, as with flannel's one VXLAN device.
# Each node's spec.providerID is aws:///ZONE/i-000000000000000N, so provider and zone come from the API.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/kubernetes-build.sh"
cache="${TOLLGATE_CACHE:-/var/cache/tollgate}/kubernetes-$kubernetes_version"
nodes=(node-a node-b node-c)
zones=(r1-a r1-b r2-c)
regions=(r1 r1 r2)
internet=203.0.113.10
internet6=2001:db8:113::10
# Unix sockets, on a short path: a socket's path has at most 107 bytes, and DIR may be deep.
sockets=/run/tollgate-kubernetes
socket() { echo "$sockets/$1/containerd.sock"; }

install() {
  apt_install etcd-server containerd runc containernetworking-plugins conntrack iptables iproute2 \
    nftables openssl socat util-linux python3 bridge-utils
  "$here/kube-apiserver.sh" install
  [ -x "$cache/kubelet" ] && [ -x "$cache/pause" ] && return
  mkdir -p "$(dirname "$cache")"
  exec 8>"$cache.lock"
  flock 8
  [ -x "$cache/kubelet" ] && [ -x "$cache/pause" ] && return
  echo "building Kubernetes $kubernetes_version's node binaries from Debian's source package (about 16 minutes on 2 cores, once) ..." >&2
  kubernetes_build "$cache" cmd/kubelet cmd/kube-proxy cmd/kube-controller-manager cmd/kube-scheduler
}

cached() {
  [ -x "$cache/kubelet" ] && [ -x "$cache/pause" ] && [ -x "$(apiserver)" ] && [ -x "$(kubectl_of)" ]
}

apiserver() { echo "${TOLLGATE_CACHE:-/var/cache/tollgate}/kube-apiserver-$kubernetes_version/kube-apiserver"; }
kubectl_of() { echo "${TOLLGATE_CACHE:-/var/cache/tollgate}/kube-apiserver-$kubernetes_version/kubectl"; }
kc() { ip netns exec tgk-ctl "$(kubectl_of)" --kubeconfig="$1/pki/admin.kubeconfig" "${@:2}"; }

network() { # dir underlay
  local dir="$1" underlay="$2" i n
  modprobe br_netfilter 2>/dev/null || true
  ip netns add tgk-ctl
  ip -n tgk-ctl link set lo up
  ip -n tgk-ctl link add br0 type bridge
  ip -n tgk-ctl addr add 172.30.0.1/24 dev br0
  ip netns exec tgk-ctl sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n tgk-ctl addr add fd00:172:30::1/64 dev br0
  ip -n tgk-ctl link set br0 up
  for i in 0 1 2; do
    n=${nodes[$i]}
    ip netns add "tgk-$n"
    ip netns exec "tgk-$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "tgk-$n" link set lo up
    ip -n tgk-ctl link add "veth-$n" type veth peer name eth0 netns "tgk-$n"
    ip -n tgk-ctl link set "veth-$n" master br0 up
    ip -n "tgk-$n" addr add "172.30.0.1$((i + 1))/24" dev eth0
    ip -n "tgk-$n" addr add "fd00:172:30::1$((i + 1))/64" dev eth0
    ip -n "tgk-$n" link set eth0 up
    ip -n "tgk-$n" route add default via 172.30.0.100
    ip -n "tgk-$n" -6 route add default via fd00:172:30::100
    # Conntrack's accounting stays off (the kernel's default in a new namespace): tollgate's
    # init container must turn it on. Bridged pod traffic goes through iptables, as kube-proxy needs.
    ip netns exec "tgk-$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
    # Pods leave for addresses outside the cluster behind their node's address, as on a
    # cloud VPC's NAT or a CNI's masquerade.
    ip netns exec "tgk-$n" iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
    ip netns exec "tgk-$n" ip6tables -t nat -A POSTROUTING -s fd00:10:244::/48 ! -d fd00:10:244::/48 -j MASQUERADE
    # Return path from the control plane (the `kubernetes` Service) to the pods.
    ip -n tgk-ctl route add "10.244.$((i + 1)).0/24" via "172.30.0.1$((i + 1))"
    ip -n tgk-ctl route add "fd00:10:244:$((i + 1))::/64" via "fd00:172:30::1$((i + 1))"
  done
  ip netns add tgk-internet
  ip -n tgk-internet link set lo up
  ip -n tgk-ctl link add veth-internet type veth peer name eth0 netns tgk-internet
  ip -n tgk-ctl link set veth-internet master br0 up
  ip netns exec tgk-internet sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n tgk-internet addr add 172.30.0.100/24 dev eth0
  ip -n tgk-internet addr add fd00:172:30::100/64 dev eth0
  ip -n tgk-internet addr add "$internet/32" dev lo
  ip -n tgk-internet addr add "$internet6/128" dev lo
  ip -n tgk-internet link set eth0 up
  # Its answers come from its public address (a UDP server's source is the route's).
  ip -n tgk-internet route replace 172.30.0.0/24 dev eth0 src "$internet"
  ip -n tgk-internet -6 route replace fd00:172:30::/64 dev eth0 src "$internet6" metric 256
  for i in 0 1 2; do
    for j in 0 1 2; do
      [ "$i" = "$j" ] && continue
      if [ "$underlay" = routed ]; then
        ip -n "tgk-${nodes[$i]}" route add "10.244.$((j + 1)).0/24" via "172.30.0.1$((j + 1))"
        ip -n "tgk-${nodes[$i]}" route add "fd00:10:244:$((j + 1))::/64" via "fd00:172:30::1$((j + 1))"
      fi
    done
  done
  [ "$underlay" = overlay ] && vxlan
  return 0
}

# flannel's VXLAN backend: a device per node whose address is the first of the node's pod
# range; for every other node a route, a neighbour and a forwarding entry to its address.
vxlan() {
  local i j n
  for i in 0 1 2; do
    n="tgk-${nodes[$i]}"
    ip -n "$n" link add flannel.1 address "02:00:00:00:00:0$((i + 1))" mtu 1450 type vxlan id 1 \
      dstport 8472 local "172.30.0.1$((i + 1))" dev eth0 nolearning
    ip -n "$n" addr add "10.244.$((i + 1)).0/32" dev flannel.1
    ip -n "$n" link set flannel.1 up
    for j in 0 1 2; do
      [ "$i" = "$j" ] && continue
      ip -n "$n" route add "10.244.$((j + 1)).0/24" via "10.244.$((j + 1)).0" dev flannel.1 onlink
      ip -n "$n" neigh add "10.244.$((j + 1)).0" lladdr "02:00:00:00:00:0$((j + 1))" dev flannel.1
      bridge -n "$n" fdb append "02:00:00:00:00:0$((j + 1))" dev flannel.1 dst "172.30.0.1$((j + 1))"
    done
  done
}

token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

kubeconfig() { # dir name user [group]
  local dir="$1" t
  t="$(token)"
  if [ -n "${4:-}" ]; then echo "$t,$3,$3,\"$4\"" >> "$dir/pki/tokens.csv"; else echo "$t,$3,$3" >> "$dir/pki/tokens.csv"; fi
  cat > "$dir/pki/$2.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tollgate
  cluster: {server: "https://172.30.0.1:6443", certificate-authority: "$dir/pki/ca.crt"}
users:
- name: $2
  user: {token: "$t"}
contexts:
- name: tollgate
  context: {cluster: tollgate, user: $2}
current-context: tollgate
EOF
}

pki() {
  local dir="$1" p="$1/pki" n
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tollgate-cluster-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:172.30.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
    "extendedKeyUsage=serverAuth" > "$p/apiserver.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/apiserver.key" \
    -out "$p/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 2 \
    -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  : > "$p/tokens.csv"
  kubeconfig "$dir" admin admin system:masters
  kubeconfig "$dir" controller-manager system:kube-controller-manager
  kubeconfig "$dir" scheduler system:kube-scheduler
  kubeconfig "$dir" kube-proxy system:kube-proxy
  for n in "${nodes[@]}"; do kubeconfig "$dir" "$n" "system:node:$n" system:nodes; done
}

background() { # dir name command...: start in the background, PID in DIR/pids/NAME
  local dir="$1" name="$2"
  shift 2
  "$@" > "$dir/logs/$name.log" 2>&1 &
  echo $! > "$dir/pids/$name"
}

control_plane() {
  local dir="$1" p="$1/pki" x="ip netns exec tgk-ctl"
  background "$dir" etcd $x etcd --name ctl --data-dir "$dir/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster ctl=http://127.0.0.1:2380
  background "$dir" kube-apiserver $x "$(apiserver)" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=172.30.0.1 --advertise-address=172.30.0.1 --secure-port=6443 --insecure-port=0 \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --token-auth-file="$p/tokens.csv" --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range=10.96.0.0/16,fd00:96::/112 --service-node-port-range=30000-32767 \
    --feature-gates=IPv6DualStack=true \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP --cert-dir="$dir/apiserver-certs"
  local t
  for t in $(seq 600); do
    kc "$dir" get --raw /readyz >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/pids/kube-apiserver")" 2>/dev/null || { tail -n 20 "$dir/logs/kube-apiserver.log" >&2; return 1; }
    sleep 0.2
  done
  background "$dir" kube-controller-manager $x "$cache/kube-controller-manager" \
    --kubeconfig="$p/controller-manager.kubeconfig" --bind-address=127.0.0.1 --port=0 \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --use-service-account-credentials=true --cluster-signing-cert-file="$p/ca.crt" \
    --cluster-signing-key-file="$p/ca.key" --leader-elect=false \
    --cluster-cidr=10.244.0.0/16,fd00:10:244::/48 --service-cluster-ip-range=10.96.0.0/16,fd00:96::/112 \
    --feature-gates=IPv6DualStack=true
  background "$dir" kube-scheduler $x "$cache/kube-scheduler" --kubeconfig="$p/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0
}

node() { # dir index underlay
  local dir="$1" i="$2" underlay="$3"
  local n="${nodes[$i]}" d="$1/nodes/${nodes[$i]}" k=$((i + 1))
  local mnt="$dir/run/mnt-$n"
  mkdir -p "$d"/{containerd,cni,runc,manifests} "$d"/bind/{pods,containers,kubelet,cni,containerd,tollgate} "$dir/run" \
    "$sockets/$n"
  # The paths kubelet, containerd, CNI and tollgate's DaemonSet hard-code become the node's own.
  mkdir -p /var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd /var/lib/tollgate
  touch "$mnt"
  unshare --mount="$mnt" --propagation slave true
  nsenter --mount="$mnt" sh -ec "
    mount --bind $d/bind/pods /var/log/pods
    mount --bind $d/bind/containers /var/log/containers
    mount --bind $d/bind/kubelet /var/lib/kubelet
    mount --bind $d/bind/cni /var/lib/cni
    mount --bind $d/bind/containerd /run/containerd
    mount --bind $d/bind/tollgate /var/lib/tollgate"
  cat > "$d/containerd/config.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$(socket "$n")"
[ttrpc]
  address = "$(socket "$n").ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.2"
  # runc cannot set oom_score_adj below the caller's without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
EOF
  local mtu=1500 pool="" v6="" v6_route=""
  [ "$underlay" = overlay ] && mtu=1450
  if [ "$underlay" = routed ]; then
    v6=", [{\"subnet\": \"fd00:10:244:$k::/64\", \"gateway\": \"fd00:10:244:$k::1\"}]"
    v6_route=', {"dst": "::/0"}'
  fi
  [ "$n" = node-c ] && pool=', "rangeStart": "10.244.3.2", "rangeEnd": "10.244.3.4"'
  cat > "$d/cni/10-bridge.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "tollgate", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": $mtu,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$k.0/24", "gateway": "10.244.$k.1"$pool}]$v6],
            "routes": [{"dst": "0.0.0.0/0"}$v6_route]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  local in_node=(nsenter --mount="$mnt" --net="/run/netns/tgk-$n")
  background "$dir" "containerd-$n" "${in_node[@]}" containerd --config "$d/containerd/config.toml"
  local t
  for t in $(seq 100); do [ -S "$(socket "$n")" ] && break; sleep 0.1; done
  ctr -a "$(socket "$n")" -n k8s.io images import "$dir/images/pause.tar" >/dev/null
  # Each kubelet its own cgroup root in every v1 hierarchy, so that they never share /kubepods.
  local h
  for h in /sys/fs/cgroup/*/; do
    case "$h" in */unified/) continue ;; esac
    mkdir -p "$h/tgk-$n"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" > "$h/tgk-$n/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h/tgk-$n/cpuset.mems"
    fi
  done
  echo "nameserver 172.30.0.1" > "$d/resolv.conf"
  cat > "$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Reachable only inside this machine's namespaces.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /tgk-$n
failSwapOn: false
address: 172.30.0.1$k
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
clusterDomain: cluster.local
resolvConf: $d/resolv.conf
staticPodPath: $d/manifests
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
featureGates: {IPv6DualStack: true}
EOF
  background "$dir" "kubelet-$n" "${in_node[@]}" "$cache/kubelet" --config="$d/kubelet.yaml" \
    --kubeconfig="$dir/pki/$n.kubeconfig" --container-runtime=remote \
    --container-runtime-endpoint="unix://$(socket "$n")" --root-dir=/var/lib/kubelet \
    --hostname-override="$n" --node-ip="172.30.0.1$k" --provider-id="aws:///${zones[$i]}/i-0000000000000000$k" \
    --node-labels="topology.kubernetes.io/zone=${zones[$i]},topology.kubernetes.io/region=${regions[$i]}" \
    --pod-infra-container-image=registry.k8s.io/pause:3.2 --v=1
  cat > "$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/pki/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: 10.244.0.0/16,fd00:10:244::/48
featureGates: {IPv6DualStack: true}
hostnameOverride: $n
bindAddress: 172.30.0.1$k
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack's limits are the machine's, not the node's: leave them alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  background "$dir" "kube-proxy-$n" "${in_node[@]}" "$cache/kube-proxy" --config="$d/kube-proxy.yaml"
}

# Images without a registry: docker-archive tars of a root filesystem, imported into each node.
images() {
  local dir="$1" root="$1/images/root"
  mkdir -p "$root/pause" "$dir/images"
  cp "$cache/pause" "$root/pause/pause"
  python3 "$here/image-tar.py" "$root/pause" registry.k8s.io/pause:3.2 "$dir/images/pause.tar" \
    --entrypoint '["/pause"]'
  # Python and busybox, for the test workloads (traffic.py).
  local py lib r="$root/python"
  py="$(readlink -f /usr/bin/python3)"
  mkdir -p "$r"/{tmp,etc,bin,usr/bin,usr/lib}
  cp "$py" "$r/usr/bin/"
  ln -sf "$(basename "$py")" "$r/usr/bin/python3"
  for lib in $(ldd "$py" | grep -o '/[^ ]*'); do mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"; done
  local stdlib
  stdlib="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
  mkdir -p "$r$stdlib"
  (cd "$stdlib" && tar --exclude=test --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
    --exclude=lib2to3 --exclude=site-packages --exclude=dist-packages --exclude=__pycache__ -cf - .) \
    | tar -C "$r$stdlib" -xf -
  cp "$here/traffic.py" "$r/usr/bin/traffic.py"
  cp /bin/busybox "$r/bin/busybox"
  ln -sf busybox "$r/bin/sh"
  ln -sf busybox "$r/bin/sleep"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"
  chmod 1777 "$r/tmp"
  python3 "$here/image-tar.py" "$r" localhost/python:test "$dir/images/python.tar" \
    --entrypoint '["/usr/bin/python3"]'
  rm -rf "$root"
}

# Each node's spec.podCIDR, as a cluster's IPAM sets it (the ranges the CNI configs use).
pod_ranges() { # dir underlay
  local dir="$1" i t ranges
  for i in 0 1 2; do
    for t in $(seq 240); do
      kc "$dir" get node "${nodes[$i]}" >/dev/null 2>&1 && break
      sleep 0.5
    done
    ranges="\"10.244.$((i + 1)).0/24\""
    [ "$2" = routed ] && ranges="$ranges,\"fd00:10:244:$((i + 1))::/64\""
    kc "$dir" patch node "${nodes[$i]}" --type merge \
      -p "{\"spec\":{\"podCIDR\":\"10.244.$((i + 1)).0/24\",\"podCIDRs\":[$ranges]}}" >/dev/null
  done
}

wait_ready() {
  local dir="$1" t
  for t in $(seq 240); do
    [ "$(kc "$dir" get nodes --no-headers 2>/dev/null | grep -cw Ready)" = 3 ] && return 0
    sleep 0.5
  done
  kc "$dir" get nodes >&2 || true
  echo "the nodes did not become Ready in 120 s; logs in $dir/logs" >&2
  return 1
}

up() {
  local dir="$1" underlay="$2" i
  case "$underlay" in routed | overlay) ;; *) echo "underlay: routed or overlay, not '$underlay'" >&2; exit 2 ;; esac
  if ip netns list | grep -qw tgk-ctl; then
    echo "a cluster is already running (network namespace tgk-ctl): stop it with '$0 down DIR'" >&2
    exit 1
  fi
  install
  mkdir -p "$dir"/{logs,pids,nodes,images}
  dir="$(cd "$dir" && pwd)"
  echo "$underlay" > "$dir/underlay"
  apt_install bridge-utils busybox-static
  images "$dir"
  network "$dir" "$underlay"
  pki "$dir"
  control_plane "$dir"
  for i in 0 1 2; do node "$dir" "$i" "$underlay"; done
  pod_ranges "$dir" "$underlay"
  wait_ready "$dir"
  for i in 0 1 2; do
    ctr -a "$(socket "${nodes[$i]}")" -n k8s.io images import "$dir/images/python.tar" >/dev/null
  done
}

load() { # dir tar
  local n
  for n in "${nodes[@]}"; do
    ctr -a "$(socket "$n")" -n k8s.io images import "$2" >/dev/null
  done
}

relay() { # dir port
  local dir="$1" port="$2"
  rm -f "$sockets/clickhouse.sock"
  background "$dir" relay-host socat "UNIX-LISTEN:$sockets/clickhouse.sock,fork" "TCP:127.0.0.1:$port"
  local t
  for t in $(seq 100); do [ -S "$sockets/clickhouse.sock" ] && break; sleep 0.05; done
  background "$dir" relay-ctl ip netns exec tgk-ctl socat TCP-LISTEN:8123,bind=172.30.0.1,fork,reuseaddr \
    "UNIX-CONNECT:$sockets/clickhouse.sock"
  for t in $(seq 100); do
    ip netns exec tgk-node-a curl -sf -o /dev/null http://172.30.0.1:8123/ping && return 0
    sleep 0.05
  done
  echo "the relay to 127.0.0.1:$port does not answer" >&2
  return 1
}

stop_pid() { # pid file
  [ -s "$1" ] || return 0
  local pid t
  pid="$(cat "$1")"
  kill "$pid" 2>/dev/null || true
  for t in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

down() {
  local dir="$1" n pid proc
  for n in "${nodes[@]}"; do
    stop_pid "$dir/pids/kube-proxy-$n"
    stop_pid "$dir/pids/kubelet-$n"
    # Every container process of the node lives under its cgroup root.
    for pid in $(find "/sys/fs/cgroup/pids/tgk-$n" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null || true
    done
    stop_pid "$dir/pids/containerd-$n"
    for proc in /proc/[0-9]*; do
      grep -qa -- "$(socket "$n")" "$proc/cmdline" 2>/dev/null \
        && grep -qa containerd-shim "$proc/cmdline" 2>/dev/null && kill -9 "${proc#/proc/}" 2>/dev/null
    done
    # The node's mounts (containers' root filesystems, pods' volumes) are in its mount namespace.
    umount -l "$dir/run/mnt-$n" 2>/dev/null || true
  done
  local name
  for name in relay-ctl relay-host kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pid "$dir/pids/$name"
  done
  for n in ctl node-a node-b node-c internet; do ip netns del "tgk-$n" 2>/dev/null || true; done
  rm -rf "$sockets"
  find /sys/fs/cgroup/*/ -maxdepth 1 -name 'tgk-*' -type d 2>/dev/null | while read -r root; do
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  grep -F " $dir/" /proc/mounts | cut -d' ' -f2 | xargs -r -n1 umount -l 2>/dev/null || true
  return 0
}

case "${1:-}" in
  install) install ;;
  cached) cached ;;
  up) up "${2:?state directory}" "${3:?underlay: routed or overlay}" ;;
  load) load "${2:?state directory}" "${3:?image tar}" ;;
  relay) relay "${2:?state directory}" "${3:?port}" ;;
  kubectl) kc "${2:?state directory}" "${@:3}" ;;
  down) down "${2:?state directory}" ;;
  *) sed -n '2,/^set /{/^#/p}' "$0"; exit 2 ;;
esac
