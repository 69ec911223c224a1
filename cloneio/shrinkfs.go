package cloneio

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/fat"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/fsdrivers/swap"
)

// Per filesystem: how small it can get (measure), how to shrink it on the
// overlay (resize), and what must change in it when its partition moves
// (moveFixups). The boot-method rules that pin partitions are in pin.

const gptTypeBIOSBoot = "21686148-6449-6E6F-744E-656564454649" // "Hah!IdontNeedEFI"

// shrinkKind is how a filesystem type is shrunk: "ext", "fat", "ntfs",
// "swap", or "" (it keeps its size).
func shrinkKind(fsType string) string {
	switch fsType {
	case "ext2", "ext3", "ext4":
		return "ext"
	case "fat12", "fat16", "fat32":
		return "fat"
	case "ntfs", "swap":
		return fsType
	}
	return ""
}

// bootLoaderMarks are strings a boot loader that records absolute disk
// sectors leaves in a boot sector.
var bootLoaderMarks = []string{"GRUB", "LILO", "SYSLINUX", "EXTLINUX", "ISOLINUX"}

// pin marks the partitions that must keep their place and size, with the
// reason, and every partition before a pinned one.
func (s *Shrinker) pin() error {
	sec0 := make([]byte, 512)
	if err := readFull(s.ovl, sec0, 0); err != nil {
		return fmt.Errorf("cloneio: shrink: read sector 0: %w", err)
	}
	pinAt := func(i int, why string) {
		if !s.parts[i].pinned {
			s.parts[i].pinned, s.parts[i].Fixed = true, why
		}
	}
	if bytes.Equal(sec0[6:10], []byte("LILO")) {
		for i := range s.parts {
			pinAt(i, "LILO in the MBR loads its map by absolute sectors")
		}
	}
	// GRUB 2's boot.img keeps the sector of core.img at 0x5c. In the gap
	// before the first partition (or a BIOS boot partition) is fine; inside
	// a partition (a blocklist install) that partition cannot move.
	if bytes.Contains(sec0[:440], []byte("GRUB")) {
		lba := int64(binary.LittleEndian.Uint64(sec0[0x5c:]))
		off := lba * int64(s.ss)
		for i, p := range s.parts {
			if !p.Extended && off >= p.OldStart && off < p.OldStart+p.OldSize && off >= s.first {
				pinAt(i, fmt.Sprintf("GRUB's boot code loads core.img from sector %d inside it", lba))
			}
		}
	}
	for i := range s.parts {
		p := &s.parts[i]
		if p.Extended {
			continue
		}
		dp := s.diskPart(p.Number)
		if s.disk.Table.Kind == parttable.KindGPT && strings.EqualFold(dp.Type, gptTypeBIOSBoot) {
			pinAt(i, "a BIOS boot partition: GRUB's boot code loads it by absolute sector")
			continue
		}
		vbr := make([]byte, 1024)
		if err := readFull(s.ovl, vbr, p.OldStart); err == nil {
			for _, m := range bootLoaderMarks {
				if bytes.Contains(vbr, []byte(m)) {
					pinAt(i, "a "+m+" boot loader in its boot sector records absolute sectors")
					break
				}
			}
		}
		// Windows on an MBR disk finds its boot and system volumes by disk
		// signature and partition offset (BCD): moving them stops it booting.
		if p.kind == "ntfs" && s.disk.Table.Kind == parttable.KindMBR {
			if fsys, ok := dp.Volume.(fsdrivers.Filesystem); ok {
				for _, name := range []string{"bootmgr", "Windows/System32"} {
					if _, err := fs.Stat(fsys, name); err == nil {
						pinAt(i, "a Windows volume on an MBR disk: its boot configuration records the partition's offset")
						break
					}
				}
			}
		}
	}
	last := -1
	for i, p := range s.parts {
		if p.pinned {
			last = i
		}
	}
	for i := 0; i < last; i++ {
		if !s.parts[i].Extended {
			pinAt(i, fmt.Sprintf("lies before partition %d, which cannot move", s.parts[last].Number))
		}
	}
	return nil
}

func (s *Shrinker) diskPart(n int) *disk.Part {
	for i := range s.disk.Parts {
		if s.disk.Parts[i].Number == n {
			return &s.disk.Parts[i]
		}
	}
	return nil
}

var (
	resize2fsMin = regexp.MustCompile(`Estimated minimum size of the filesystem: (\d+)`)
	ntfsMin      = regexp.MustCompile(`You might resize at (\d+) bytes`)
)

// measure sets p's MinSize: its filesystem's smallest size, rounded up to
// whole MiB with a little to spare, or its size when it cannot shrink
// (Fixed says why).
func (s *Shrinker) measure(ctx context.Context, p *ShrinkPart) error {
	if p.Extended {
		return nil
	}
	fixed := func(why string) error {
		p.MinSize, p.scale = p.OldSize, false
		if p.Fixed == "" {
			p.Fixed = why
		}
		return nil
	}
	if p.pinned {
		return fixed(p.Fixed)
	}
	var min int64
	switch p.kind {
	case "ext":
		if s.dir == "" {
			return fixed("ext filesystems are shrunk with resize2fs on files the caller must expose")
		}
		if err := needTools("e2fsck", "resize2fs", "debugfs"); err != nil {
			return fixed(err.Error())
		}
		file := s.partFile(p.Number)
		// resize2fs wants a freshly checked filesystem; a journal to replay
		// is replayed here, on the overlay. Exit 1 and 2 mean "fixed".
		if out, err := exec.CommandContext(ctx, "e2fsck", "-fy", file).CombinedOutput(); err != nil {
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() >= 4 {
				return fixed(fmt.Sprintf("e2fsck -fy failed (%v: %s)", err, lastLines(out)))
			}
		}
		out, err := exec.CommandContext(ctx, "resize2fs", "-P", file).CombinedOutput()
		m := resize2fsMin.FindSubmatch(out)
		if err != nil || m == nil {
			return fixed(fmt.Sprintf("resize2fs -P: %v: %s", err, lastLines(out)))
		}
		blocks, _ := strconv.ParseInt(string(m[1]), 10, 64)
		sb := make([]byte, 4)
		if err := readFull(s.ovl, sb, p.OldStart+1024+24); err != nil {
			return err
		}
		min = blocks * (1024 << binary.LittleEndian.Uint32(sb))
		min += min / 200 // resize2fs -P is an estimate: 0.5% to spare
	case "fat":
		sec, err := s.ovl.Section(p.OldStart, p.OldSize)
		if err != nil {
			return err
		}
		if min, err = fat.MinSize(sec, p.OldSize); err != nil {
			return fixed(err.Error())
		}
	case "ntfs":
		if s.dir == "" {
			return fixed("NTFS is shrunk with ntfsresize on files the caller must expose")
		}
		if err := needTools("ntfsresize"); err != nil {
			return fixed(err.Error() + " (apt-get install ntfs-3g)")
		}
		out, err := exec.CommandContext(ctx, "ntfsresize", "--info", "--force", "--no-progress-bar", s.partFile(p.Number)).CombinedOutput()
		m := ntfsMin.FindSubmatch(out)
		if m == nil {
			return fixed(fmt.Sprintf("ntfsresize --info: %v: %s", err, lastLines(out)))
		}
		min, _ = strconv.ParseInt(string(m[1]), 10, 64)
	case "swap":
		min = swap.MinSize(4096)
	default:
		if p.FS == "" {
			return fixed("no filesystem recognised: copied as it is")
		}
		return fixed(p.FS + " cannot be shrunk")
	}
	p.MinSize = alignUp(min, shrinkAlign)
	if p.MinSize >= p.OldSize {
		return fixed("its filesystem is full")
	}
	p.scale = true
	return nil
}

// dirTimes is the modification time of every directory of p's ext
// filesystem on the overlay, by inode-independent path.
func (s *Shrinker) dirTimes(p ShrinkPart) (map[string]dirTime, error) {
	v, err := fsdrivers.Probe(io.NewSectionReader(s.ovl, p.OldStart, p.OldSize), p.OldSize, s.opt.Drivers)
	if err != nil {
		return nil, err
	}
	fsys, ok := v.(fsdrivers.Filesystem)
	if !ok {
		return nil, fmt.Errorf("%s: cannot list its directories", v.Type())
	}
	m := map[string]dirTime{}
	err = fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var ino uint64
		if st := fsdrivers.StatOf(fi); st != nil {
			ino = st.Ino
		}
		m[name] = dirTime{ino, fi.ModTime()}
		return nil
	})
	return m, err
}

type dirTime struct {
	ino   uint64
	mtime time.Time
}

// restoreDirTimes puts back the directory modification times resize2fs
// changed: it stamps every directory whose entries it rewrote for the
// inodes it renumbered (moved out of the groups that go away). debugfs
// sets them by inode number, so no name needs quoting.
func (s *Shrinker) restoreDirTimes(ctx context.Context, p ShrinkPart, before map[string]dirTime) error {
	after, err := s.dirTimes(ShrinkPart{OldStart: p.OldStart, OldSize: p.NewSize})
	if err != nil {
		return err
	}
	var script strings.Builder
	for name, a := range after {
		b, ok := before[name]
		if !ok || a.mtime.Equal(b.mtime) || a.ino == 0 {
			continue
		}
		sec, nsec := b.mtime.Unix(), int64(b.mtime.Nanosecond())
		epoch := (sec - int64(int32(uint32(sec)))) >> 32 & 3
		fmt.Fprintf(&script, "sif <%d> mtime @%d\nsif <%d> mtime_extra %d\n", a.ino, sec, a.ino, nsec<<2|epoch)
	}
	if script.Len() == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", s.partFile(p.Number))
	cmd.Stdin = strings.NewReader(script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs (directory times): %v: %s", err, lastLines(out))
	}
	return nil
}

func needTools(names ...string) error {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			return fmt.Errorf("%s is not installed", n)
		}
	}
	return nil
}

// resize shrinks p's filesystem on the overlay to p.NewSize bytes. It
// still lies at p.OldStart there; the composed disk moves it.
func (s *Shrinker) resize(ctx context.Context, p ShrinkPart) error {
	if s.opt.Logger != nil {
		s.opt.Logger.Info("shrinking", "partition", p.Number, "fs", p.FS, "from", p.OldSize, "to", p.NewSize)
	}
	sec, err := s.ovl.Section(p.OldStart, p.OldSize)
	if err != nil {
		return err
	}
	switch p.kind {
	case "ext":
		before, err := s.dirTimes(p)
		if err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, "resize2fs", s.partFile(p.Number), fmt.Sprintf("%dK", p.NewSize/1024)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("resize2fs: %v: %s", err, lastLines(out))
		}
		return s.restoreDirTimes(ctx, p, before)
	case "fat":
		return fat.Resize(sec, p.OldSize, p.NewSize)
	case "ntfs":
		cmd := exec.CommandContext(ctx, "ntfsresize", "--force", "--force", "--no-progress-bar", "-s", strconv.FormatInt(p.NewSize, 10), s.partFile(p.Number))
		cmd.Stdin = strings.NewReader("y\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ntfsresize: %v: %s", err, lastLines(out))
		}
	case "swap":
		return swap.Resize(sec, p.OldSize, p.NewSize)
	default:
		return fmt.Errorf("%s cannot be shrunk", p.FS)
	}
	return nil
}

// fixups updates what a filesystem records of its partition's place and
// size after it was shrunk or moved: the "hidden sectors" of FAT and NTFS
// boot sectors (and of the FAT32 backup), which boot code uses to find the
// volume on the disk; and NTFS's backup boot sector, which ntfsresize does
// not write at the new end: it goes in the sector after the volume and in
// the partition's last sector, where Windows and ntfs-3g look for it.
func (s *Shrinker) fixups(p ShrinkPart) error {
	if p.kind != "fat" && p.kind != "ntfs" {
		return nil
	}
	sec, err := s.ovl.Section(p.OldStart, p.OldSize)
	if err != nil {
		return err
	}
	bs := make([]byte, 512)
	if err := readFull(sec, bs, 0); err != nil {
		return err
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	if bps < 512 || bps > 4096 {
		return nil
	}
	oldH, newH := uint32(p.OldStart/int64(s.ss)), uint32(p.NewStart/int64(s.ss))
	patch := func(b []byte) bool {
		if p.NewStart == p.OldStart || binary.LittleEndian.Uint32(b[28:]) != oldH {
			return false // not this partition's offset (0 on some disks): leave it
		}
		binary.LittleEndian.PutUint32(b[28:], newH)
		return true
	}
	first := make([]byte, bps)
	if err := readFull(sec, first, 0); err != nil {
		return err
	}
	if patch(first) {
		if _, err := sec.WriteAt(first, 0); err != nil {
			return err
		}
	}
	switch p.kind {
	case "fat":
		if string(bs[82:90]) != "FAT32   " {
			return nil
		}
		b := int64(binary.LittleEndian.Uint16(bs[50:]))
		if b == 0 || b == 0xFFFF {
			return nil
		}
		bak := make([]byte, bps)
		if err := readFull(sec, bak, b*bps); err != nil {
			return err
		}
		if patch(bak) {
			_, err = sec.WriteAt(bak, b*bps)
		}
		return err
	default: // ntfs
		total := int64(binary.LittleEndian.Uint64(bs[0x28:]))
		for _, off := range []int64{total * bps, p.NewSize/bps*bps - bps} {
			if off < total*bps || off+bps > min(p.OldSize, p.NewSize) {
				continue
			}
			if _, err := sec.WriteAt(first, off); err != nil {
				return err
			}
		}
		return nil
	}
}
