#!/usr/bin/env bash
# Fleet benchmark of the sharded store: AGENTS simulated agents (each with its own origin,
# spool and sink) sending RECORDS records every INTERVAL seconds for SECONDS into a real
# 3-shard ClickHouse cluster, against ClickHouse's own RowBinary insert of the same rows.
#
#   bench-fleet.sh [AGENTS=500] [RECORDS=10000] [INTERVAL=10] [SECONDS=180]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true
exec target/release/bench_fleet "${1:-500}" "${2:-10000}" "${3:-10}" "${4:-180}"
