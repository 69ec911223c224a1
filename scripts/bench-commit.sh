#!/usr/bin/env bash
# bench-commit.sh - issue 9: the cost of committing a 1 MiB change.
# Two images of sparse disks, made by imagefmt's scale generator
# (TestWriteScaleImages: 256 KiB chunks, every other one stored on a 4 GiB
# disk, every 28th on a 2 TiB disk: 8,192 and 299,594 stored chunks). Each
# run writes 1 MiB of random data at a random MiB of the disk through
# `dimg mount --rw` (dd conv=fsync into DIR/disk.img), then unmounts: the
# commit is the time from umount's return to dimg's exit, the growth what
# it added to the image. Target: the 2 TiB disk's commit takes <= 1.5x the
# 4 GiB disk's, and the file grows by about the changed chunks either way.
# Side by side, qemu's way for the same change: qemu-img create -b
# base.qcow2 -F qcow2 overlay.qcow2, qemu-io writes the same 1 MiB into the
# overlay, qemu-img commit overlay.qcow2 (bases of the same virtual sizes,
# empty: qcow2 commits cost what changed, whatever the base holds).
# RUNS (default 9) runs per disk, alternating disks and tools so that the
# machine's load falls on all alike; medians, and the minimum in brackets.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-commit: needs root (FUSE)" >&2; exit 1; }
for c in qemu-img qemu-io; do
  command -v $c >/dev/null || { echo "bench-commit: needs $c (scripts/deps.sh bench installs qemu-utils)" >&2; exit 1; }
done
B=$(realpath -m "${BENCH_DIR:-build/bench}/commit")
DIMG=$PWD/bin/dimg
RUNS=${RUNS:-9}
mkdir -p "$B"
M=$B/mnt
mkdir -p "$M"
PID=
cleanup() {
  mountpoint -q "$M" && umount "$M" 2>/dev/null || true
  [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT

rm -f "$B"/*.dimg "$B"/*.dimg.* "$B"/*.qcow2
DIMG_SCALE_IMAGES=$B go test -count=1 -run '^TestWriteScaleImages$' ./imagefmt >/dev/null
head -c 1M /dev/urandom >"$B/change"
declare -A SIZE=([4GiB]=$((4 << 30)) [2TiB]=$((2 << 40)))
declare -A STORED=([4GiB]=8,192 [2TiB]=299,594)
declare -A LABEL=([4GiB]="4 GiB" [2TiB]="2 TiB")
for d in 4GiB 2TiB; do
  qemu-img create -q -f qcow2 "$B/$d.base.qcow2" "${SIZE[$d]}"
  echo "$(stat -c %s "$B/$d.dimg")" >"$B/$d.size0"
done

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); } # ms T0 T1

# dimg_run DISK MIB: one mount --rw, write, unmount and commit; appends
# "write_ms umount_ms commit_ms scratch_bytes growth_bytes" to $B/DISK.dimg.runs.
dimg_run() {
  local d=$1 mib=$2 img=$B/$1.dimg t0 t1 t2 t3 s0 scratch
  "$DIMG" mount -q --rw --raw -m "bench: 1 MiB at MiB $mib" "$img" "$M" &
  PID=$!
  for _ in $(seq 1500); do [ -e "$M/disk.img" ] && break; sleep 0.02; done
  [ -e "$M/disk.img" ] || { echo "bench-commit: dimg mount --rw $img did not come up" >&2; exit 1; }
  s0=$(stat -c %s "$img")
  t0=$(now)
  dd if="$B/change" of="$M/disk.img" bs=1M seek="$mib" conv=notrunc,fsync status=none
  t1=$(now)
  scratch=$(du -B1 "$img.scratch" | cut -f1)
  umount "$M"
  t2=$(now)
  wait "$PID"
  t3=$(now)
  PID=
  echo "$(ms $t0 $t1) $(ms $t1 $t2) $(ms $t2 $t3) $scratch $(($(stat -c %s "$img") - s0))" >>"$img.runs"
}

# qemu_run DISK MIB: the same change through a qcow2 overlay; appends
# "create_ms write_ms commit_ms overlay_bytes growth_bytes".
qemu_run() {
  local d=$1 mib=$2 base=$B/$1.base.qcow2 ov=$B/$1.overlay.qcow2 t0 t1 t2 t3 s0 ovs
  rm -f "$ov"
  s0=$(stat -c %s "$base")
  t0=$(now)
  qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$ov"
  t1=$(now)
  qemu-io -f qcow2 "$ov" -c "write -q -s $B/change $((mib << 20)) 1M"
  t2=$(now)
  ovs=$(stat -c %s "$ov")
  qemu-img commit -q "$ov"
  t3=$(now)
  echo "$(ms $t0 $t1) $(ms $t1 $t2) $(ms $t2 $t3) $ovs $(($(stat -c %s "$base") - s0))" >>"$base.runs"
}

declare -A LAST
for _ in $(seq "$RUNS"); do
  for d in 4GiB 2TiB; do
    mib=$(shuf -i 0-$((SIZE[$d] / (1 << 20) - 1)) -n 1)
    dimg_run "$d" "$mib"
    qemu_run "$d" "$mib"
    LAST[$d]=$mib
  done
done
# The changes are there: the last one reads back through a read-only
# mount (verify of the 2 TiB disk would decompress 73 GiB of chunks) and
# the 4 GiB disk's image verifies.
for d in 4GiB 2TiB; do
  "$DIMG" mount -q "$B/$d.dimg" "$M" &
  PID=$!
  for _ in $(seq 1500); do [ -e "$M/disk.img" ] && break; sleep 0.02; done
  cmp -s -n 1048576 --ignore-initial=0:$((LAST[$d] << 20)) "$B/change" "$M/disk.img" ||
    { echo "bench-commit: the last 1 MiB written to the $d disk does not read back" >&2; exit 1; }
  umount "$M"
  wait "$PID"
  PID=
done
"$DIMG" verify -q "$B/4GiB.dimg"

# med/mn FILE N: the median and the minimum of column N.
med() { cut -d' ' -f"$2" "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mn() { cut -d' ' -f"$2" "$1" | sort -n | head -1; }
sec() { awk -v m="$1" 'BEGIN {printf "%.3f", m/1000}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b/1048576}'; }

echo
echo "Committing 1 MiB of random data at a random offset, $RUNS runs per disk: medians (minimum in brackets)."
echo
echo "| tool | disk | file before | write 1 MiB s | changes held in | unmount s | commit s | file growth per commit |"
echo "|---|---|---|---|---|---|---|---|"
for d in 4GiB 2TiB; do
  r=$B/$d.dimg.runs
  echo "| dimg mount --rw | ${LABEL[$d]} | $(mib "$(cat "$B/$d.size0")") (${STORED[$d]} chunks stored) | $(sec "$(med "$r" 1)") | scratch $(mib "$(med "$r" 4)") | $(sec "$(med "$r" 2)") | $(sec "$(med "$r" 3)") ($(sec "$(mn "$r" 3)")) | $(mib "$(med "$r" 5)") |"
done
for d in 4GiB 2TiB; do
  r=$B/$d.base.qcow2.runs
  echo "| qemu-img create -b + qemu-io + qemu-img commit | ${LABEL[$d]} | empty qcow2 | $(sec "$(med "$r" 2)") | overlay $(mib "$(med "$r" 4)") | (create $(sec "$(med "$r" 1)")) | $(sec "$(med "$r" 3)") ($(sec "$(mn "$r" 3)")) | $(mib "$(med "$r" 5)") |"
done
echo
small=$(med "$B/4GiB.dimg.runs" 3) big=$(med "$B/2TiB.dimg.runs" 3)
smin=$(mn "$B/4GiB.dimg.runs" 3) bmin=$(mn "$B/2TiB.dimg.runs" 3)
gs=$(med "$B/4GiB.dimg.runs" 5) gb=$(med "$B/2TiB.dimg.runs" 5)
awk -v s="$small" -v b="$big" -v smin="$smin" -v bmin="$bmin" -v gs="$gs" -v gb="$gb" 'BEGIN {
  r = (s > 0 ? b / s : 0); rm = (smin > 0 ? bmin / smin : 0)
  printf "dimg commit, 2 TiB disk / 4 GiB disk: %.2f by medians (target <= 1.5), %.2f by minimums; file growth %.2f\n", r, rm, gb / gs
}'
