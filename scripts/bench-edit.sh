#!/usr/bin/env bash
# bench-edit.sh - issue 10: changing files in an image with dimg's own
# filesystem writers, against the kernel's ext4 on a loop device:
#  (a) dimg add of a 100 MB tree (4,000 small files, 6 large ones) into
#      partition 2 (ext4) of a 3 GiB image vs cp -a into a loop mount of the
#      raw disk + sync: time (target <= 1.5x) and image growth vs the lz4
#      size of the tree (target <= 1.1x);
#  (b) a sequential 1 GiB write + fsync through DIR/p2/ of dimg mount --rw
#      vs the loop mount (target >= 0.5x);
#  (c) untar of a 20,000-file tree into DIR/p2/ vs the loop mount, + sync
#      (target <= 3x);
#  (d) virt-copy-in (libguestfs) of the same tree, where it can run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-edit: needs root" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}/edit
DIMG=$PWD/bin/dimg
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
now() { date +%s.%N; }
ratio() { echo "scale=2; $1/$2" | bc; }
sec() { printf '%.2f' "$1"; }

# The trees: 100 MB of small and large files (half random, half text-like
# zeros and repeats, so compression has something to do), and a tar of
# 20,000 small files.
TREE=$B/tree TAR=$B/small.tar
if [ ! -e "$TREE/.done" ]; then
  rm -rf "$TREE"; mkdir -p "$TREE"
  python3 - "$TREE" <<'EOF'
import os, random, sys
root = sys.argv[1]; r = random.Random(10)
def blob(n):
    half = n // 2
    return r.randbytes(half) + (b"dimg bench line\n" * (n // 16 + 1))[: n - half]
for i in range(4000):
    d = os.path.join(root, "small", "d%02d" % (i % 40)); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%04d" % i), "wb").write(blob(r.randint(512, 16384)))
os.makedirs(os.path.join(root, "large"), exist_ok=True)
for i in range(6):
    open(os.path.join(root, "large", "big%d.bin" % i), "wb").write(blob(11 << 20))
EOF
  touch "$TREE/.done"
fi
if [ ! -e "$TAR" ]; then
  S=$B/small20k; rm -rf "$S"; mkdir -p "$S"
  python3 - "$S" <<'EOF'
import os, random, sys
root = sys.argv[1]; r = random.Random(11)
for i in range(20000):
    d = os.path.join(root, "d%03d" % (i % 200)); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%05d" % i), "wb").write(r.randbytes(r.randint(100, 4000)))
EOF
  tar -C "$B" -cf "$TAR" small20k; rm -rf "$S"
fi
[ -e "$B/rand1g" ] || head -c 1G /dev/urandom > "$B/rand1g"
TREEBYTES=$(du -sb --exclude=.done "$TREE" | cut -f1)
TREELZ4=$(tar -C "$B" -cf - tree | lz4 -q -c | wc -c)

# A 3 GiB GPT disk: a 64 MiB ESP and ext4 in partition 2.
DISK=$B/disk.raw IMG=$B/disk.dimg
for _ in $(seq 600); do [ -e "$IMG.lock" ] || break; sleep 0.1; done
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

# The kernel's side: partition 2 of the raw disk file on a loop device.
KR=$B/kraw; mkdir -p "$KR"
L=$(losetup -f --show -o "$START" --sizelimit "$SIZE" "$DISK"); LOOPS+=("$L")
mount "$L" "$KR"; MNTS+=("$KR")

# (a) dimg add vs cp -a + sync.
sync; echo 3 > /proc/sys/vm/drop_caches
S0=$(stat -c %s "$IMG")
T0=$(now); "$DIMG" add -q "$IMG" "$TREE" 2:/bench/; T1=$(now)
ADD=$(echo "$T1 - $T0" | bc)
GROW=$(( $(stat -c %s "$IMG") - S0 ))
sync; echo 3 > /proc/sys/vm/drop_caches
T0=$(now); cp -a "$TREE" "$KR/"; sync; T1=$(now)
CP=$(echo "$T1 - $T0" | bc)

# (b), (c) through a read-write mount's p2/.
M=$B/mnt; mkdir -p "$M"
"$DIMG" mount -q --rw -m bench --background --log "$B/mount.log" "$IMG" "$M"; MNTS=("$M" "${MNTS[@]}")
[ -d "$M/p2" ] || { echo "bench-edit: no writable $M/p2 (see $B/mount.log)" >&2; exit 1; }
seqw() { local t0 t1; t0=$(now); dd if="$B/rand1g" of="$1/seq.bin" bs=1M conv=fsync status=none; t1=$(now); echo "scale=1; 1024/($t1 - $t0)" | bc; }
SD=$(seqw "$M/p2"); SR=$(seqw "$KR")
untar() { local t0 t1; t0=$(now); tar -C "$1" -xf "$TAR"; sync -f "$1/small20k"; t1=$(now); echo "$t1 - $t0" | bc; }
UD=$(untar "$M/p2"); UR=$(untar "$KR")
T0=$(now)
for _ in $(seq 100); do umount "$M" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 3000); do [ -e "$IMG.lock" ] || break; sleep 0.1; done
T1=$(now)
MNTS=("${MNTS[@]:1}")
COMMIT=$(echo "$T1 - $T0" | bc)

# (d) virt-copy-in, where libguestfs can run here.
if command -v virt-copy-in >/dev/null; then
  cp --sparse=always "$DISK" "$B/guestfs.raw"
  T0=$(now)
  if virt-copy-in -a "$B/guestfs.raw" "$TREE" /bench 2>"$B/guestfs.log"; then VCI=$(sec "$(echo "$(now) - $T0" | bc)") s; else VCI="failed (see $B/guestfs.log)"; fi
  rm -f "$B/guestfs.raw"
else
  VCI="not installed here (libguestfs needs a VM appliance)"
fi

MB=$(( TREEBYTES / 1000000 ))
echo "| measure | dimg | kernel loop mount | ratio | target |"
echo "|---|---|---|---|---|"
echo "| add ${MB} MB tree (4,000 small + 6 large files) vs cp -a + sync | $(sec "$ADD") s | $(sec "$CP") s | $(ratio "$ADD" "$CP") | <= 1.5 |"
echo "| image growth vs lz4 size of the tree | $((GROW >> 20)) MiB | lz4 $((TREELZ4 >> 20)) MiB | $(ratio "$GROW" "$TREELZ4") | <= 1.1 |"
echo "| sequential 1 GiB write + fsync through p2/ (MiB/s) | $SD | $SR | $(ratio "$SD" "$SR") | >= 0.5 |"
echo "| untar 20,000 files + sync | $(sec "$UD") s | $(sec "$UR") s | $(ratio "$UD" "$UR") | <= 3 |"
echo "| commit at unmount of (b)+(c) | $(sec "$COMMIT") s | | | |"
echo "| virt-copy-in of the same tree | $VCI | | | |"
"$DIMG" verify -q "$IMG"
