#!/usr/bin/env bash
# Benchmark of the Parquet sink: rows/s on one core and bytes/row, against ClickHouse writing
# the same rows in the same order as Parquet. Starts its own ClickHouse.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true
exec target/release/bench_parquet
