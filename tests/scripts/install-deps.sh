#!/usr/bin/env bash
# Installs what tollgate's demo and test suites need on a fresh Debian machine (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(conntrack nftables iproute2 iputils-ping python3 python3-venv util-linux procps curl openssl stunnel4 socat prometheus time)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js and npm check the Grafana dashboards against @grafana/schema (tests/scripts/
# grafana-schema.sh); the machine's own are used when present.
if ! command -v npm >/dev/null; then
  echo "installing: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# The Rust toolchain comes from rustup (Debian's rustc is too old for the dependencies).
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install a Rust toolchain >= 1.89 with rustup" >&2
  exit 1
fi
