#!/usr/bin/env bash
# demo.sh - the main job on a generated sample disk, each step printed.
set -euo pipefail
cd "$(dirname "$0")/.."
D=build/demo
DIMG=bin/dimg
mkdir -p "$D"
step() { printf '\n\033[1m==> %s\033[0m\n' "$1"; shift; printf '$ %s\n' "$*"; "$@"; }

./scripts/deps.sh test
if [ ! -s "$D/disk.img" ]; then
  step "Generate a sample disk: GPT with an EFI system partition (FAT32), an ext4 root full of files, swap" \
    go run ./testimages/cmd/mkdisk -kind gpt -size 512M -out "$D/disk.img"
fi
step "The sample disk's partition table" sfdisk -l "$D/disk.img"
step "Capture it into an image" "$DIMG" capture --force "$D/disk.img" "$D/disk.dimg"
ls -l "$D/disk.img" "$D/disk.dimg" | awk '{print $5, $9}'
du -h "$D/disk.img" "$D/disk.dimg"
step "What the image holds" "$DIMG" info "$D/disk.dimg"
step "Check every chunk and the image digest" "$DIMG" verify "$D/disk.dimg"
step "Browse the image without restoring it: the partitions, then a directory" "$DIMG" ls "$D/disk.dimg"
"$DIMG" ls -l "$D/disk.dimg" 1:/EFI/BOOT
f=$("$DIMG" ls "$D/disk.dimg" 2:/etc | head -1)
step "Print one file from inside the image (reads only the chunks it needs)" "$DIMG" cat "$D/disk.dimg" "2:/etc/$f"
step "Restore it to a new disk file, reading it back to verify" \
  "$DIMG" restore --force --verify "$D/disk.dimg" "$D/restored.img"
step "The partition table survived (sgdisk -v)" sgdisk -v "$D/restored.img"
step "Boot code and the gap before the first partition are byte-identical (first MiB)" \
  cmp -n 1048576 "$D/disk.img" "$D/restored.img"
# Each filesystem, checked by its own tool on the restored disk.
sfdisk -J "$D/restored.img" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]; ss=t.get("sectorsize",512)
for p in t["partitions"]: print(p["node"], p["start"]*ss, p["size"]*ss)' |
while read -r node start size; do
  part="$D/part.tmp"
  dd if="$D/restored.img" of="$part" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$size" status=none
  fstype=$(blkid -o value -s TYPE "$part" || true)
  case "$fstype" in
    ext2|ext3|ext4) step "Partition $node ($fstype) is clean" e2fsck -fn "$part" ;;
    vfat) if command -v fsck.fat >/dev/null; then step "Partition $node (FAT) is clean" fsck.fat -n "$part"; fi ;;
    *) printf '\n(partition %s: %s, nothing to check)\n' "$node" "${fstype:-no filesystem}" ;;
  esac
  rm -f "$part"
done
printf '\n\033[1mdemo: done.\033[0m Image: %s; try: %s info %s\n' "$D/disk.dimg" "$DIMG" "$D/disk.dimg"
