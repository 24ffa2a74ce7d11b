#!/usr/bin/env bash
# Validates Grafana dashboard JSON files against a strict JSON Schema generated from
# @grafana/schema's dashboard model (the `Dashboard` type Grafana imports): unknown fields and
# wrong types are errors. The npm packages and the generated schema are cached outside the repo,
# keyed by the pinned versions, under ${TOLLGATE_CACHE:-/var/cache/tollgate}.
#   grafana-schema.sh FILE.json...
set -euo pipefail
packages=(@grafana/schema@13.2.3 ts-json-schema-generator@2.9.0 ajv@8.20.0 ajv-formats@3.0.1 typescript@5.9.3)
dir="${TOLLGATE_CACHE:-/var/cache/tollgate}/grafana-schema-$(printf '%s-' "${packages[@]}" | tr -c 'A-Za-z0-9.-' '_')"
schema="$dir/dashboard.schema.json"
if [ ! -s "$schema" ]; then
  mkdir -p "$(dirname "$dir")"
  exec 9>"$dir.lock"
  flock 9
  if [ ! -s "$schema" ]; then
    echo "installing ${packages[*]} into $dir ..." >&2
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm init -y >/dev/null 2>&1 &&
      npm install --silent --no-audit --no-fund "${packages[@]}" >&2)
    (cd "$dir" && npx --no-install ts-json-schema-generator \
      --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
      --type Dashboard --no-type-check -o dashboard.schema.json.partial >&2)
    mv "$dir/dashboard.schema.json.partial" "$schema"
  fi
fi
NODE_PATH="$dir/node_modules" node -e '
const Ajv = require("ajv");
const addFormats = require("ajv-formats");
const fs = require("fs");
const ajv = new Ajv({ allErrors: true, strict: false });
addFormats(ajv);
const validate = ajv.compile(JSON.parse(fs.readFileSync(process.argv[1], "utf8")));
let failed = 0;
for (const file of process.argv.slice(2)) {
  if (validate(JSON.parse(fs.readFileSync(file, "utf8")))) {
    console.log(`${file}: valid`);
  } else {
    failed++;
    for (const e of validate.errors) console.log(`${file}: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
}
process.exit(failed ? 1 : 0);
' "$schema" "$@"
