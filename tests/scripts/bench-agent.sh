#!/usr/bin/env bash
# Whole-process benchmark of `tollgate agent` at ENTRIES conntrack entries per interval
# (default 1,000,000) over INTERVALS intervals (default 3) with traffic on every entry, and
# over the same table idle, against the sum of its parts measured alone
# (tests/src/bin/bench_agent.rs). Starts its own ClickHouse. Run as root; it
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
# Traffic for the agent's intervals: bench_agent sends one packet per entry through a raw
# socket; conntrack counts it at OUTPUT and the `out` chain drops it there. The `ct`
# expression is what makes the kernel track this namespace's packets (conntrack hooks are
# registered on demand); loopback (ClickHouse, the agent's HTTP) stays untracked, so the
# table holds exactly the injected entries. Mid-stream TCP packets are accepted without a
# handshake, and entries touched by that traffic keep long timeouts.
ip netns exec "$ns" ip route add default dev lo
ip netns exec "$ns" nft -f - <<'RULES'
table ip bench {
  chain raw_out { type filter hook output priority raw; ip daddr 127.0.0.0/8 notrack; }
  chain out { type filter hook output priority filter; ct state established counter; ip daddr != 127.0.0.0/8 drop; }
}
RULES
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=1 \
  net.netfilter.nf_conntrack_udp_timeout=3600 net.netfilter.nf_conntrack_tcp_timeout_unacknowledged=3600
ip netns exec "$ns" target/release/bench_agent "$entries" "$intervals"
