#!/usr/bin/env bash
# bench-personalize.sh - issue 11: what personalizing an image costs.
# On the multi-GiB disk bench.sh generates (GPT: FAT32 ESP, ext4 root filled
# from /usr without metadata_csum_seed, so a new UUID rewrites every
# checksum, swap), captured once: `dimg personalize` with every option
# (--hostname --new-machine-id --remove-ssh-host-keys --new-fs-uuids) on a
# fresh copy of the image, RUNS times: wall time and image growth (bytes
# and chunks of the commit). The same on a raw copy of the disk (in place).
# Side by side where libguestfs runs: virt-sysprep --operations
# machine-id,ssh-hostkeys + virt-customize --hostname on a raw copy (it
# boots an appliance under qemu; without KVM that is TCG-slow). Prints a
# markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-personalize: needs root" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}
SIZE=${BENCH_SIZE:-6G}
BYTES=${BENCH_BYTES:-2G}
DIMG=$PWD/bin/dimg
RUNS=${RUNS:-3}
mkdir -p "$B/personalize"
P=$B/personalize
DISK=$B/disk.img
if [ ! -s "$DISK" ]; then
  echo "bench-personalize: generating a $SIZE GPT disk with $BYTES of files from /usr" >&2
  go run ./testimages/cmd/mkdisk -kind gpt -size "$SIZE" -from /usr -max-bytes "$BYTES" -out "$B/sparse.img"
  cp --sparse=never "$B/sparse.img" "$DISK"
  rm -f "$B/sparse.img"
fi
[ -s "$P/base.dimg" ] || "$DIMG" capture -q "$DISK" "$P/base.dimg"
OPTS=(--hostname bench-1 --new-machine-id --remove-ssh-host-keys --new-fs-uuids)
now() { date +%s.%N; }
med() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
: > "$P/img.times"; : > "$P/raw.times"
for i in $(seq "$RUNS"); do
  cp "$P/base.dimg" "$P/x.dimg"
  sync
  t0=$(now); "$DIMG" personalize -q --json "${OPTS[@]}" "$P/x.dimg" > "$P/report.json"; sync; t1=$(now)
  echo "$t1 - $t0" | bc >> "$P/img.times"
  cp --sparse=always "$DISK" "$P/raw.img"
  sync
  t0=$(now); "$DIMG" personalize -q "${OPTS[@]}" "$P/raw.img" > /dev/null; sync; t1=$(now)
  echo "$t1 - $t0" | bc >> "$P/raw.times"
done
before=$(stat -c %s "$P/base.dimg"); after=$(stat -c %s "$P/x.dimg")
commit=$("$DIMG" log "$P/x.dimg" | awk 'NR==2{print $4, $5, $6, $7}')
files=$(grep -c '"path"' "$P/report.json" || true)
e2=$(e2fsck -fn "$P/raw.img?offset=$(sfdisk -J "$P/raw.img" | awk -F'[:,]' '/"start"/{n++; if(n==2) print $2*512}')" >/dev/null 2>&1 && echo clean || echo NOT-clean)
gs="not run: virt-sysprep/virt-customize not installed (libguestfs-tools)"
if command -v virt-sysprep >/dev/null && command -v virt-customize >/dev/null; then
  cp --sparse=always "$DISK" "$P/guest.img"; sync
  t0=$(now)
  if LIBGUESTFS_BACKEND=direct timeout 1800 virt-sysprep -q -a "$P/guest.img" --operations machine-id,ssh-hostkeys >/dev/null 2>"$P/guestfs.err" &&
     LIBGUESTFS_BACKEND=direct timeout 1800 virt-customize -q -a "$P/guest.img" --hostname bench-1 >/dev/null 2>>"$P/guestfs.err"; then
    gs="$(echo "$(now) - $t0" | bc) s (no UUID changes: virt-sysprep's fs-uuids is disabled upstream)"
  else
    gs="failed here: $(tail -1 "$P/guestfs.err")"
  fi
  rm -f "$P/guest.img"
fi
cat <<TABLE

### personalize (issue 11): $(awk -v n="$(stat -c %s "$DISK")" 'BEGIN{printf "%.1f GiB", n/2^30}') disk, image $(awk -v n="$before" 'BEGIN{printf "%.0f MiB", n/2^20}'), median of $RUNS

| what | result |
|---|---|
| dimg personalize on the image (all options) | $(med < "$P/img.times" | xargs printf '%.2f') s |
| image growth | $(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.2f MiB", (a-b)/2^20}') (commit: $commit) |
| files changed | $files |
| dimg personalize on a raw copy (in place) | $(med < "$P/raw.times" | xargs printf '%.2f') s; e2fsck -fn of the root: $e2 |
| virt-sysprep + virt-customize on a raw copy | $gs |
TABLE
rm -f "$P/x.dimg" "$P/raw.img"
