#!/usr/bin/env bash
# Benchmark of the cost view: `cost_daily` (tiers, accounts, NAT gateways) against the reference
# of the same run, migration 0007's flat-priced view created beside it, on a year of daily
# rollup rows (ROWS of them, 2,000 workloads, five categories): one month's cost per team (what
# the dashboards ask) and the whole year's total, alternating the two views three times. Half the
# rows name their provider and half do not (an upgrade's mix, the most keys per day).
# Usage: bench-cost-view.sh [ROWS]   (default 3650000: 7.3 million metering rows)
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-3650000}
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked -p tollgate 2>&1 | grep -E '^(error|warning)' || true
dir=$(mktemp -d)
trap 'bash tests/scripts/clickhouse.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
url=$(bash tests/scripts/clickhouse.sh start "$dir" | tail -1)
q() { curl -sS --fail-with-body "$url" --data-binary "$1"; }
target/debug/tollgate migrate --clickhouse "$url" --database bench >/dev/null
q "INSERT INTO bench.clusters (cluster, provider) VALUES ('c1', 'aws')"
q "INSERT INTO bench.flows_1d (period, cluster, local_team, local_namespace, local_workload_kind,
    local_workload, local_region, category, remote_region, initiator, local_provider, bytes_sent,
    bytes_received)
  SELECT toDateTime('2025-12-01 00:00:00', 'UTC') + toIntervalDay(number % 365), 'c1',
    concat('team', toString(number % 50)), concat('ns', toString(number % 200)), 'Deployment',
    concat('w', toString(intDiv(number, 365) % 2000)), 'us-east-1',
    ['same_zone', 'cross_zone', 'cross_region', 'internet', 'cloud_service'][1 + intDiv(number, intDiv($rows, 5)) % 5],
    if(number % 7 = 0, 'us-east-2', ''), if(number % 3 = 0, 'remote', 'local'),
    if(number % 2 = 0, 'aws', ''),
    cityHash64(number) % 1000000000, cityHash64(number, 1) % 1000000000
  FROM numbers($rows)"
# The reference: 0007's cost view, flat prices only, under another name.
sed -n '/^CREATE OR REPLACE VIEW \$db.cost_daily/,/^-- Bytes that have no price/p' sql/migrations/0007_dated_prices.sql \
  | grep -v '^-- Bytes that have no price' \
  | sed 's/\$db\.cost_daily\$on_cluster/bench.cost_daily_0007/; s/\$db\./bench./g' > "$dir/reference.sql"
curl -sS --fail-with-body "$url" --data-binary @"$dir/reference.sql"
echo "metering rows: $(q 'SELECT count() FROM bench.metering_daily')"
time_of() { curl -sS --fail-with-body -o /dev/null -w '%{time_total}' "$url" --data-binary "$1"; }
for round in 1 2 3; do
  for view in cost_daily_0007 cost_daily; do
    month=$(time_of "SELECT team, sum(cost) FROM bench.$view WHERE day >= '2026-10-01' AND day < '2026-11-01' GROUP BY team FORMAT Null")
    year=$(time_of "SELECT sum(cost) FROM bench.$view FORMAT Null")
    echo "round $round $view: month per team ${month} s, whole year ${year} s"
  done
done
