#!/usr/bin/env bash
# bench-remote.sh - issue 12: images read over HTTP on a 100 Mbit/s link.
#
# nginx serves the bench disk's image (and a qcow2 of the same disk) from one
# network namespace, dimg reads it from another, over a veth/bridge lab whose
# links tbf throttles to BENCH_REMOTE_RATE (default 100mbit; scripts/netns-lab.sh).
# Bytes transferred are nginx's own count ($body_bytes_sent), so every client
# is measured the same way.
#   (a) dimg cat URL 2:/<a ~10 KB file>, cold cache: ≤ 2 MiB, ≤ 1 s
#   (b) dimg mount URL + ls -l of a 10,000-entry directory, cold: ≤ 2 s
#   (c) dimg restore URL: ≥ 0.9 × the link rate
#   side by side: curl URL | dimg restore -, and the same file read from a
#   qcow2 of the disk through qemu's curl driver (qemu-storage-daemon FUSE
#   export + loop mount).
# Needs root (namespaces, loop devices, FUSE). Runs after bench.sh (its
# build/bench/disk.img); generates the disk the same way when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-remote: needs root" >&2; exit 1; }
B=${BENCH_DIR:-build/bench}
R=$B/remote
RATE=${BENCH_REMOTE_RATE:-100mbit}
DIMG=$PWD/bin/dimg
LAB=$PWD/scripts/netns-lab.sh
PFX=dimgrb
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench-remote: nginx missing (apt-get install nginx-light)" >&2; exit 1; }
mkdir -p "$R/www" "$R/ng"
R=$(cd "$R" && pwd)
say() { echo "bench-remote: $*" >&2; }

MNTS=() LOOPS=() PIDS=()
cleanup() {
  for m in "${MNTS[@]-}"; do [ -n "$m" ] && umount "$m" 2>/dev/null || true; done
  for l in "${LOOPS[@]-}"; do [ -n "$l" ] && losetup -d "$l" 2>/dev/null || true; done
  for p in "${PIDS[@]-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  "$LAB" down --prefix "$PFX" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The disk: bench.sh's, plus a directory of 10,000 small files in the root
# filesystem (partition 2), captured once.
DISK=$B/disk.img
if [ ! -s "$DISK" ]; then
  say "generating the bench disk (as bench.sh does)"
  go run ./testimages/cmd/mkdisk -kind gpt -size "${BENCH_SIZE:-6G}" -from /usr -max-bytes "${BENCH_BYTES:-2G}" -out "$DISK"
fi
part2() { sfdisk -J "$1" | python3 -c '
import json,sys
t=json.load(sys.stdin)["partitiontable"]; ss=t.get("sectorsize",512); p=t["partitions"][1]
print(p["start"]*ss, p["size"]*ss)'; }
read -r P2START P2SIZE < <(part2 "$DISK")
IMG=$R/www/x.dimg QCOW=$R/www/x.qcow2
if [ ! -s "$IMG" ] || [ "$DISK" -nt "$IMG" ]; then
  say "copying the disk and adding a 10,000-entry directory"
  cp --sparse=always "$DISK" "$R/disk.img"
  l=$(losetup -f --show -o "$P2START" --sizelimit "$P2SIZE" "$R/disk.img"); LOOPS+=("$l")
  mkdir -p "$R/k"; mount "$l" "$R/k"; MNTS+=("$R/k")
  mkdir -p "$R/k/bigdir"
  (cd "$R/k/bigdir" && for i in $(seq -w 1 10000); do echo "entry $i" > "f$i"; done)
  umount "$R/k"; losetup -d "$l"; MNTS=() LOOPS=()
  "$DIMG" capture -q --force "$R/disk.img" "$IMG"
  qemu-img convert -O qcow2 "$R/disk.img" "$QCOW"
fi
ISIZE=$(stat -c %s "$IMG") QSIZE=$(stat -c %s "$QCOW")
# A ~10 KB file of the root filesystem.
SMALL=$("$DIMG" ls -R --json "$IMG" 2:/usr/bin | python3 -c '
import json,sys
for e in json.load(sys.stdin):
    if e["type"]=="file" and 8192 <= e["size"] <= 12288: print(e["path"].lstrip("/")); break')
SMALL=usr/bin/${SMALL#usr/bin/}
"$DIMG" cat "$IMG" "2:/$SMALL" > "$R/small.ref"
"$DIMG" restore -q --force "$IMG" "$R/ref.img"
REFSUM=$(sha256sum < "$R/ref.img" | cut -d' ' -f1)
rm -f "$R/ref.img"

# The lab: nginx in the sender's namespace, clients in the receiver's.
eval "$("$LAB" up 1 --rate "$RATE" --prefix "$PFX")"
SRV=$LAB_TX_ADDR
cat > "$R/ng/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1;
pid $R/ng/nginx.pid; error_log $R/ng/error.log warn;
events { worker_connections 256; }
http {
  log_format bytes '\$body_bytes_sent';
  access_log $R/ng/access.log bytes;
  sendfile on; keepalive_requests 100000;
  client_body_temp_path $R/ng; proxy_temp_path $R/ng; fastcgi_temp_path $R/ng; uwsgi_temp_path $R/ng; scgi_temp_path $R/ng;
  default_type application/octet-stream;
  server { listen $SRV:8080; root $R/www; }
}
CONF
: > "$R/ng/access.log"
ip netns exec "$LAB_TX_NS" "$NGINX" -c "$R/ng/nginx.conf" -e "$R/ng/error.log" &
PIDS+=($!)
URL=http://$SRV:8080
rx() { ip netns exec "$LAB_RX1_NS" "$@"; }
for _ in $(seq 50); do rx curl -sf -o /dev/null "$URL/x.dimg" -r 0-0 && break; sleep 0.1; done
served() { awk '{n+=$1} END {print n+0}' "$R/ng/access.log"; }
mark() { : > "$R/ng/access.log"; }
now() { date +%s.%N; }
mib() { awk -v n="$1" 'BEGIN{printf "%.2f MiB", n/1048576}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f%%", a*100/b}'; }
CACHE=$R/cache
LINK=$(awk -v r="$RATE" 'BEGIN{ n=r+0; if (r ~ /gbit/) n*=1000; printf "%.2f", n/8 }') # MB/s

echo "| measure ($RATE link) | wall | transferred | of the image | target |"
echo "|---|---|---|---|---|"

# (a) one small file, cold cache.
rm -rf "$CACHE"; mark; t0=$(now)
rx "$DIMG" cat --cache "$CACHE" "$URL/x.dimg" "2:/$SMALL" > "$R/small.out"
t1=$(now); N=$(served)
cmp -s "$R/small.out" "$R/small.ref" || { say "dimg cat returned wrong bytes"; exit 1; }
echo "| dimg cat 2:/$SMALL ($(stat -c %s "$R/small.ref") B), cold | $(echo "$t1 - $t0" | bc | xargs printf '%.3f') s | $(mib "$N") | $(pct "$N" "$ISIZE") | ≤ 1 s, ≤ 2 MiB |"
mark; t0=$(now)
rx "$DIMG" cat --cache "$CACHE" "$URL/x.dimg" "2:/$SMALL" > /dev/null
t1=$(now); N=$(served)
echo "| the same again (cache) | $(echo "$t1 - $t0" | bc | xargs printf '%.3f') s | $N B | | nothing but the open |"

# (b) mount, then list the 10,000-entry directory (names: readdirplus also
# brings every entry's attributes), then ls -l (adds two getxattr round trips
# per entry through FUSE: coreutils asks for SELinux labels and ACLs), cold.
rm -rf "$CACHE"; mkdir -p "$R/m"; mark
read -r TM TL TLL < <(rx bash -c "
  t0=\$(date +%s.%N)
  '$DIMG' mount --background --cache '$CACHE' '$URL/x.dimg' '$R/m'
  t1=\$(date +%s.%N)
  n=\$(ls '$R/m/p2/bigdir' | wc -l)
  t2=\$(date +%s.%N)
  n2=\$(ls -l '$R/m/p2/bigdir' | wc -l)
  t3=\$(date +%s.%N)
  umount '$R/m'
  [ \"\$n\" -ge 10000 ] && [ \"\$n2\" -gt 10000 ] || { echo \"ls saw \$n / \$n2 lines\" >&2; exit 1; }
  echo \$(echo \"\$t1 - \$t0\" | bc) \$(echo \"\$t2 - \$t0\" | bc) \$(echo \"\$t3 - \$t2\" | bc)")
N=$(served)
echo "| dimg mount (ready), cold | $(printf '%.3f' "$TM") s | | | |"
echo "| dimg mount + ls bigdir (10,000 entries), cold | $(printf '%.3f' "$TL") s | $(mib "$N") | $(pct "$N" "$ISIZE") | ≤ 2 s |"
echo "| then ls -l bigdir (+20,000 getxattr via FUSE) | $(printf '%.3f' "$TLL") s | | | |"

# (c) restore, cold cache; vs curl | dimg restore -.
rm -rf "$CACHE"; mark; t0=$(now)
rx "$DIMG" restore -q --force --cache "$CACHE" "$URL/x.dimg" "$R/out.img"
t1=$(now); N=$(served); TR=$(echo "$t1 - $t0" | bc)
[ "$(sha256sum < "$R/out.img" | cut -d' ' -f1)" = "$REFSUM" ] || { say "restore from the URL differs"; exit 1; }
RATE_R=$(awk -v n="$N" -v t="$TR" 'BEGIN{printf "%.2f", n/t/1e6}')
echo "| dimg restore URL ($(mib "$ISIZE") image) | $(printf '%.1f' "$TR") s | $(mib "$N") | $(pct "$N" "$ISIZE") | $RATE_R MB/s = $(awk -v a="$RATE_R" -v b="$LINK" 'BEGIN{printf "%.2f", a/b}') × link (≥ 0.9) |"
rm -f "$R/out.img"; mark; t0=$(now)
rx bash -c "curl -sSf '$URL/x.dimg' | '$DIMG' restore -q --force - '$R/out.img'"
t1=$(now); N=$(served); TC=$(echo "$t1 - $t0" | bc)
[ "$(sha256sum < "$R/out.img" | cut -d' ' -f1)" = "$REFSUM" ] || { say "curl | restore - differs"; exit 1; }
echo "| curl URL \| dimg restore - | $(printf '%.1f' "$TC") s | $(mib "$N") | $(pct "$N" "$ISIZE") | $(awk -v n="$N" -v t="$TC" 'BEGIN{printf "%.2f", n/t/1e6}') MB/s |"
rm -f "$R/out.img"

# qemu's curl driver: the same small file from the qcow2, cold.
if [ -e /usr/lib/x86_64-linux-gnu/qemu/block-curl.so ] && command -v qemu-storage-daemon >/dev/null; then
  mark
  T=$(rx bash -c "
    set -e
    t0=\$(date +%s.%N)
    : > '$R/qdisk'
    qemu-storage-daemon --blockdev driver=http,url='$URL/x.qcow2',node-name=h,read-only=on \
      --blockdev driver=qcow2,file=h,node-name=q,read-only=on \
      --export type=fuse,id=e,node-name=q,mountpoint='$R/qdisk' --pidfile '$R/qsd.pid' --daemonize
    l=\$(losetup -f --show -r -o $P2START --sizelimit $P2SIZE '$R/qdisk')
    mkdir -p '$R/qm'; mount -o ro \"\$l\" '$R/qm'
    cat '$R/qm/$SMALL' > '$R/small.q'
    t1=\$(date +%s.%N)
    umount '$R/qm'; losetup -d \"\$l\"; kill \$(cat '$R/qsd.pid'); sleep 0.5
    echo \"\$t1 - \$t0\" | bc") || T=
  N=$(served)
  if [ -n "$T" ] && cmp -s "$R/small.q" "$R/small.ref"; then
    echo "| qemu curl driver: qcow2 ($(mib "$QSIZE")) + loop mount + cat, cold | $(printf '%.3f' "$T") s | $(mib "$N") | $(pct "$N" "$QSIZE") | peer |"
  else
    echo "| qemu curl driver: qcow2 + loop mount + cat | failed | | | peer |"
  fi
else
  echo "| qemu curl driver | not installed (qemu-block-extra) | | | peer |"
fi
