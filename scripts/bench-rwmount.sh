#!/usr/bin/env bash
# bench-rwmount.sh - issue 9: writing through `dimg mount --rw`.
# The kernel's ext4 on a loop device over DIR/p2.img of a read-write mount
# vs the same ext4 on a loop device over the partition of a raw disk file:
#  (a) random 4 KiB writes into a 1 GiB file for 30 s (fio, libaio, queue
#      depth 16, O_DIRECT so every write reaches the loop device; the final
#      fsync is counted): IOPS, target >= 0.3x;
#  (b) a sequential 1 GiB write (1 MiB writes through the page cache, then
#      fsync): MiB/s, target >= 0.5x;
#  (c) the commit at unmount of what (a) and (b) changed: seconds and image
#      growth.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-rwmount: needs root" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-rwmount: needs fio (scripts/deps.sh bench installs it)" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}/rw
DIMG=$PWD/bin/dimg
RUNTIME=${RUNTIME:-30}
mkdir -p "$B"

MNTS=() LOOPS=()
cleanup() {
  for m in "${MNTS[@]-}"; do
    [ -n "$m" ] || continue
    for _ in $(seq 50); do mountpoint -q "$m" || break; umount "$m" 2>/dev/null || sleep 0.1; done
  done
  for l in "${LOOPS[@]-}"; do [ -n "$l" ] && losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

# A 3 GiB GPT disk: a 64 MiB ESP and a fresh ext4 in partition 2.
DISK=$B/disk.raw IMG=$B/disk.dimg
for _ in $(seq 600); do [ -e "$IMG.lock" ] || break; sleep 0.1; done # an earlier run's mount still committing
[ ! -e "$IMG.lock" ] || { echo "bench-rwmount: $IMG is still being written ($(cat "$IMG.lock")); unmount it first" >&2; exit 1; }
rm -f "$DISK" "$IMG" "$IMG".*
truncate -s 3G "$DISK"
sgdisk -n 1:2048:+64M -t 1:ef00 -n 2:0:0 -t 2:8300 "$DISK" >/dev/null
read -r START SIZE < <(sfdisk -J "$DISK" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]; ss=t.get("sectorsize",512); p=t["partitions"][1]
print(p["start"]*ss, p["size"]*ss)')
L=$(losetup -f --show -o "$START" --sizelimit "$SIZE" "$DISK")
mkfs.ext4 -q -L bench "$L"
losetup -d "$L"
"$DIMG" capture -q "$DISK" "$IMG"
IMGSIZE0=$(stat -c %s "$IMG")

# Raw: partition 2 of the raw disk file, through a loop device.
KR=$B/kraw; mkdir -p "$KR"
L=$(losetup -f --show -o "$START" --sizelimit "$SIZE" "$DISK"); LOOPS+=("$L")
mount "$L" "$KR"; MNTS+=("$KR")
# dimg: DIR/p2.img of a read-write mount, through mount -o loop.
M=$B/mnt KD=$B/kdimg; mkdir -p "$M" "$KD"
"$DIMG" mount -q --rw --raw -m bench --background --log "$B/mount.log" "$IMG" "$M"; MNTS+=("$M")
mount -o loop "$M/p2.img" "$KD"; MNTS=("$KD" "${MNTS[@]}")

randw() { # randw DIR: IOPS of random 4 KiB direct writes
  fio --name=randw --directory="$1" --rw=randwrite --bs=4k --size=1G --runtime="$RUNTIME" --time_based \
      --ioengine=libaio --iodepth=16 --direct=1 --end_fsync=1 --output-format=terse 2>/dev/null | awk -F';' '{print $49}'
}
seqw() { # seqw DIR: MiB/s of a sequential 1 GiB write and its fsync
  fio --name=seqw --directory="$1" --rw=write --bs=1M --size=1G --ioengine=psync --end_fsync=1 \
      --output-format=terse 2>/dev/null | awk -F';' '{printf "%.0f", $48/1024}'
}
RR=$(randw "$KR"); RD=$(randw "$KD")
SR=$(seqw "$KR"); SD=$(seqw "$KD")

echo "| measure | dimg mount --rw | raw file | ratio | target |"
echo "|---|---|---|---|---|"
echo "| random 4 KiB writes, ${RUNTIME} s, QD16, O_DIRECT (IOPS) | $RD | $RR | $(echo "scale=2; $RD/$RR" | bc) | >= 0.3 |"
echo "| sequential 1 GiB write + fsync (MiB/s) | $SD | $SR | $(echo "scale=2; $SD/$SR" | bc) | >= 0.5 |"

# (c) the commit of it all at unmount.
umount "$KD"; MNTS=("${MNTS[@]:1}")
DIRTY=$(du -B1 --apparent-size "$IMG.scratch" | cut -f1)
T0=$(date +%s.%N)
# The loop device under $KD lets go of p2.img a moment after its umount.
for _ in $(seq 100); do umount "$M" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 3000); do [ -e "$IMG.lock" ] || break; sleep 0.1; done # the mount removes it after its commit
T1=$(date +%s.%N)
echo "| commit at unmount: $(awk -v n="$DIRTY" 'BEGIN{printf "%.0f MiB", n/1048576}') of scratch file | $(echo "$T1 - $T0" | bc | xargs printf '%.1f') s, image +$(( ($(stat -c %s "$IMG") - IMGSIZE0) >> 20 )) MiB | | | |"
"$DIMG" verify -q "$IMG"
