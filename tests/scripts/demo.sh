#!/usr/bin/env bash
# tollgate's demo on real components: a real ClickHouse, one tollgate agent per node, the
# metering views, and nftables counting the same packets independently. Run as root.
#
#   demo.sh                on a real three-node Kubernetes if its build is cached (tests/scripts/
#                          test-all.sh makes it), else on a simulated cluster (network namespaces)
#   demo.sh --kubernetes   on the real cluster, building Kubernetes first if needed (about 16
#                          minutes on 2 cores, once)
#   demo.sh --simulated    on the simulated cluster
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-auto}"
case "$mode" in
  auto | --kubernetes | --simulated) ;;
  *) sed -n '2,/^set /{/^#/p}' "$0" >&2; exit 2 ;;
esac
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if [ "$mode" = auto ]; then
  if bash tests/scripts/kubernetes.sh cached; then
    mode=--kubernetes
  else
    echo "The demo runs on a simulated cluster: the real Kubernetes it prefers is built once from"
    echo "Debian's source package (about 16 minutes on 2 cores). To build it and run the demo there:"
    echo "  bash tests/scripts/demo.sh --kubernetes"
    mode=--simulated
  fi
fi
if [ "$mode" = --kubernetes ]; then
  bash tests/scripts/kubernetes.sh install
fi
echo "building tollgate (release)..."
cargo build --release --locked --quiet -p tollgate -p tollgate-tests --bins
if [ "$mode" = --kubernetes ]; then
  exec target/release/demo --kubernetes
fi
exec target/release/demo
