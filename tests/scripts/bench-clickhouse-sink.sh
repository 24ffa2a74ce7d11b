#!/usr/bin/env bash
# Benchmark of the ClickHouse store: the sink's insert rate against ClickHouse's own HTTP
# INSERT ... FORMAT RowBinary of the same rows (curl), bytes per raw row on disk, and the
# rollups' reduction. Starts its own ClickHouse.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true
exec target/release/bench_clickhouse
