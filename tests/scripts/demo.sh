#!/usr/bin/env bash
# tollgate's demo on real components: kernel conntrack in network namespaces, real traffic,
# tollgate reading it, nftables counting the same packets independently. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "building tollgate (release)..."
cargo build --release --locked -p tollgate -p tollgate-tests --bins 2>&1 | grep -E '^(error|warning)' || true
exec target/release/demo
