#!/usr/bin/env bash
# Whole-process benchmark: `tollgate conntrack dump` against `conntrack -L -z -o save`, both
# zeroing-dumping the same table of ENTRIES injected entries (default 1,000,000), RUNS times
# each (default 5), alternating. Prints median wall time, median peak RSS and the ratio.
# Run as root; it raises net.netfilter.nf_conntrack_max for the run and restores it after.
set -euo pipefail
cd "$(dirname "$0")/../.."
entries="${1:-1000000}"
runs="${2:-5}"
source tests/scripts/install-deps.sh
for tool in /usr/bin/time /usr/bin/bc; do [ -x "$tool" ] || apt-get install -y -qq time bc >/dev/null; done
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate 2>&1 | grep -E '^(error|warning)' || true
tollgate="$PWD/target/release/tollgate"

ns="tgbench$$"
work="$(mktemp -d)"
old_max="$(cat /proc/sys/net/netfilter/nf_conntrack_max)"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  sysctl -qw net.netfilter.nf_conntrack_max="$old_max"
  rm -rf "$work"
}
trap cleanup EXIT
sysctl -qw net.netfilter.nf_conntrack_max=$((entries * 2))
ip netns add "$ns"
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_acct=1 \
  net.netfilter.nf_conntrack_timestamp=1 net.netfilter.nf_conntrack_events=1

# 90% IPv4 TCP (established), 10% IPv6 UDP, all distinct tuples.
python3 - "$entries" > "$work/entries" <<'PY'
import sys
n = int(sys.argv[1])
v6 = n // 10
out = sys.stdout
for i in range(n - v6):
    a, b = divmod(i, 60000)
    out.write(f"-I -s 10.{a // 256 % 256}.{a % 256}.{b % 250 + 1} -d 10.200.0.1 -p tcp "
              f"--sport {b + 1024} --dport 443 --state ESTABLISHED --timeout 7200\n")
for i in range(v6):
    a, b = divmod(i, 60000)
    out.write(f"-I -s fd00:{a:x}::{b % 60000 + 1:x} -d fd00:ffff::1 -p udp "
              f"--sport {b + 1024} --dport 53 --timeout 7200\n")
PY
echo "injecting $entries entries..."
ip netns exec "$ns" conntrack -R "$work/entries" 2>/dev/null
count="$(ip netns exec "$ns" conntrack -C)"
echo "table holds $count entries (hash buckets: $(cat /sys/module/nf_conntrack/parameters/hashsize))"

measure() { # label, command...: appends "seconds kib" to $work/<label>
  local label="$1"; shift
  ip netns exec "$ns" /usr/bin/time -f "%e %M" -o "$work/one" "$@" > /dev/null 2>"$work/stderr" \
    || { cat "$work/stderr"; exit 1; }
  cat "$work/one" >> "$work/$label"
}
lines_tollgate="$(ip netns exec "$ns" "$tollgate" conntrack dump | wc -l)"
lines_conntrack="$(ip netns exec "$ns" conntrack -L -z -o save 2>/dev/null | wc -l)"
echo "entries printed: tollgate $lines_tollgate, conntrack-tools $lines_conntrack"
for _ in $(seq "$runs"); do
  measure conntrack conntrack -L -z -o save
  measure tollgate "$tollgate" conntrack dump
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ct_s="$(cut -d' ' -f1 "$work/conntrack" | median)"; ct_kb="$(cut -d' ' -f2 "$work/conntrack" | median)"
tg_s="$(cut -d' ' -f1 "$work/tollgate" | median)"; tg_kb="$(cut -d' ' -f2 "$work/tollgate" | median)"
echo
echo "zeroing dump of $count entries, median of $runs runs each (wall s, peak RSS MiB):"
printf '  %-34s %6.2f s  %7.1f MiB\n' "conntrack -L -z -o save" "$ct_s" "$(echo "$ct_kb / 1024" | bc -l)"
printf '  %-34s %6.2f s  %7.1f MiB\n' "tollgate conntrack dump" "$tg_s" "$(echo "$tg_kb / 1024" | bc -l)"
printf '  ratio tollgate / conntrack-tools:  wall %.2fx\n' "$(echo "$tg_s / $ct_s" | bc -l)"
