package testimages

import (
	"os"
	"strings"
	"testing"
)

// requirements maps a pseudo-name to what it needs; any other name is an
// executable that must be on PATH (or in an sbin directory).
var requirements = map[string][]string{
	"mtools":    {"mcopy", "mdir", "mmd"},
	"ntfs-3g":   {"ntfs-3g", "mkntfs", "ntfsfix", "fuse"},
	"e2fsprogs": {"mke2fs", "e2fsck", "debugfs"},
	"gpt":       {"sgdisk", "sfdisk", "blkid", "e2fsprogs", "mkfs.vfat", "fsck.fat", "mtools", "mkswap"},
	"mbr":       {"sfdisk", "blkid", "e2fsprogs", "mkfs.vfat", "fsck.fat", "mtools"},
	"bare":      {"sfdisk", "blkid", "e2fsprogs"},
	"feature":   {"kernel", "fuse", "gpt", "ntfs-3g", "setfattr"},
}

// Require skips the test unless everything named is available. Names:
//
//	"root"     running as root
//	"loop"     root and loop devices
//	"kernel"   root, loop devices and an ext4 driver (kernel builds)
//	"fuse"     root and /dev/fuse
//	"mtools", "ntfs-3g", "e2fsprogs"   those tool sets
//	"gpt", "mbr", "bare", "feature"    everything that generator needs
//	anything else: an executable name, e.g. "sgdisk", "partclone.ext4"
func Require(t testing.TB, what ...string) {
	t.Helper()
	var missing []string
	seen := map[string]bool{}
	var check func(string)
	check = func(w string) {
		if seen[w] {
			return
		}
		seen[w] = true
		if sub, ok := requirements[w]; ok {
			for _, s := range sub {
				check(s)
			}
			return
		}
		if !available(w) {
			missing = append(missing, w)
		}
	}
	for _, w := range what {
		check(w)
	}
	if len(missing) > 0 {
		t.Skipf("testimages: missing %s", strings.Join(missing, ", "))
	}
}

func available(w string) bool {
	root := os.Geteuid() == 0
	switch w {
	case "root":
		return root
	case "loop":
		_, err := os.Stat("/dev/loop-control")
		return root && err == nil
	case "kernel":
		return haveKernel()
	case "fuse":
		_, err := os.Stat("/dev/fuse")
		return root && err == nil
	}
	return haveTool(w)
}
