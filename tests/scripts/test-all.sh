#!/usr/bin/env bash
# Runs every check and test suite of tollgate. Needs root for the kernel suites (network
# namespaces, conntrack); without root they are skipped loudly, and under CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

# Everything the suites write to the temp dir (ClickHouse data, spools, records) goes to one
# directory of this run, removed at the end; a test killed mid-way leaves nothing behind.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-test-all.XXXXXX")"
cleanup() {
  grep -F " $scratch/" /proc/mounts | cut -d' ' -f2 | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
export TMPDIR="$scratch"
# Incremental artefacts only help rebuilds; a one-shot run would carry gigabytes of them.
export CARGO_INCREMENTAL=0

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs (broken or private intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "build"
cargo build --workspace --bins --locked
# The image the real-cluster suite deploys packs the release binary.
cargo build --release -p tollgate --bin tollgate --locked

step "Kubernetes for the real-cluster suite (built once from Debian's source package, then cached)"
bash tests/scripts/kubernetes.sh install

step "test (unit, CLI, kernel, ClickHouse, sink, Parquet, inventory, agent, real Kubernetes)"
results="$(mktemp)"
cargo test --workspace --locked 2>&1 | tee "$results"

step "fuzz the netlink decoder (short run)"
bash tests/scripts/fuzz.sh 30

step "all checks passed"
# One closing line with the totals of every suite (cargo's own last lines are doc-test runs).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' \
  "$results"
rm -f "$results"
