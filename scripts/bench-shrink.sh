#!/usr/bin/env bash
# bench-shrink.sh - restore onto a disk half the source's size (issue 13):
# dimg restore --shrink vs the manual route a user takes without it:
# restore to a full-size scratch file, e2fsck + resize2fs the root
# filesystem, sgdisk edits on the target, dd of each partition, mkswap.
# Wall time (with the final sync) and bytes written (the processes' own
# write_bytes - cancelled_write_bytes from /proc, children included),
# side by side. Uses scripts/bench.sh's disk and image (made if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-shrink: needs root (loop devices, drop_caches)" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}
SIZE=${BENCH_SIZE:-6G}
BYTES=${BENCH_BYTES:-2G}
DIMG=$PWD/bin/dimg
mkdir -p "$B"
W=$B/shrink
rm -rf "$W"; mkdir -p "$W"
RES=$W/results.tsv
: > "$RES"
LOOPS=()
cleanup() { for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done; }
trap cleanup EXIT

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mib() { awk -v n="$1" 'BEGIN{printf "%.0f", n/1048576}'; }
# measure NAME SCRIPT: runs SCRIPT in a child bash; records wall seconds
# and the bytes it (and every child it waited for) wrote.
measure() {
  local name=$1 script=$2 start end io
  start=$(date +%s.%N)
  io=$(bash -c "set -euo pipefail; $script
sync
awk '/^write_bytes/{w=\$2} /^cancelled_write_bytes/{c=\$2} END{print w-c}' /proc/\$\$/io")
  end=$(date +%s.%N)
  local wall
  wall=$(echo "$end - $start" | bc)
  printf '%s\t%s\t%s\n' "$name" "$wall" "$io" >> "$RES"
  printf '  %-40s %7.2fs wall %8s MiB written\n' "$name" "$wall" "$(mib "$io")" >&2
}
val() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES"; }

DISK=$B/disk.img
if [ ! -s "$DISK" ]; then
  echo "bench-shrink: generating a $SIZE GPT disk with $BYTES of files from /usr" >&2
  go run ./testimages/cmd/mkdisk -kind gpt -size "$SIZE" -from /usr -max-bytes "$BYTES" -out "$B/sparse.img"
  cp --sparse=never "$B/sparse.img" "$DISK"
  rm -f "$B/sparse.img"
fi
IMG=$B/x.dimg
[ -s "$IMG" ] || "$DIMG" capture -q --force "$DISK" "$IMG"
DSIZE=$(stat -c %s "$DISK")
T=$(( DSIZE / 2 / 1048576 * 1048576 ))
# Half the disk, unless the data needs more (resize2fs -P is generous):
# then the smallest target dimg accepts.
MIN=$("$DIMG" restore --dry-run --json --size $(( DSIZE - 1048576 )) "$IMG" "$W/plan.img" 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["minimum_bytes"])')
NOTE="half the disk"
# The manual route keeps the ESP as it is (nothing standard shrinks FAT):
# it needs about the ESP's size more than dimg's minimum.
if [ "$MIN" -gt $(( T - 320 * 1048576 )) ]; then
  T=$(( (MIN + 320 * 1048576) / 1048576 * 1048576 ))
  NOTE="half the disk does not hold the data (dimg's minimum: $(mib "$MIN") MiB); the minimum + 320 MiB, so the manual route (ESP kept) fits too"
fi
echo "bench-shrink: disk $(mib "$DSIZE") MiB, image $(mib "$(stat -c %s "$IMG")") MiB, target $(mib "$T") MiB: $NOTE" >&2

# The source layout (sectors), for the manual route.
read -r -a P < <(sfdisk -J "$DISK" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]
print(" ".join("%d %d" % (p["start"], p["size"]) for p in t["partitions"]))')
ESP_S=${P[0]} ESP_N=${P[1]} ROOT_S=${P[2]} ROOT_N=${P[3]} SWAP_S=${P[4]} SWAP_N=${P[5]}
SWAP_UUID=$(blkid -p -o value -s UUID -O $((SWAP_S*512)) "$DISK")

echo "== dimg restore --shrink onto $(mib "$T") MiB" >&2
drop
measure "dimg restore --shrink" "$DIMG restore -q --shrink --size $T $IMG $W/dimg.img"
"$DIMG" restore --dry-run --json --size "$T" "$IMG" "$W/plan.img" > "$W/plan.json" 2>/dev/null

echo "== manual: restore full size, resize2fs, sgdisk, dd" >&2
# The manual route keeps the ESP and gives swap 64 MiB: root takes the rest.
SWAP_NEW=$(( 64 * 2048 ))
LAST=$(( T / 512 - 34 ))
SWAP_NEW_S=$(( (LAST - SWAP_NEW) / 2048 * 2048 ))
ROOT_NEW=$(( SWAP_NEW_S - ROOT_S ))
drop
measure "manual route" "
$DIMG restore -q $IMG $W/full.img
L=\$(losetup -f --show -o $((ROOT_S*512)) --sizelimit $((ROOT_N*512)) $W/full.img)
e2fsck -fy \$L >/dev/null 2>&1 || [ \$? -lt 4 ]
resize2fs \$L $((ROOT_NEW/2))K >/dev/null 2>&1
losetup -d \$L
truncate -s $T $W/manual.img
sgdisk -o -U \$(sgdisk -p $W/full.img | awk '/Disk identifier/{print \$4}') \\
  -n 1:$ESP_S:$((ESP_S+ESP_N-1)) -n 2:$ROOT_S:$((ROOT_S+ROOT_NEW-1)) -n 3:$SWAP_NEW_S:$((SWAP_NEW_S+SWAP_NEW-1)) \\
  -t 1:ef00 -t 2:\$(sgdisk -i 2 $W/full.img | awk '/GUID code/{print \$4}') -t 3:8200 \\
  -u 1:\$(sgdisk -i 1 $W/full.img | awk '/unique GUID/{print \$4}') \\
  -u 2:\$(sgdisk -i 2 $W/full.img | awk '/unique GUID/{print \$4}') -u 3:\$(sgdisk -i 3 $W/full.img | awk '/unique GUID/{print \$4}') \\
  -c 1:'EFI System Partition' -c 2:root -c 3:swap $W/manual.img >/dev/null
dd if=$W/full.img of=$W/manual.img bs=440 count=1 conv=notrunc status=none
dd if=$W/full.img of=$W/manual.img bs=512 skip=34 seek=34 count=$((ESP_S-34)) conv=notrunc status=none
dd if=$W/full.img of=$W/manual.img bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none skip=$((ESP_S*512)) seek=$((ESP_S*512)) count=$((ESP_N*512))
dd if=$W/full.img of=$W/manual.img bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none skip=$((ROOT_S*512)) seek=$((ROOT_S*512)) count=$((ROOT_NEW*512))
S=\$(losetup -f --show -o $((SWAP_NEW_S*512)) --sizelimit $((SWAP_NEW*512)) $W/manual.img)
mkswap -U $SWAP_UUID -L swap \$S >/dev/null
losetup -d \$S
rm -f $W/full.img"

for f in dimg manual; do
  sgdisk -v "$W/$f.img" | grep -q "No problems found" || echo "bench-shrink: $f.img: sgdisk -v not clean" >&2
done

dw=$(val "dimg restore --shrink" 2); dm=$(val "dimg restore --shrink" 3)
mw=$(val "manual route" 2); mm=$(val "manual route" 3)
PLAN=$(python3 -c '
import json,sys
p=json.load(open(sys.argv[1]))
print("; ".join("%d %s %d->%d MiB" % (q["number"], q.get("fs") or "-", q["old_size"]>>20, q["new_size"]>>20) for q in p["partitions"]))' "$W/plan.json")
cat <<EOF

### Restore onto a smaller disk ($(mib "$DSIZE") MiB disk, $(mib "$T") MiB target: $NOTE)

| route | wall s | MiB written | target MiB allocated |
|---|---|---|---|
| dimg restore --shrink | $(printf %.1f "$dw") | $(mib "$dm") | $(( $(stat -c %b "$W/dimg.img") * 512 / 1048576 )) |
| restore full size + resize2fs + sgdisk + dd | $(printf %.1f "$mw") | $(mib "$mm") | $(( $(stat -c %b "$W/manual.img") * 512 / 1048576 )) |
| ratio manual/dimg | $(awk -v a="$mw" -v b="$dw" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$mm" -v b="$dm" 'BEGIN{printf "%.2f", a/b}') | |

Plan of dimg: $PLAN. The manual route keeps the ESP and makes a 64 MiB swap.
EOF
rm -f "$W"/*.img
