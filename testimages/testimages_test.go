package testimages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// tool runs an oracle command and returns its stdout.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(out)
}

// sfdiskLayout reads the table with sfdisk -J directly (not through
// Partitions), so the layout check does not trust our own parsing.
func sfdiskLayout(t *testing.T, path string) sfdiskJSON {
	t.Helper()
	var sj sfdiskJSON
	if err := json.Unmarshal([]byte(tool(t, "sfdisk", "-J", path)), &sj); err != nil {
		t.Fatal(err)
	}
	return sj
}

type wantPart struct {
	num      int
	typ      string
	fs       string
	label    string
	bootable bool
}

func TestGenerators(t *testing.T) {
	tests := []struct {
		kind     string
		gen      func(context.Context, string, Spec) (string, error)
		spec     Spec
		table    string // sfdisk label
		parts    []wantPart
		firstOff int64
		pattern  bool
	}{
		{
			kind: "gpt", gen: GPTDisk, table: "gpt", firstOff: mib, pattern: true,
			parts: []wantPart{
				{1, gptTypeESP, "fat32", "ESP", false},
				{2, gptTypeRootX8664, "ext4", "root", false},
				{3, gptTypeSwap, "swap", "swap", false},
			},
		},
		{
			kind: "mbr", gen: MBRDisk, table: "dos", firstOff: mib, pattern: true,
			parts: []wantPart{
				{1, "83", "ext4", "root", true},
				{2, "5", "extended", "", false},
				{5, "83", "ext2", "data", false},
				{6, "c", "fat32", "SHARED", false},
			},
		},
		{
			kind: "bare", gen: BareFS,
			parts: []wantPart{{0, "", "ext4", "bare", false}},
		},
		{
			kind: "gpt-userspace", gen: GPTDisk, spec: Spec{UserSpace: true}, table: "gpt", firstOff: mib, pattern: true,
			parts: []wantPart{
				{1, gptTypeESP, "fat32", "ESP", false},
				{2, gptTypeRootX8664, "ext4", "root", false},
				{3, gptTypeSwap, "swap", "swap", false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			kind, _, _ := strings.Cut(tc.kind, "-")
			Require(t, kind)
			ctx := testCtx(t)
			dir := t.TempDir()
			path, err := tc.gen(ctx, dir, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			in, err := ReadInfo(path)
			if err != nil {
				t.Fatal(err)
			}
			if in.Kernel != (haveKernel() && !tc.spec.UserSpace) {
				t.Errorf("Info.Kernel = %v", in.Kernel)
			}
			// No scratch files, mounts or loop devices left behind.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 2 {
				t.Errorf("dir holds %d entries, want disk and sidecar", len(ents))
			}
			if haveKernel() {
				if out := tool(t, "losetup", "-j", path); out != "" {
					t.Errorf("loop device left attached: %s", out)
				}
			}

			// Layout, as the field's tools see it.
			if tc.table != "" {
				sj := sfdiskLayout(t, path)
				if sj.PartitionTable.Label != tc.table {
					t.Fatalf("label %q, want %q", sj.PartitionTable.Label, tc.table)
				}
				if got := len(sj.PartitionTable.Partitions); got != len(tc.parts) {
					t.Fatalf("%d partitions, want %d", got, len(tc.parts))
				}
				for i, sp := range sj.PartitionTable.Partitions {
					w := tc.parts[i]
					if !strings.EqualFold(sp.Type, w.typ) || sp.Bootable != w.bootable {
						t.Errorf("partition %d: type %s bootable %v, want %s %v", i+1, sp.Type, sp.Bootable, w.typ, w.bootable)
					}
					if sp.Start*512%mib != 0 {
						t.Errorf("partition %d starts at sector %d, not MiB aligned", i+1, sp.Start)
					}
				}
				if first := sj.PartitionTable.Partitions[0].Start * 512; first != tc.firstOff {
					t.Errorf("first partition at %d, want %d", first, tc.firstOff)
				}
			} else if _, err := run(ctx, "sfdisk", "-J", path); err == nil {
				t.Errorf("bare filesystem has a partition table")
			}
			parts, err := Partitions(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) != len(tc.parts) {
				t.Fatalf("Partitions: %d, want %d", len(parts), len(tc.parts))
			}
			for i, p := range parts {
				w := tc.parts[i]
				if p.Number != w.num || p.FS != w.fs || p.Label != w.label {
					t.Errorf("Partitions[%d] = %+v, want number %d fs %s label %q", i, p, w.num, w.fs, w.label)
				}
			}
			for i, p := range parts {
				if i > 0 && p.FS != "extended" && parts[i-1].FS != "extended" && p.Start < parts[i-1].Start+parts[i-1].Size {
					t.Errorf("partition %d overlaps the previous one", p.Number)
				}
			}

			// Every filesystem fscks clean (Validate runs e2fsck -fn,
			// fsck.fat -n, sgdisk -v / sfdisk -V).
			if _, err := Validate(ctx, path); err != nil {
				t.Fatal(err)
			}

			// Boot pattern in the MBR boot code and the gap; the MBR
			// signature intact.
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.pattern {
				if !bytes.Equal(raw[:440], PatternAt(0, 440)) || !bytes.Contains(raw[:440], []byte(BootPattern)) {
					t.Errorf("boot code area lacks the pattern: %q", raw[:32])
				}
				if raw[510] != 0x55 || raw[511] != 0xaa {
					t.Errorf("MBR signature broken")
				}
				gapStart := int64(512)
				if tc.table == "gpt" {
					gapStart = 34 * 512
				}
				if !bytes.Equal(raw[gapStart:tc.firstOff], PatternAt(gapStart, int(tc.firstOff-gapStart))) {
					t.Errorf("gap before the first partition lacks the pattern")
				}
				if err := CheckPattern(path); err != nil {
					t.Error(err)
				}
			}

			// Files went in: thousands in the root filesystem.
			var files int
			for _, p := range in.Parts {
				files += p.Files
			}
			if files < 1000 {
				t.Errorf("only %d files", files)
			}
		})
	}
}

// TestDeterministic builds the same user-space disk twice: every byte must
// match (mke2fs runs with a fake clock, FAT with --invariant).
func TestDeterministic(t *testing.T) {
	Require(t, "gpt")
	ctx := testCtx(t)
	spec := Spec{UserSpace: true, Seed: 7, Files: FileSource{MaxBytes: 4 * mib}}
	a, err := GPTDisk(ctx, t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GPTDisk(ctx, t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, "cmp", a, b); err != nil {
		t.Errorf("two builds differ: %v", err)
	}
	spec.Seed = 8
	c, err := GPTDisk(ctx, t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, "cmp", "-s", a, c); err == nil {
		t.Errorf("different seeds built identical disks")
	}
}

// TestKernelStaleData checks that the kernel build leaves the deleted
// file's data in free blocks: the random block pattern must still be on the
// disk although no file holds it.
func TestKernelStaleData(t *testing.T) {
	Require(t, "bare", "kernel")
	ctx := testCtx(t)
	path, err := BareFS(ctx, t.TempDir(), Spec{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := ReadInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	if in.Parts[0].DeletedBytes < mib {
		t.Fatalf("deleted bytes %d", in.Parts[0].DeletedBytes)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The first MiB of the deleted file's content.
	want := make([]byte, 4096)
	rngFor := newStaleReader(0)
	rngFor.Read(want)
	if !bytes.Contains(raw, want) {
		t.Errorf("stale data of the deleted file not found on the disk")
	}
	// And e2fsck's view: no file holds it (the fs is clean and the file is
	// gone).
	out := tool(t, "debugfs", "-R", "ls -l /", path)
	if strings.Contains(out, "deleted") {
		t.Errorf("deleted file still listed: %s", out)
	}
}

func TestCached(t *testing.T) {
	Require(t, "bare")
	t.Setenv("DIMG_TESTIMAGES_CACHE", t.TempDir())
	ctx := testCtx(t)
	spec := Spec{Files: FileSource{MaxBytes: 2 * mib}}
	p1, err := Cached(ctx, "bare", spec)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, err := Cached(ctx, "bare", Spec{Size: defaultBareSize, Files: FileSource{MaxBytes: 2 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(p2)
	if p1 != p2 || !os.SameFile(st1, st2) {
		t.Errorf("default size and explicit default size built twice: %s, %s", p1, p2)
	}
	if _, err := Cached(ctx, "nope", spec); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "copy.img")
	if err := CopyDisk(p1, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, "cmp", p1, dst); err != nil {
		t.Errorf("copy differs: %v", err)
	}
	if _, err := ReadInfo(dst); err != nil {
		t.Error(err)
	}
}

func TestTooSmall(t *testing.T) {
	Require(t, "gpt")
	for _, gen := range []func(context.Context, string, Spec) (string, error){GPTDisk, MBRDisk, BareFS} {
		_, err := gen(testCtx(t), t.TempDir(), Spec{Size: 16 * mib})
		if !errors.Is(err, ErrTooSmall) {
			t.Errorf("16 MiB disk: %v, want ErrTooSmall", err)
		}
	}
}

func TestCanceled(t *testing.T) {
	Require(t, "gpt")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := GPTDisk(ctx, dir, Spec{}); err == nil {
		t.Fatal("canceled build succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("canceled build left %d entries", len(ents))
	}
}

func TestHostFiles(t *testing.T) {
	Require(t, "bare")
	src := t.TempDir()
	for _, f := range []string{"a/one.txt", "a/b/two.bin", "c/three"} {
		os.MkdirAll(filepath.Join(src, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(src, f), bytes.Repeat([]byte(f), 1000), 0o644)
	}
	os.Symlink("one.txt", filepath.Join(src, "a/link"))
	path, err := BareFS(testCtx(t), t.TempDir(), Spec{Files: FileSource{HostDirs: []string{src}}})
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(src, "/")
	out := tool(t, "debugfs", "-R", "cat /"+rel+"/a/b/two.bin", path)
	if out != strings.Repeat("a/b/two.bin", 1000) {
		t.Errorf("copied file content differs (%d bytes)", len(out))
	}
	out = tool(t, "debugfs", "-R", "stat /"+rel+"/a/link", path)
	if !strings.Contains(out, `Fast link dest: "one.txt"`) {
		t.Errorf("symlink not copied: %s", out)
	}
}

func TestParseHelpers(t *testing.T) {
	tests := []struct {
		node, dev string
		want      int
		ok        bool
	}{
		{"disk.img3", "disk.img", 3, true},
		{"/dev/loop0p12", "/dev/loop0", 12, true},
		{"disk.img", "disk.img", 0, false},
		{"other", "disk.img", 0, false},
	}
	for _, tc := range tests {
		got, err := nodeNumber(tc.node, tc.dev)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("nodeNumber(%q) = %d, %v", tc.node, got, err)
		}
	}
	if !isExtendedType("5") || !isExtendedType("0x0F") || isExtendedType("83") {
		t.Error("isExtendedType")
	}
}

func TestFeatureDisk(t *testing.T) {
	Require(t, "feature", "filefrag", "getfattr", "mshowfat", "mattrib")
	ctx := testCtx(t)
	dir := t.TempDir()
	path, err := FeatureDisk(ctx, dir, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	sj := sfdiskLayout(t, path)
	wantTypes := []string{gptTypeLinuxFS, gptTypeLinuxFS, gptTypeBasicData, gptTypeBasicData, gptTypeBasicData, gptTypeBasicData, gptTypeLinuxFS, gptTypeSwap}
	if len(sj.PartitionTable.Partitions) != len(wantTypes) {
		t.Fatalf("%d partitions, want %d", len(sj.PartitionTable.Partitions), len(wantTypes))
	}
	for i, p := range sj.PartitionTable.Partitions {
		if p.Type != wantTypes[i] {
			t.Errorf("partition %d type %s, want %s", i+1, p.Type, wantTypes[i])
		}
	}
	parts, err := Validate(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	wantFS := []string{"ext4", "ext4", "fat32", "fat16", "fat12", "ntfs", "", "swap"}
	for i, p := range parts {
		if p.FS != wantFS[i] {
			t.Errorf("partition %d: fs %q, want %q", p.Number, p.FS, wantFS[i])
		}
	}
	if err := CheckPattern(path); err != nil {
		t.Error(err)
	}

	t.Run("ext4-kernel", func(t *testing.T) {
		mnt := mountRO(t, path, parts[0], "ext4")
		ents, err := os.ReadDir(filepath.Join(mnt, FeatBigDir))
		if err != nil || len(ents) != FeatBigDirEntries {
			t.Errorf("bigdir: %d entries, %v", len(ents), err)
		}
		for _, l := range []string{FeatShortSymlink, FeatLongSymlink, FeatAbsSymlink} {
			target, err := os.Readlink(filepath.Join(mnt, l))
			if err != nil {
				t.Fatal(err)
			}
			if l == FeatLongSymlink && len(target) <= 60 || l != FeatLongSymlink && len(target) >= 60 {
				t.Errorf("%s -> %q: wrong length for its kind", l, target)
			}
			if l != FeatAbsSymlink {
				b, err := os.ReadFile(filepath.Join(mnt, filepath.Dir(l), target))
				if err != nil || string(b) != "hello, dimg\n" {
					t.Errorf("%s does not reach %s: %q %v", l, FeatHello, b, err)
				}
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, FeatHardLinks), &st); err != nil || st.Nlink != 3 {
			t.Errorf("hard links: nlink %d, %v", st.Nlink, err)
		}
		if err := unix.Lstat(filepath.Join(mnt, FeatSparse), &st); err != nil || st.Size != gib || st.Blocks*512 > int64(len(FeatSparseIslands))*64*kib+64*kib {
			t.Errorf("sparse: size %d, allocated %d bytes, %v", st.Size, st.Blocks*512, err)
		}
		out := tool(t, "filefrag", filepath.Join(mnt, FeatFragmented))
		if strings.Contains(out, ": 1 extent") {
			t.Errorf("fragmented file is not: %s", out)
		}
		val := make([]byte, 64)
		if n, err := unix.Lgetxattr(filepath.Join(mnt, FeatXattrFile), "user.comment", val); err != nil || string(val[:n]) != "hello xattr" {
			t.Errorf("user.comment: %q %v", val[:max(n, 0)], err)
		}
		if n, err := unix.Lgetxattr(filepath.Join(mnt, FeatXattrFile), "security.selinux", val); err != nil || n != 27 {
			t.Errorf("security.selinux: %d %v", n, err)
		}
		for _, s := range []struct {
			rel  string
			mode uint32
		}{{FeatFifo, unix.S_IFIFO}, {FeatCharDev, unix.S_IFCHR}, {FeatBlockDev, unix.S_IFBLK}, {FeatSocket, unix.S_IFSOCK}} {
			if err := unix.Lstat(filepath.Join(mnt, s.rel), &st); err != nil || st.Mode&unix.S_IFMT != s.mode {
				t.Errorf("%s: mode %o, %v", s.rel, st.Mode, err)
			}
		}
		if err := unix.Lstat(filepath.Join(mnt, FeatCharDev), &st); err == nil && st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("%s: rdev %x", FeatCharDev, st.Rdev)
		}
		deep := FeatDeepLeaf
		for i := 1; i <= FeatDeepLevels; i++ {
			deep += fmt.Sprintf("/d%02d", i)
		}
		if _, err := os.Stat(filepath.Join(mnt, deep, "leaf.txt")); err != nil {
			t.Error(err)
		}
		if err := unix.Lstat(filepath.Join(mnt, "times/nanoseconds"), &st); err != nil || st.Mtim.Nsec != 123456789 {
			t.Errorf("nanosecond mtime: %v %v", st.Mtim, err)
		}
		if err := unix.Lstat(filepath.Join(mnt, "times/before-1970"), &st); err != nil || st.Mtim.Sec != -300000000 {
			t.Errorf("pre-1970 mtime: %v %v", st.Mtim, err)
		}
	})

	t.Run("ext4-inline", func(t *testing.T) {
		dev := fmt.Sprintf("%s?offset=%d", path, parts[1].Start)
		out := tool(t, "debugfs", "-R", "stats", dev)
		if !strings.Contains(out, "inline_data") {
			t.Errorf("no inline_data feature")
		}
		out = tool(t, "debugfs", "-R", "stat /small/f020.txt", dev)
		if !strings.Contains(out, "Size of inline data") {
			t.Errorf("small file not inline: %s", out)
		}
		out = tool(t, "debugfs", "-R", "stat /dirs/d03", dev)
		if !strings.Contains(out, "Size of inline data") {
			t.Errorf("small dir not inline: %s", out)
		}
	})

	for i, fat := range []string{"fat32", "fat16", "fat12"} {
		t.Run(fat, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), fat)
			p := parts[2+i]
			if err := extractRange(path, p.Start, p.Size, img); err != nil {
				t.Fatal(err)
			}
			out := tool(t, "mdir", "-/", "-b", "-i", img, "::/")
			for _, n := range fatNames {
				if !strings.Contains(out, "::/"+n) {
					t.Errorf("%s: %q missing from mdir", fat, n)
				}
			}
			out = tool(t, "mshowfat", "-i", img, "::/frag/fragmented.bin")
			if strings.Count(out, "<") < 2 {
				t.Errorf("%s: fragmented.bin is contiguous: %s", fat, out)
			}
			out = tool(t, "mattrib", "-i", img, "::/attr/hidden.txt")
			if flags, _, _ := strings.Cut(out, "::"); !strings.Contains(flags, "H") {
				t.Errorf("%s: hidden attribute missing: %s", fat, out)
			}
		})
	}

	t.Run("ntfs", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "ntfs")
		if err := extractRange(path, parts[5].Start, parts[5].Size, img); err != nil {
			t.Fatal(err)
		}
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		tool(t, "ntfs-3g", "-o", "ro,streams_interface=xattr", img, mnt)
		t.Cleanup(func() { unmount(mnt) })
		attr := func(rel string) uint32 {
			b := make([]byte, 4)
			if _, err := unix.Getxattr(filepath.Join(mnt, rel), "system.ntfs_attrib_be", b); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		}
		if a := attr("compressed/text.txt"); a&0x800 == 0 {
			t.Errorf("compressed/text.txt attributes %#x, not compressed", a)
		}
		if a := attr("sparse/sparse.bin"); a&0x200 == 0 {
			t.Errorf("sparse/sparse.bin attributes %#x, not sparse", a)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, "small/resident.txt"), &st); err != nil || st.Nlink != 2 {
			t.Errorf("hard link: nlink %d %v", st.Nlink, err)
		}
		val := make([]byte, 64)
		if n, err := unix.Getxattr(filepath.Join(mnt, "ads.txt"), "user.Zone.Identifier", val); err != nil || !strings.HasPrefix(string(val[:n]), "[ZoneTransfer]") {
			t.Errorf("alternate data stream: %q %v", val[:max(n, 0)], err)
		}
		if target, err := os.Readlink(filepath.Join(mnt, "small/symlink")); err != nil || target != "resident.txt" {
			t.Errorf("symlink: %q %v", target, err)
		}
	})
}

// mountRO mounts a partition read-only through a loop device by offset.
func mountRO(t *testing.T, path string, p Part, fstype string) string {
	t.Helper()
	mnt := t.TempDir() // before the cleanup below, so it is removed after the unmount
	var cl cleanups
	t.Cleanup(func() {
		if err := cl.run(); err != nil {
			t.Error(err)
		}
	})
	dev, err := attachLoop(context.Background(), path, p.Start, p.Size)
	if err != nil {
		t.Fatal(err)
	}
	cl.push(func() error { return detachLoop(dev) })
	tool(t, "mount", "-t", fstype, "-o", "ro,noload", dev, mnt)
	cl.push(func() error { return unmount(mnt) })
	return mnt
}
