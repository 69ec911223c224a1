#!/usr/bin/env bash
# bench-mount.sh - issue 4: reading files out of an image without restoring it.
#  (a) dimg cat of a ~10 KB file: image bytes read (strace) and wall time;
#  (b) sequential read of a 1 GiB file: dimg mount vs a kernel loop mount of
#      the raw disk vs ewfmount of an EWF image + loop mount, cold and warm;
#  (c) dimg extract of a ~500 MB tree vs cp -a from a kernel loop mount.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-mount: needs root" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}
DIMG=$PWD/bin/dimg
DISK=$B/disk.img
IMG=$B/x.dimg
mkdir -p "$B"
command -v strace >/dev/null || apt-get install -y -qq strace >/dev/null
[ -s "$DISK" ] && [ -s "$IMG" ] || { echo "bench-mount: run scripts/bench.sh first (it builds $DISK and $IMG)" >&2; exit 1; }

MNTS=() LOOPS=()
cleanup() {
  # Two passes: the loop device over ewfmount's file keeps ewfmount busy
  # until it is detached.
  for m in "${MNTS[@]-}"; do [ -n "$m" ] && umount "$m" 2>/dev/null || true; done
  for l in "${LOOPS[@]-}"; do [ -n "$l" ] && losetup -d "$l" 2>/dev/null || true; done
  sleep 1
  for m in "${MNTS[@]-}"; do [ -n "$m" ] && mountpoint -q "$m" && umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
part2() { sfdisk -J "$1" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]; ss=t.get("sectorsize",512); p=t["partitions"][1]
print(p["start"]*ss, p["size"]*ss)'; }
kmount() { # kmount DISK DIR: loop-mount partition 2 read-only
  local s z l; read -r s z < <(part2 "$1")
  l=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$1"); LOOPS+=("$l")
  mkdir -p "$2"; mount -o ro "$l" "$2"; MNTS+=("$2")
}

echo "| measure | dimg | peer | ratio |"
echo "|---|---|---|---|"

# (a) one small file.
K=$B/kmnt; kmount "$DISK" "$K"
SMALL=$(cd "$K" && find usr/bin usr/lib -type f -size +8k -size -12k -print -quit 2>/dev/null)
SMALLSZ=$(stat -c %s "$K/$SMALL")
drop
T=$(secs "$DIMG" cat "$IMG" "2:/$SMALL")
strace -f -e trace=pread64 -o "$B/cat.trace" "$DIMG" cat "$IMG" "2:/$SMALL" > "$B/cat.out"
cmp -s "$B/cat.out" "$K/$SMALL" || { echo "bench-mount: dimg cat returned wrong bytes" >&2; exit 1; }
READ=$(awk -F'= ' '/pread64/ {n+=$NF} END {print n+0}' "$B/cat.trace")
echo "| dimg cat 2:/$SMALL ($SMALLSZ B), cold | $(printf '%.3f' "$T") s, $(awk -v n="$READ" 'BEGIN{printf "%.2f MiB", n/1048576}') of the image read | target < 0.2 s, ≤ 2 MiB | |"

# (c) extract a ~500 MB tree vs cp -a from the kernel mount (both cold).
TREE=$( (cd "$K" && du --block-size=1M -d 3 usr 2>/dev/null || true) | awk '{d=$1-500; if(d<0)d=-d; print d, $1, $2}' | sort -n | head -1 | awk '{print $3}')
TREE=${TREE%/}
TSZ=$(du -s --block-size=1M "$K/$TREE" | cut -f1)
rm -rf "$B/x1" "$B/x2"; mkdir -p "$B/x1" "$B/x2"
drop; TD=$(secs bash -c "'$DIMG' extract -q '$IMG' '2:/$TREE' '$B/x1/t' && sync")
drop; TC=$(secs bash -c "cp -a '$K/$TREE' '$B/x2/t' && sync")
diff -r --no-dereference "$B/x1/t" "$B/x2/t" >/dev/null || { echo "bench-mount: extracted tree differs from cp -a" >&2; exit 1; }
echo "| extract 2:/$TREE ($TSZ MiB), cold | $(printf '%.2f' "$TD") s | cp -a from loop mount $(printf '%.2f' "$TC") s | **$(echo "scale=2; $TD / $TC" | bc)×** (target ≤ 1.5×) |"
rm -rf "$B/x1" "$B/x2"

# (b) a 1 GiB file: its own disk, so the file exists at any bench size.
BIG=$B/big.img
if [ ! -s "$B/big.dimg" ]; then
  go run ./testimages/cmd/mkdisk -kind gpt -size 2G -out "$BIG" 2>/dev/null
  read -r s z < <(part2 "$BIG")
  l=$(losetup -f --show -o "$s" --sizelimit "$z" "$BIG")
  mkdir -p "$B/bigw"; mount "$l" "$B/bigw"
  find /usr/lib -type f -size +200k -print0 2>/dev/null | xargs -0 cat 2>/dev/null | head -c 1073741824 > "$B/bigw/big.bin" || true
  umount "$B/bigw"; losetup -d "$l"
  "$DIMG" capture -q --force "$BIG" "$B/big.dimg"
  ewfacquire -q -u -t "$B/big" -f encase6 -c fast -S 0 "$BIG" >/dev/null 2>&1 || ewfacquire -q -u -t "$B/big" "$BIG" >/dev/null
fi
KB=$B/kbig; kmount "$BIG" "$KB"
DM=$B/dmnt; mkdir -p "$DM"; "$DIMG" mount -q --background "$B/big.dimg" "$DM"; MNTS=("$DM" "${MNTS[@]}")
EW=$B/ewf; mkdir -p "$EW"; ewfmount "$B/big.E01" "$EW" >/dev/null; MNTS=("${MNTS[@]}" "$EW")
EM=$B/ewfp; kmount "$EW/ewf1" "$EM"; MNTS=("$EM" "${MNTS[@]}")
for f in "$KB/big.bin" "$DM/p2/big.bin" "$EM/big.bin"; do cmp -s "$KB/big.bin" "$f" || { echo "bench-mount: $f differs" >&2; exit 1; }; done
rd() { dd if="$1" of=/dev/null bs=1M status=none; }
drop; KC=$(secs rd "$KB/big.bin"); KW=$(secs rd "$KB/big.bin")
drop; DC=$(secs rd "$DM/p2/big.bin"); DW=$(secs rd "$DM/p2/big.bin")
drop; EC=$(secs rd "$EM/big.bin"); EWm=$(secs rd "$EM/big.bin")
mbs() { echo "scale=0; 1024 / $1" | bc; }
echo "| 1 GiB file, warm: dimg mount vs kernel loop mount of the raw disk | $(mbs "$DW") MiB/s | $(mbs "$KW") MiB/s | **$(echo "scale=2; $KW / $DW" | bc)×** throughput (target ≥ 0.5×) |"
echo "| 1 GiB file, cold: dimg mount vs kernel loop mount of the raw disk | $(mbs "$DC") MiB/s | $(mbs "$KC") MiB/s | **$(echo "scale=2; $KC / $DC" | bc)×** |"
echo "| 1 GiB file, cold: dimg mount vs ewfmount + loop mount | $(mbs "$DC") MiB/s | $(mbs "$EC") MiB/s | **$(echo "scale=2; $EC / $DC" | bc)×** throughput (target ≥ 2×) |"
echo "| 1 GiB file, warm: dimg mount vs ewfmount + loop mount | $(mbs "$DW") MiB/s | $(mbs "$EWm") MiB/s | **$(echo "scale=2; $EWm / $DW" | bc)×** |"
