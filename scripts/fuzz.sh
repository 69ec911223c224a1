#!/usr/bin/env bash
# fuzz.sh [DURATION] - run every Fuzz target in the module for DURATION each.
set -euo pipefail
d=${1:-60s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for t in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "== $pkg $t ($d)"
    # Minimizing a new input may take go test's default 60s: with a
    # target that reads a whole image per run (FuzzReaderV2), one
    # minimization ate the whole budget (26 runs in 60s); bound it.
    go test -run '^$' -fuzz "^$t\$" -fuzztime "$d" -fuzzminimizetime "${FUZZMINTIME:-5s}" "$pkg"
  done
done
