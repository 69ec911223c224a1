#!/usr/bin/env bash
# fuzz.sh [DURATION] - run every Fuzz target in the module for DURATION each.
set -euo pipefail
d=${1:-60s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for t in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "== $pkg $t ($d)"
    go test -run '^$' -fuzz "^$t\$" -fuzztime "$d" "$pkg"
  done
done
