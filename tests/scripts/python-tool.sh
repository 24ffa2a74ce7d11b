#!/usr/bin/env bash
# Prints the python interpreter of a virtualenv holding third-party readers the suites use to
# check tollgate's files (pyarrow, duckdb), installing it once. Cached outside the repo, keyed
# by the pinned versions, under ${TOLLGATE_CACHE:-/var/cache/tollgate}.
set -euo pipefail
packages=(pyarrow==26.0.1 duckdb==2.0.0)
venv="${TOLLGATE_CACHE:-/var/cache/tollgate}/readers-$(printf '%s-' "${packages[@]}" | tr -c 'A-Za-z0-9.-' '_')"
python="$venv/bin/python"
if ! "$python" -c 'import pyarrow, duckdb' 2>/dev/null; then
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if ! "$python" -c 'import pyarrow, duckdb' 2>/dev/null; then
    echo "installing ${packages[*]} into $venv ..." >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}" >&2
  fi
fi
echo "$python"
