#!/usr/bin/env bash
# Whole-process benchmark of `tollgate agent` at ENTRIES conntrack entries per interval
# (default 1,000,000) over INTERVALS intervals (default 3), against the sum of its parts
# measured alone (tests/src/bin/bench_agent.rs). Starts its own ClickHouse. Run as root; it
# raises net.netfilter.nf_conntrack_max for the run and restores it after.
set -euo pipefail
cd "$(dirname "$0")/../.."
entries="${1:-1000000}"
intervals="${2:-3}"
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true

ns="tgagent$$"
old_max="$(cat /proc/sys/net/netfilter/nf_conntrack_max)"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  sysctl -qw net.netfilter.nf_conntrack_max="$old_max"
}
trap cleanup EXIT
sysctl -qw net.netfilter.nf_conntrack_max=$((entries * 2))
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" target/release/bench_agent "$entries" "$intervals"
