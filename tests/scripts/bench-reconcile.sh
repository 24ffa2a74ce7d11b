#!/usr/bin/env bash
# Benchmark of `tollgate reconcile` on bills of 100,000 and 1,000,000 line items: peak memory
# (flat in the bill's size) and time, against `gzip -dc` of the same file in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true
TOLLGATE_BIN="$PWD/target/release/tollgate" exec target/release/bench_reconcile
