#!/usr/bin/env bash
# deps.sh [test|bench] - install the Debian packages dimg's tests (or
# benchmarks) use, only those whose commands are missing.
set -euo pipefail
want=(
  "mkfs.vfat:dosfstools" "fsck.fat:dosfstools" "sgdisk:gdisk" "sfdisk:fdisk"
  "mcopy:mtools" "mkntfs:ntfs-3g" "ntfs-3g:ntfs-3g" "fusermount3:fuse3"
  "getfattr:attr" "setfacl:acl" "qemu-system-x86_64:qemu-system-x86" "nft:nftables" "ip:iproute2" "mkfs.ext4:e2fsprogs" "losetup:mount"
  "/usr/sbin/nginx:nginx-light"
)
if [ "${1:-test}" = bench ]; then
  want+=("partclone.ext4:partclone" "lz4:lz4" "zstd:zstd" "udp-sender:udpcast"
         "ewfacquire:ewf-tools" "ewfmount:ewf-tools" "qemu-img:qemu-utils" "qemu-io:qemu-utils" "/usr/bin/time:time"
         "fio:fio" "curl:curl" "qemu-storage-daemon:qemu-system-common"
         "/usr/lib/x86_64-linux-gnu/qemu/block-curl.so:qemu-block-extra")
fi
missing=()
for w in "${want[@]}"; do
  cmd=${w%%:*} pkg=${w##*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -e "$cmd" ]; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "deps: not root and no sudo: install ${missing[*]} yourself; tests needing them will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run to finish instead of failing on its lock.
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
