#!/usr/bin/env bash
# tollgate's demo on real components: a simulated three-node cluster in network namespaces,
# one tollgate agent per node, a real ClickHouse, the metering views, and nftables counting
# the same packets independently. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "building tollgate (release)..."
cargo build --release --locked --quiet -p tollgate -p tollgate-tests --bins
exec target/release/demo
