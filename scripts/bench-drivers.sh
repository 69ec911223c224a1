#!/usr/bin/env bash
# bench-drivers.sh - read throughput of the filesystem drivers, each beside
# a raw read of its own test image where the benchmark has one. These are
# the Go benchmarks in fsdrivers/* (they build their images with mke2fs,
# mkfs.vfat + mcopy, mkntfs); they live here, not in `make test`.
# BENCH_TIME sets go test's -benchtime (default 5x). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test -run '^$' -bench . -benchtime "${BENCH_TIME:-5x}" ./fsdrivers/ext4 ./fsdrivers/fat ./fsdrivers/ntfs)
echo "$out" >&2
echo "$out" | awk '
  /^pkg: / { pkg = $2; sub(/.*\/fsdrivers\//, "", pkg) }
  /^Benchmark/ && / MB\/s/ {
    name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
    for (i = 1; i <= NF; i++) if ($i == "MB/s") mbs = $(i - 1)
    n++; P[n] = pkg; N[n] = name; M[n] = mbs
    if (name ~ /\/raw-/) raw[pkg] = mbs
  }
  END {
    print "| driver | benchmark | MB/s | vs raw read of the image |"
    print "|---|---|---|---|"
    for (i = 1; i <= n; i++) {
      r = (P[i] in raw) ? sprintf("%.2f", M[i] / raw[P[i]]) : "-"
      printf "| %s | %s | %.0f | %s |\n", P[i], N[i], M[i], r
    }
  }'
