#!/usr/bin/env bash
# bench-multicast.sh - deploy one image to 1 and 3 machines (issue 5):
#   dimg send/receive  vs  udp-sender | udp-receiver (udpcast) sending the same
#   image, piped into `dimg restore --verify` (the same end result: a verified
#   target) and into a plain file (transport only),  vs  three unicast
#   `curl | dimg restore --verify` over TCP,
# with 0% and BENCH_MC_LOSS% random loss, in the netns lab (scripts/netns-lab.sh)
# with every link shaped to BENCH_MC_RATE, well below what the 2 cores can push,
# so the comparison measures the protocols rather than the CPU.
#
# Every receiver's exit status is checked and every target compared (cmp) with
# a reference `dimg restore` of the image (udpcast's sender can report success
# for a receiver it dropped). Times run from the sender's start until the last
# receiver has exited. The whole script runs under `unshare -n`: nothing it
# starts can reach a real network.
#
# Environment: BENCH_DIR (build/bench), BENCH_MC_DISK (a raw disk; default: the
# disk bench.sh generates, made here the same way if missing: BENCH_SIZE=6G
# with BENCH_BYTES=2G of files), BENCH_MC_RATE (200mbit), BENCH_MC_LOSS (0.5),
# BENCH_MC_PREFIX (mcb), NETNS_LAB (scripts/netns-lab.sh), BENCH_MC_QUICK=1
# (skip the transport-only and unicast rows).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-multicast: needs root (network namespaces)" >&2; exit 1; }
if [ -z "${BENCH_MC_INNER:-}" ]; then
  exec unshare -n env BENCH_MC_INNER=1 "$0" "$@"
fi
for t in ip nft tc udp-sender udp-receiver curl cmp python3 bc; do
  command -v "$t" >/dev/null || { echo "bench-multicast: $t not installed" >&2; exit 1; }
done

B=${BENCH_DIR:-build/bench}
M=$B/mc
RATE=${BENCH_MC_RATE:-200mbit}
LOSS=${BENCH_MC_LOSS:-0.5}
P=${BENCH_MC_PREFIX:-mcb}
LAB=${NETNS_LAB:-$PWD/scripts/netns-lab.sh}
DISK=${BENCH_MC_DISK:-$B/disk.img}
mkdir -p "$M"
M=$(cd "$M" && pwd)
RES=$M/results.tsv
: > "$RES"

echo "bench-multicast: building dimg" >&2
go build -o "$M/dimg" ./cmd/dimg
DIMG=$M/dimg
if [ ! -s "$DISK" ]; then
  echo "bench-multicast: generating a ${BENCH_SIZE:-6G} GPT disk with ${BENCH_BYTES:-2G} of files from /usr" >&2
  go run ./testimages/cmd/mkdisk -kind gpt -size "${BENCH_SIZE:-6G}" -from /usr -max-bytes "${BENCH_BYTES:-2G}" -out "$B/sparse.img"
  cp --sparse=never "$B/sparse.img" "$DISK"
  rm -f "$B/sparse.img"
fi
IMG=$M/image.dimg
if [ ! -s "$IMG" ] || [ "$DISK" -nt "$IMG" ]; then
  echo "bench-multicast: capturing $DISK" >&2
  "$DIMG" capture -q --force "$DISK" "$IMG"
fi
REF=$M/ref.img
if [ ! -s "$REF" ] || [ "$IMG" -nt "$REF" ]; then
  "$DIMG" restore -q --force "$IMG" "$REF"
fi
ISIZE=$(stat -c %s "$IMG")
echo "bench-multicast: disk $(($(stat -c %s "$DISK") >> 20)) MiB, image $((ISIZE >> 20)) MiB, links $RATE" >&2

labdown() { "$LAB" down --prefix "$P" >/dev/null 2>&1 || true; }
trap labdown EXIT
labup() { # loss
  local args=(up 3 --rate "$RATE" --prefix "$P")
  [ "$1" = 0 ] || args+=(--loss "$1")
  "$LAB" "${args[@]}" > "$M/lab.env" 2>/dev/null
  # shellcheck disable=SC1091
  . "$M/lab.env"
}
now() { date +%s.%N; }
cleanup_targets() { rm -f "$M"/t[0-9]* "$M"/*.part-* "$M"/.t[0-9]*; }

# record NAME LOSS N SECONDS OK
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RES"
  printf '  %-40s loss %-4s rx %s  %7.1fs  %6.1f MiB/s  %s\n' "$1" "$2%" "$3" "$4" \
    "$(echo "$ISIZE / 1048576 / $4" | bc -l)" "$5" >&2
}

# check N KIND: exit codes in $M/rc*, targets against the reference
check() {
  local n=$1 kind=$2 k ok=ok ref=$REF
  [ "$kind" = file ] && ref=$IMG
  for k in $(seq 1 "$n"); do
    if [ "$(cat "$M/rc$k" 2>/dev/null)" != 0 ]; then ok="FAIL(rx$k exit $(cat "$M/rc$k" 2>/dev/null))"; continue; fi
    cmp -s "$ref" "$M/t$k" || ok="FAIL(rx$k differs)"
  done
  echo "$ok"
}

# rx K CMD...: run CMD in receiver K's namespace in the background, exit code to rc$K
rx() {
  local k=$1; shift
  rm -f "$M/rc$k"
  ip netns exec "${P}rx$k" bash -o pipefail -c "$*; echo \$? > $M/rc$k" &
}

run_dimg() { # name loss n [send flags]
  local name=$1 loss=$2 n=$3; shift 3
  cleanup_targets
  for k in $(seq 1 "$n"); do
    rx "$k" "$DIMG receive -q --interface $LAB_IF --force --json $M/t$k > $M/rx$k.json"
  done
  sleep 0.5
  local s e
  s=$(now)
  ip netns exec "${P}tx" "$DIMG" send -q --interface "$LAB_IF" --min-receivers "$n" --max-wait 60s --json "$@" "$IMG" > "$M/tx.json" || true
  wait
  e=$(now)
  record "$name" "$loss" "$n" "$(echo "$e - $s" | bc)" "$(check "$n" disk)"
}

run_udpcast() { # name loss n restore|file
  local name=$1 loss=$2 n=$3 mode=$4
  cleanup_targets
  for k in $(seq 1 "$n"); do
    if [ "$mode" = restore ]; then
      rx "$k" "udp-receiver --interface $LAB_IF --rcvbuf 4194304 --nokbd --portbase 9000 2>$M/urx$k.log | $DIMG restore -q --force --verify - $M/t$k"
    else
      rx "$k" "udp-receiver --interface $LAB_IF --rcvbuf 4194304 --nokbd --portbase 9000 --file $M/t$k 2>$M/urx$k.log"
    fi
  done
  sleep 0.5
  local s e
  s=$(now)
  ip netns exec "${P}tx" udp-sender --interface "$LAB_IF" --nokbd --portbase 9000 --min-receivers "$n" \
    --file "$IMG" > "$M/utx.log" 2>&1 || true
  wait
  e=$(now)
  local kind=disk
  [ "$mode" = file ] && kind=file
  record "$name" "$loss" "$n" "$(echo "$e - $s" | bc)" "$(check "$n" "$kind")"
}

run_unicast() { # name loss n
  local name=$1 loss=$2 n=$3
  cleanup_targets
  ip netns exec "${P}tx" python3 -m http.server --bind "$LAB_TX_ADDR" --directory "$M" 8080 > "$M/http.log" 2>&1 &
  local srv=$!
  sleep 1
  local s e
  s=$(now)
  for k in $(seq 1 "$n"); do
    rx "$k" "curl -sSf http://$LAB_TX_ADDR:8080/image.dimg | $DIMG restore -q --force --verify - $M/t$k"
  done
  for k in $(seq 1 "$n"); do
    while [ ! -e "$M/rc$k" ]; do sleep 0.2; done
  done
  e=$(now)
  kill "$srv" 2>/dev/null || true
  wait 2>/dev/null || true
  record "$name" "$loss" "$n" "$(echo "$e - $s" | bc)" "$(check "$n" disk)"
}

for loss in 0 "$LOSS"; do
  echo "== links $RATE, loss $loss%" >&2
  labup "$loss"
  run_dimg "dimg send/receive" "$loss" 1
  run_dimg "dimg send/receive" "$loss" 3
  if [ "$loss" != 0 ]; then
    run_dimg "dimg send/receive --fec 2/64" "$loss" 3 --fec 2/64
  fi
  run_udpcast "udpcast | dimg restore --verify" "$loss" 1 restore
  run_udpcast "udpcast | dimg restore --verify" "$loss" 3 restore
  if [ -z "${BENCH_MC_QUICK:-}" ]; then
    run_udpcast "udpcast, image file only" "$loss" 3 file
    [ "$loss" = 0 ] && run_unicast "3x unicast curl | dimg restore --verify" "$loss" 3
  fi
  labdown
done
cleanup_targets

# Table and the issue's targets.
python3 - "$RES" "$ISIZE" "$LOSS" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
size, loss = int(sys.argv[2]), sys.argv[3]
t = {(r[0], r[1], r[2]): float(r[3]) for r in rows}
print(f"\nmulticast deploy of a {size/2**20:.0f} MiB image (time from sender start to last receiver exit)")
print(f"{'scenario':42} {'loss':>5} {'rx':>3} {'time s':>8} {'MiB/s':>7}  result")
for r in rows:
    print(f"{r[0]:42} {r[1]+'%':>5} {r[2]:>3} {float(r[3]):8.1f} {size/2**20/float(r[3]):7.1f}  {r[4]}")
def g(name, l, n):
    return t.get((name, l, str(n)))
D, U, UC = "dimg send/receive", "udpcast | dimg restore --verify", "3x unicast curl | dimg restore --verify"
print("\ntargets (issue 5):")
def line(label, v, target, ok):
    if v is None:
        print(f"  {label:58} n/a")
    else:
        print(f"  {label:58} {v:5.2f}  (target {target}) {'ok' if ok(v) else 'MISSED'}")
for l, tgt in (("0", 1.0), (loss, 1.2)):
    for n in (1, 3):
        a, b = g(D, l, n), g(U, l, n)
        line(f"dimg/udpcast throughput, {l}% loss, {n} rx", b / a if a and b else None, f">= {tgt}", lambda v, tgt=tgt: v >= tgt)
for l in ("0", loss):
    a, b = g(D, l, 3), g(D, l, 1)
    line(f"dimg time 3 rx / 1 rx, {l}% loss", a / b if a and b else None, "<= 1.15", lambda v: v <= 1.15)
a, b = g(D, "0", 3), g(UC, "0", 3)
line("dimg 3 rx multicast / three unicasts, time", a / b if a and b else None, "<= 0.5", lambda v: v <= 0.5)
EOF
