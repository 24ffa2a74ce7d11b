#!/usr/bin/env bash
# Fuzzes the ctnetlink decoder for N seconds (default 60) with cargo-fuzz, starting from the
# kept corpus (collector/fuzz/corpus/decode). New inputs go to a scratch directory; pass
# KEEP_CORPUS=1 to add them to the kept corpus (minimize it before committing:
# `cargo fuzz cmin decode` in collector/).
set -euo pipefail
cd "$(dirname "$0")/../../collector"
seconds="${1:-60}"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..."
  cargo install --locked --quiet cargo-fuzz
fi
if [ "${KEEP_CORPUS:-0}" = 1 ]; then
  scratch=fuzz/corpus/decode
else
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
fi
# The stable toolchain runs cargo-fuzz without sanitizers (coverage guidance still works);
# RUSTC_BOOTSTRAP lets it pass the flags it needs.
log="$(mktemp)"
if ! RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none decode >"$log" 2>&1; then
  tail -n 30 "$log"
  echo "the fuzz target did not build (see above); nothing was fuzzed" >&2
  exit 1
fi
if RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none decode "$scratch" fuzz/corpus/decode \
  -- -max_total_time="$seconds" -max_len=65536 >"$log" 2>&1; then
  grep -E '^Done [0-9]+ runs' "$log"
  rm -f "$log"
else
  tail -n 60 "$log"
  echo "fuzzing found a failure; the crashing input is in collector/fuzz/artifacts/decode/" >&2
  exit 1
fi
