package testimages

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Default sizes per kind (Spec.Size == 0).
const (
	defaultGPTSize     = 256 * mib
	defaultMBRSize     = 256 * mib
	defaultBareSize    = 96 * mib
	defaultFeatureSize = 320 * mib
)

// GPTDisk builds dir/gpt.img: a GPT disk like a UEFI Linux install.
//
//	1  EFI system partition, FAT32 ("ESP"), with shim/GRUB-like EFI binaries
//	2  ext4 root ("root"), thousands of files, a deleted file's stale data
//	3  Linux swap ("swap")
//	   free space at the end
//
// The first partition starts at 1 MiB; BootPattern fills the MBR boot code
// (0..439, the protective MBR entries stay valid) and the gap between the
// GPT entries and the first partition.
func GPTDisk(ctx context.Context, dir string, spec Spec) (path string, err error) {
	b, err := newBuilder(ctx, dir, "gpt", spec, defaultGPTSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.gpt())
}

// MBRDisk builds dir/mbr.img: an MBR disk with a bootable primary ext4
// ("root", 1), an extended container (2) and two logical partitions: ext2
// ("data", 5) and FAT32 ("SHARED", 6); BootPattern in the boot code and the
// gap before the first partition.
func MBRDisk(ctx context.Context, dir string, spec Spec) (string, error) {
	b, err := newBuilder(ctx, dir, "mbr", spec, defaultMBRSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.mbr())
}

// BareFS builds dir/bare.img: an ext4 filesystem ("bare") with no partition
// table, filled like a root filesystem.
func BareFS(ctx context.Context, dir string, spec Spec) (string, error) {
	b, err := newBuilder(ctx, dir, "bare", spec, defaultBareSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.bare())
}

// fatSerial is a deterministic FAT volume serial as blkid prints it.
func fatSerial(seed int64, name string) string {
	h := seededHex32(seed, name)
	return h[:4] + "-" + h[4:]
}

func fsUUID(seed int64, name string) string { return strings.ToLower(seededUUID(seed, name)) }

// rootExt is the realistic ext4 of the GPT and MBR disks: 4 KiB blocks, an
// inode per 16 KiB whatever the size (no "small" profile), stale data.
func (b *builder) rootExt(pi *PartInfo, budget int64, fstab string) extPlan {
	return extPlan{
		fstype:   "ext4",
		mkfsArgs: []string{"-b", "4096", "-i", "16384", "-I", "256"},
		fill:     func(w *treeWriter) error { return b.fillRoot(w, budget, fstab) },
		stale:    min(512*mib, pi.Size/8),
	}
}

// fillRoot fills a root filesystem: real host files when the spec names
// host dirs (plus /etc/fstab and hostname), generated ones otherwise.
func (b *builder) fillRoot(w *treeWriter, budget int64, fstab string) error {
	if len(b.spec.Files.HostDirs) == 0 {
		return synthRoot(w, budget, fstab)
	}
	if err := w.writeText("etc/fstab", fstab, 0o644); err != nil {
		return err
	}
	if err := w.writeText("etc/hostname", "dimg-test\n", 0o644); err != nil {
		return err
	}
	return copyHost(w, b.spec.Files.HostDirs, budget)
}

func (b *builder) gpt() error {
	size := b.spec.Size
	esp, swap, free := 48*mib, 16*mib, 8*mib
	switch {
	case size >= gib:
		esp = 256 * mib
		swap = min(alignDown(size/16, mib), gib)
		free = min(alignDown(size/32, mib), 256*mib)
	case size >= 512*mib:
		swap, free = 32*mib, 16*mib
	}
	start := mib
	root := size - start - esp - swap - free
	if root < 64*mib {
		return fmt.Errorf("%w: gpt needs at least %d MiB, have %d MiB", ErrTooSmall, (start+esp+swap+free+64*mib)>>20, size>>20)
	}
	seed := b.spec.Seed
	b.info.Table = "gpt"
	b.info.DiskGUID = seededUUID(seed, "disk-guid")
	b.info.Parts = []PartInfo{
		{Part: Part{Number: 1, Start: start, Size: esp, FS: "fat32", Label: "ESP", Type: gptTypeESP,
			Name: "EFI System Partition", UUID: fatSerial(seed, "fs/1")}},
		{Part: Part{Number: 2, Start: start + esp, Size: root, FS: "ext4", Label: "root", Type: gptTypeRootX8664,
			Name: "root", UUID: fsUUID(seed, "fs/2")}},
		{Part: Part{Number: 3, Start: start + esp + root, Size: swap, FS: "swap", Label: "swap", Type: gptTypeSwap,
			Name: "swap", UUID: fsUUID(seed, "fs/3")}},
	}
	if err := b.createDisk(); err != nil {
		return err
	}
	if err := b.sgdisk(); err != nil {
		return err
	}
	ps := b.info.Parts
	rootPI, espPI, swapPI := &ps[1], &ps[0], &ps[2]
	fstab := fmt.Sprintf("# /etc/fstab: static file system information.\nUUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /boot/efi vfat umask=0077 0 1\nUUID=%s none swap sw 0 0\n",
		rootPI.UUID, espPI.UUID, swapPI.UUID)
	if err := b.buildExt(rootPI, b.rootExt(rootPI, b.fileBudget(root, 100), fstab)); err != nil {
		return err
	}
	if err := b.buildFAT(espPI, fatPlan{bits: 32, fill: func(w *treeWriter) error {
		return espTree(w, rootPI.UUID)
	}}); err != nil {
		return err
	}
	if err := b.buildSwap(swapPI); err != nil {
		return err
	}
	// GPT entries end at LBA 34 with the usual 128 entries.
	b.info.Pattern = []Range{{0, 440}, {34 * 512, start - 34*512}}
	return writePattern(b.disk, b.info.Pattern)
}

// sgdisk writes the GPT planned in b.info with fixed GUIDs.
func (b *builder) sgdisk() error {
	args := []string{"-o", "-U", b.info.DiskGUID}
	for i := range b.info.Parts {
		p := &b.info.Parts[i]
		n := strconv.Itoa(p.Number)
		p.GUID = seededUUID(b.spec.Seed, "part-guid/"+n)
		args = append(args,
			"-n", fmt.Sprintf("%s:%d:%d", n, p.Start/512, (p.Start+p.Size)/512-1),
			"-t", n+":"+p.Type,
			"-c", n+":"+p.Name,
			"-u", n+":"+p.GUID)
	}
	_, err := run(b.ctx, "sgdisk", append(args, b.disk)...)
	return err
}

func (b *builder) mbr() error {
	size := b.spec.Size
	free := 8 * mib
	if size >= gib {
		free = min(alignDown(size/32, mib), 256*mib)
	}
	start := mib
	p1 := alignDown((size-start-free)*4/10, mib)
	extStart := start + p1
	extSize := size - free - extStart
	fat := max(48*mib, alignDown(extSize/3, mib))
	data := extSize - 2*mib - fat // each logical partition is preceded by 1 MiB holding its EBR
	if p1 < 64*mib || data < 32*mib {
		return fmt.Errorf("%w: mbr needs at least 220 MiB, have %d MiB", ErrTooSmall, size>>20)
	}
	seed := b.spec.Seed
	b.info.Table = "mbr"
	b.info.MBRSignature = seededHex32(seed, "mbr-signature")
	b.info.Parts = []PartInfo{
		{Part: Part{Number: 1, Start: start, Size: p1, FS: "ext4", Label: "root", Type: "83", UUID: fsUUID(seed, "fs/1")}},
		{Part: Part{Number: 2, Start: extStart, Size: extSize, FS: "extended", Type: "5"}},
		{Part: Part{Number: 5, Start: extStart + mib, Size: data, FS: "ext2", Label: "data", Type: "83", UUID: fsUUID(seed, "fs/5")}},
		{Part: Part{Number: 6, Start: extStart + 2*mib + data, Size: fat, FS: "fat32", Label: "SHARED", Type: "c", UUID: fatSerial(seed, "fs/6")}},
	}
	if err := b.createDisk(); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "label: dos\nlabel-id: 0x%s\nunit: sectors\n\n", strings.ToLower(b.info.MBRSignature))
	for _, p := range b.info.Parts {
		fmt.Fprintf(&sb, "start=%d, size=%d, type=%s", p.Start/512, p.Size/512, p.Type)
		if p.Number == 1 {
			sb.WriteString(", bootable")
		}
		sb.WriteString("\n")
	}
	if err := runStdin(b.ctx, sb.String(), "sfdisk", "-q", "--no-reread", "--no-tell-kernel", b.disk); err != nil {
		return err
	}
	ps := b.info.Parts
	rootPI, dataPI, fatPI := &ps[0], &ps[2], &ps[3]
	fstab := fmt.Sprintf("# /etc/fstab: static file system information.\nUUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /srv ext2 defaults 0 2\nUUID=%s /mnt/shared vfat defaults 0 0\n",
		rootPI.UUID, dataPI.UUID, fatPI.UUID)
	if err := b.buildExt(rootPI, b.rootExt(rootPI, b.fileBudget(p1, 60), fstab)); err != nil {
		return err
	}
	dataBudget := b.fileBudget(data, 25)
	if err := b.buildExt(dataPI, extPlan{
		fstype:   "ext2",
		mkfsArgs: []string{"-b", "4096", "-i", "16384", "-I", "256"},
		fill:     func(w *treeWriter) error { return synthData(w, dataBudget) },
		stale:    dataPI.Size / 8,
	}); err != nil {
		return err
	}
	fatBudget := b.fileBudget(fat, 15)
	if err := b.buildFAT(fatPI, fatPlan{bits: 32, fill: func(w *treeWriter) error {
		return fatTree(w, fatBudget, 6)
	}}); err != nil {
		return err
	}
	b.info.Pattern = []Range{{0, 440}, {512, start - 512}}
	return writePattern(b.disk, b.info.Pattern)
}

func (b *builder) bare() error {
	size := b.spec.Size
	if size < 32*mib {
		return fmt.Errorf("%w: bare needs at least 32 MiB", ErrTooSmall)
	}
	b.info.Table = "none"
	b.info.Parts = []PartInfo{{Part: Part{Number: 0, Start: 0, Size: size, FS: "ext4", Label: "bare", UUID: fsUUID(b.spec.Seed, "fs/0")}}}
	if err := b.createDisk(); err != nil {
		return err
	}
	pi := &b.info.Parts[0]
	fstab := fmt.Sprintf("UUID=%s / ext4 defaults 0 1\n", pi.UUID)
	return b.buildExt(pi, b.rootExt(pi, b.fileBudget(size, 100), fstab))
}
