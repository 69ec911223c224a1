package testimages

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
)

// BootLinePrefix starts the one line the test initramfs prints on the
// serial console once it has mounted the root filesystem (see BootResult).
const BootLinePrefix = "DIMG-BOOT"

// initScript is the test initramfs's /init. It mounts the root that the
// kernel command line names (root=UUID=, LABEL=, PARTUUID= or a device)
// read-only, prints one line of key=value fields that hold no spaces, and
// powers off. PARTUUID is resolved by reading the GPT entries (LBA 2 on)
// itself: busybox's findfs knows only UUID and LABEL, and this kernel's
// uevents carry no PARTUUID. The uuid field is read from the ext2/3/4
// superblock (busybox-static has no blkid applet).
const initScript = `#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "$*" >/dev/console; }
fail() { say "DIMG-BOOT-ERROR reason=$1"; sync; poweroff -f; sleep 5; }
root=
for a in $(cat /proc/cmdline); do
  case "$a" in root=*) root="${a#root=}" ;; esac
done
partuuid_dev() {
  want=$(echo "$1" | tr A-F a-f)
  for d in /sys/block/*; do
    n=${d##*/}
    [ -b /dev/$n ] || continue
    i=0
    dd if=/dev/$n bs=512 skip=2 count=32 2>/dev/null | hexdump -v -e '128/1 "%02x" "\n"' | while read -r e; do
      i=$((i+1))
      g=${e:32:32}
      u=${g:6:2}${g:4:2}${g:2:2}${g:0:2}-${g:10:2}${g:8:2}-${g:14:2}${g:12:2}-${g:16:4}-${g:20:12}
      if [ "$u" = "$want" ]; then
        case $n in *[0-9]) echo /dev/${n}p$i ;; *) echo /dev/$n$i ;; esac
      fi
    done
  done
}
dev=
i=0
while [ $i -lt 150 ]; do
  case "$root" in
    UUID=*|LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
    PARTUUID=*) dev=$(partuuid_dev "${root#PARTUUID=}" | head -n 1) ;;
    /dev/*) [ -b "$root" ] && dev=$root ;;
    *) fail "no-root-argument" ;;
  esac
  [ -n "$dev" ] && [ -b "$dev" ] && break
  dev=
  sleep 0.1
  i=$((i+1))
done
[ -n "$dev" ] || fail "root-not-found:$root"
mkdir -p /root
mount -o ro "$dev" /root || fail "mount-failed:$dev"
# busybox-static has no blkid: the ext2/3/4 superblock's s_uuid is at 1024+0x68.
u=$(dd if="$dev" bs=8 skip=141 count=2 2>/dev/null | hexdump -v -e '16/1 "%02x"')
uuid=${u:0:8}-${u:8:4}-${u:12:4}-${u:16:4}-${u:20:12}
hostname='!missing'
[ -f /root/etc/hostname ] && hostname=$(head -n 1 /root/etc/hostname | tr -d ' \t')
mid='!missing'
[ -e /root/etc/machine-id ] && mid=$(head -n 1 /root/etc/machine-id | tr -d ' \t')
dbus='!missing'
[ -L /root/var/lib/dbus/machine-id ] && dbus=symlink
[ -f /root/var/lib/dbus/machine-id ] && [ ! -L /root/var/lib/dbus/machine-id ] && dbus=$(head -n 1 /root/var/lib/dbus/machine-id)
fstab=$(awk '$2 == "/" { print $1; exit }' /root/etc/fstab 2>/dev/null)
hosts=$(awk '$1 == "127.0.1.1" { $1 = ""; print; exit }' /root/etc/hosts 2>/dev/null | tr -s ' \t' ',' | sed 's/^,//; s/,$//')
keys=$(ls /root/etc/ssh/ 2>/dev/null | grep -c '^ssh_host_')
say "DIMG-BOOT root=$root dev=$dev uuid=$uuid hostname=$hostname machine_id=$mid dbus_machine_id=$dbus fstab_root=$fstab hosts=$hosts ssh_host_keys=$keys end"
umount /root
sync
poweroff -f
sleep 5
`

// cpioWriter writes a "newc" cpio archive, the format the kernel unpacks an
// initramfs from.
type cpioWriter struct {
	buf bytes.Buffer
	ino uint32
}

func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fmt.Fprintf(&c.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, fakeTime, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.buf.WriteString(name)
	c.buf.WriteByte(0)
	c.pad()
	c.buf.Write(data)
	c.pad()
}

func (c *cpioWriter) pad() {
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

func (c *cpioWriter) bytes() []byte {
	c.ino = 0
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.buf.Bytes()
}

// buildInitramfs writes the gzip-compressed test initramfs: busybox, /init
// and the mount points and console node it needs.
func buildInitramfs(kit *BootKit, dst string) error {
	bb, err := os.ReadFile(kit.Busybox)
	if err != nil {
		return fmt.Errorf("testimages: initramfs: %w", err)
	}
	var c cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "root", "tmp"} {
		c.entry(d, 0o040755, 0, 0, nil)
	}
	c.entry("dev/console", 0o020600, 5, 1, nil)
	c.entry("bin/busybox", 0o100755, 0, 0, bb)
	c.entry("bin/sh", 0o120777, 0, 0, []byte("busybox"))
	c.entry("init", 0o100755, 0, 0, []byte(initScript))
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.ModTime = timeOf(fakeTime)
	if _, err := zw.Write(c.bytes()); err != nil {
		return fmt.Errorf("testimages: initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("testimages: initramfs: %w", err)
	}
	if err := os.WriteFile(dst, gz.Bytes(), 0o644); err != nil {
		return fmt.Errorf("testimages: initramfs: %w", err)
	}
	return nil
}
