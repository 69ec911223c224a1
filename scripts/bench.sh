#!/usr/bin/env bash
# bench.sh - dimg side by side with its peers on one generated multi-GiB disk.
#
# Issue 2: capture vs `cat disk | lz4 -1`, restore vs `lz4 -d`, cold and warm.
# Issue 3: capture/restore vs partclone (per partition, + sgdisk backup + first
#          MiB, as Clonezilla does) piped through lz4 -1; clone vs partclone -b.
# Every timing includes the final sync; caches are dropped before cold runs.
# Needs root (loop devices, drop_caches). BENCH_SIZE / BENCH_BYTES resize it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: needs root (loop devices, drop_caches)" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}
SIZE=${BENCH_SIZE:-6G}
BYTES=${BENCH_BYTES:-2G}
DIMG=$PWD/bin/dimg
mkdir -p "$B"
RES=$B/results.tsv
: > "$RES"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# measure NAME CMD...: wall, user+sys CPU, peak RSS of the command (a shell
# pipeline counts its largest process), appended to results.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$B/time.out" bash -c "$* && sync"
  read -r wall user sys rss < "$B/time.out"
  printf '%s\t%s\t%s\t%s\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$rss" >> "$RES"
  printf '  %-34s %7.2fs wall %7.2fs cpu %8d KiB rss\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$rss" >&2
}
val() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }'; }
mib() { awk -v n="$1" 'BEGIN{printf "%.0f", n/1048576}'; }

DISK=$B/disk.img
if [ ! -s "$DISK" ]; then
  echo "bench: generating a $SIZE GPT disk with $BYTES of files from /usr" >&2
  go run ./testimages/cmd/mkdisk -kind gpt -size "$SIZE" -from /usr -max-bytes "$BYTES" -out "$B/sparse.img"
  # A real disk has no holes: write every byte so every tool reads them.
  cp --sparse=never "$B/sparse.img" "$DISK"
  rm -f "$B/sparse.img"
fi
DSIZE=$(stat -c %s "$DISK")
echo "bench: disk $(mib "$DSIZE") MiB" >&2
sfdisk -l "$DISK" >&2

echo "== issue 2: dimg vs lz4 -1 (C) on the whole disk" >&2
rm -f "$B"/x.dimg "$B"/x.lz4 "$B"/out*.img
drop; measure "dimg capture (cold)"   "$DIMG capture -q --force $DISK $B/x.dimg"
drop; measure "cat|lz4 -1 (cold)"     "cat $DISK | lz4 -1 -q > $B/x.lz4"
cat "$DISK" > /dev/null
measure "dimg capture (warm)"         "$DIMG capture -q --force $DISK $B/x.dimg"
measure "cat|lz4 -1 (warm)"           "cat $DISK | lz4 -1 -q -f > $B/x.lz4"
measure "dimg capture --sector (warm)" "$DIMG capture -q --force --sector $DISK $B/xs.dimg"
$DIMG capture -q --force --json "$DISK" "$B/x.dimg" > "$B/capture.json"
drop; measure "dimg restore (cold)"   "$DIMG restore -q --force $B/x.dimg $B/out1.img"
drop; measure "lz4 -d (cold)"         "lz4 -d -q -f $B/x.lz4 $B/out2.img"
rm -f "$B"/out*.img
IMG=$(stat -c %s "$B/x.dimg"); SIMG=$(stat -c %s "$B/xs.dimg"); LZ=$(stat -c %s "$B/x.lz4")

echo "== issue 3: dimg vs partclone (+ lz4 -1)" >&2
# Partitions, attached by offset (no loop partition scan on this machine).
mapfile -t PARTS < <(sfdisk -J "$DISK" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]; ss=t.get("sectorsize",512)
for p in t["partitions"]: print(p["node"][-1], p["start"]*ss, p["size"]*ss)')
# attach runs in $(...) subshells: remember loop devices in a file.
: > "$B/loops"
cleanup() { while read -r l; do losetup -d "$l" 2>/dev/null || true; done < "$B/loops"; }
trap cleanup EXIT
attach() { local l; l=$(losetup -f --show "$@"); echo "$l" >> "$B/loops"; echo "$l"; }
pc_tool() { case $(blkid -p -o value -s TYPE "$1") in ext*) echo partclone.ext4 ;; vfat) echo partclone.fat ;; ntfs) echo partclone.ntfs ;; *) echo "" ;; esac; }
SRCDEVS=()
for p in "${PARTS[@]}"; do
  read -r n start size <<<"$p"
  SRCDEVS+=("$n $(attach -r -o "$start" --sizelimit "$size" "$DISK") $start $size")
done
pc_capture() {
  sgdisk --backup="$B/pc/table.sgdisk" "$DISK" >/dev/null
  dd if="$DISK" of="$B/pc/first-mib" bs=1M count=1 status=none
  for s in "${SRCDEVS[@]}"; do
    read -r n dev start size <<<"$s"
    tool=$(pc_tool "$dev"); [ -n "$tool" ] || continue
    $tool -c -q -s "$dev" -o - 2>/dev/null | lz4 -1 -q > "$B/pc/p$n.pc.lz4"
  done
}
export -f pc_capture pc_tool; export B DISK; export SRCDEVS_STR="${SRCDEVS[*]}"
rm -rf "$B/pc"; mkdir -p "$B/pc"
declare -p SRCDEVS > "$B/srcdevs.sh"
drop; measure "partclone|lz4 capture (cold)" "source $B/srcdevs.sh; pc_capture"
drop; measure "dimg capture (cold, again)" "$DIMG capture -q --force $DISK $B/x.dimg"
PCB=$(du -cb "$B"/pc/* | tail -1 | cut -f1)

# Restores onto loop devices over fresh files of the disk's size.
fresh() { rm -f "$1"; truncate -s "$DSIZE" "$1"; attach "$1"; }
T1=$(fresh "$B/t1.img"); T2=$(fresh "$B/t2.img")
pc_restore() {
  sgdisk --load-backup="$B/pc/table.sgdisk" "$T" >/dev/null
  dd if="$B/pc/first-mib" of="$T" bs=1M count=1 conv=notrunc status=none
  for s in "${SRCDEVS[@]}"; do
    read -r n dev start size <<<"$s"
    [ -f "$B/pc/p$n.pc.lz4" ] || continue
    tool=$(pc_tool "$dev")
    tp=$(losetup -f --show -o "$start" --sizelimit "$size" "$T")
    lz4 -d -q -c "$B/pc/p$n.pc.lz4" | $tool -r -q -s - -o "$tp" >/dev/null 2>&1
    losetup -d "$tp"
  done
}
export -f pc_restore
drop; measure "partclone restore (cold)" "source $B/srcdevs.sh; T=$T1 pc_restore"
drop; measure "dimg restore to device (cold)" "$DIMG restore -q $B/x.dimg $T2"

# Clone: device to device.
C1=$(fresh "$B/c1.img"); C2=$(fresh "$B/c2.img"); SD=$(attach -r "$DISK")
pc_clone() {
  sgdisk --backup="$B/pc/t.sgdisk" "$DISK" >/dev/null && sgdisk --load-backup="$B/pc/t.sgdisk" "$T" >/dev/null
  dd if="$DISK" of="$T" bs=1M count=1 conv=notrunc status=none
  for s in "${SRCDEVS[@]}"; do
    read -r n dev start size <<<"$s"
    tool=$(pc_tool "$dev"); [ -n "$tool" ] || continue
    tp=$(losetup -f --show -o "$start" --sizelimit "$size" "$T")
    $tool -b -q -s "$dev" -o "$tp" >/dev/null 2>&1
    losetup -d "$tp"
  done
}
export -f pc_clone
drop; measure "partclone -b clone (cold)" "source $B/srcdevs.sh; T=$C1 pc_clone"
drop; measure "dimg clone (cold)" "$DIMG clone -q $SD $C2"

echo >&2
python3 - "$RES" "$B/capture.json" "$DSIZE" "$IMG" "$SIMG" "$LZ" "$PCB" <<'PY'
import json, sys
res = {}
for line in open(sys.argv[1]):
    n, wall, cpu, rss = line.rstrip("\n").split("\t")
    res[n] = (float(wall), float(cpu), int(rss))
cap = json.load(open(sys.argv[2]))
dsize, img, simg, lz, pcb = map(int, sys.argv[3:8])
M = 1 << 20
def row(name, peer, size=None, psize=None, mbytes=dsize):
    a, b = res[name], res[peer]
    s = f"| {name} | {a[0]:.2f} | {mbytes/M/a[0]:.0f} | {a[1]:.2f} | {a[2]/1024:.0f} | {peer} | {b[0]:.2f} | {b[1]:.2f} | {b[2]/1024:.0f} | **{a[0]/b[0]:.2f}×** |"
    if size:
        s += f" {size/M:.0f} / {psize/M:.0f} MiB = {size/psize:.2f}× |"
    else:
        s += " |"
    print(s)
print(f"Disk: {dsize/M:.0f} MiB GPT (ESP FAT32, ext4 with real files from /usr, swap); MB/s = disk bytes / wall.\n")
print("| dimg | wall s | MiB/s | CPU s | RSS MiB | peer | wall s | CPU s | RSS MiB | wall ratio | image size ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
row("dimg capture (cold)", "cat|lz4 -1 (cold)", img, lz)
row("dimg capture (warm)", "cat|lz4 -1 (warm)", img, lz)
row("dimg capture --sector (warm)", "cat|lz4 -1 (warm)", simg, lz)
row("dimg restore (cold)", "lz4 -d (cold)")
row("dimg capture (cold, again)", "partclone|lz4 capture (cold)", img, pcb)
row("dimg restore to device (cold)", "partclone restore (cold)")
row("dimg clone (cold)", "partclone -b clone (cold)")
print()
rs, es, ws, wall = cap["read_seconds"], cap["encode_cpu_seconds"], cap["write_seconds"], cap["seconds"]
rb = cap["read_bytes"]
print("Capture pipeline stages (warm run):")
print(f"- read: {rb/M:.0f} MiB in {rs:.2f} s busy = {rb/M/max(rs,1e-9):.0f} MiB/s (one reader goroutine)")
print(f"- zero check + SHA-256 + lz4: {es:.2f} CPU s over the workers = {rb/M/max(es,1e-9):.0f} MiB/s per core")
print(f"- write: {img/M:.0f} MiB in {ws:.2f} s busy; wall {wall:.2f} s; stored {cap['stored_chunks']} chunks, {cap['zero_chunks']} zero, {cap['skipped_chunks']} unused")
PY
