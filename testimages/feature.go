package testimages

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Feature disk partition sizes (the rest of Spec.Size stays free at the end).
const (
	featExt4Size    = 80 * mib
	featInlineSize  = 16 * mib
	featFAT32Size   = 40 * mib
	featFAT16Size   = 32 * mib
	featFAT12Size   = 8 * mib
	featNTFSSize    = 48 * mib
	featUnknownSize = 4 * mib
	featSwapSize    = 8 * mib
)

// Feature disk entries, relative to each filesystem's root, for reader
// tests to look up.
const (
	FeatBigDir        = "bigdir"            // 20,000 empty files, names of 1..255 bytes
	FeatBigDirEntries = 20000               //
	FeatShortSymlink  = "links/short"       // -> "../data/hello.txt" (fast symlink, < 60 bytes)
	FeatLongSymlink   = "links/long"        // -> a >60-byte relative path to data/hello.txt (block symlink)
	FeatAbsSymlink    = "links/absolute"    // -> "/data/hello.txt" (absolute: resolves inside the fs)
	FeatDangling      = "links/dangling"    // -> "nowhere/at/all"
	FeatHardLinks     = "hard/a"            // same inode as hard/b and hard/c (nlink 3)
	FeatSparse        = "sparse/big.sparse" // 1 GiB, data islands at FeatSparseIslands
	FeatTrailingHole  = "sparse/trailing-hole"
	FeatAllHole       = "sparse/all-hole"    // 10 MiB, no data blocks
	FeatFragmented    = "frag/a.bin"         // written interleaved with frag/b.bin, 4 KiB at a time
	FeatXattrFile     = "xattr/file"         // user.comment, user.empty, security.selinux
	FeatXattrBig      = "xattr/big"          // user.big of 3000 bytes (outside the inode)
	FeatEmptyFile     = "empty"              // 0 bytes
	FeatFifo          = "special/fifo"       //
	FeatCharDev       = "special/null"       // char 1:3
	FeatBlockDev      = "special/loop7"      // block 7:7
	FeatSocket        = "special/socket"     //
	FeatDeepLeaf      = "deep"               // deep/d01/d02/.../d40/leaf.txt
	FeatDeepLevels    = 40                   //
	FeatHello         = "data/hello.txt"     // "hello, dimg\n"
	FeatDataFile      = "data/random-5M.bin" // 5 MiB + 123 bytes of random data
)

// FeatSparseIslands are the offsets of the 64 KiB data islands in
// FeatSparse; the last island ends exactly at the 1 GiB file size.
var FeatSparseIslands = []int64{0, 300 * mib, 700*mib + 4096, gib - 64*kib}

// FeatureDisk builds dir/feature.img, a GPT disk with one partition per
// reader feature (it needs root, loop devices and FUSE):
//
//	1 ext4 "features" (4 KiB blocks), written by the kernel: FeatBigDir,
//	  short/long/absolute/dangling symlinks, hard links, a 1 GiB sparse file
//	  with data islands, a file with a trailing hole, a fragmented file
//	  (extent tree of depth 1), user.* and security.* xattrs (one outside the
//	  inode), an empty file, fifo, char and block devices, a socket, a deep
//	  tree, Unicode names, setuid/sticky modes, timestamps before 1970 and
//	  after 2038 and with nanoseconds.
//	2 ext4 "inline" (1 KiB blocks, -O inline_data): small files and dirs.
//	3 FAT32 "FAT32VOL", 4 FAT16 "FAT16VOL", 5 FAT12 "FAT12VOL": long and
//	  Unicode names, deep trees, empty files, hidden/system/read-only
//	  attributes, a file fragmented by deleting a file between others.
//	6 NTFS "ntfsvol" (mkntfs, filled through ntfs-3g): a resident small
//	  file, a large file, a sparse file, a compressed directory and file,
//	  hard link, symlink, alternate data stream, Unicode names.
//	7 random deterministic bytes: no filesystem any tool recognises.
//	8 swap "swap".
//
// Each partition's Notes in the Info sidecar name what it holds.
func FeatureDisk(ctx context.Context, dir string, spec Spec) (string, error) {
	if !haveKernel() || spec.UserSpace {
		return "", fmt.Errorf("%w: the feature disk needs kernel-written ext4 and ntfs-3g", ErrNeedRoot)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "", fmt.Errorf("%w: no /dev/fuse for ntfs-3g", ErrNeedRoot)
	}
	b, err := newBuilder(ctx, dir, "feature", spec, defaultFeatureSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.feature())
}

func (b *builder) feature() error {
	seed := b.spec.Seed
	type pp struct {
		size      int64
		fs, label string
		typ, uuid string
	}
	plan := []pp{
		{featExt4Size, "ext4", "features", gptTypeLinuxFS, fsUUID(seed, "fs/1")},
		{featInlineSize, "ext4", "inline", gptTypeLinuxFS, fsUUID(seed, "fs/2")},
		{featFAT32Size, "fat32", "FAT32VOL", gptTypeBasicData, fatSerial(seed, "fs/3")},
		{featFAT16Size, "fat16", "FAT16VOL", gptTypeBasicData, fatSerial(seed, "fs/4")},
		{featFAT12Size, "fat12", "FAT12VOL", gptTypeBasicData, fatSerial(seed, "fs/5")},
		{featNTFSSize, "ntfs", "ntfsvol", gptTypeBasicData, strings.ToUpper(seededHex32(seed, "fs/6") + seededHex32(seed, "fs/6b"))},
		{featUnknownSize, "", "", gptTypeLinuxFS, ""},
		{featSwapSize, "swap", "swap", gptTypeSwap, fsUUID(seed, "fs/8")},
	}
	off := mib
	for i, p := range plan {
		b.info.Parts = append(b.info.Parts, PartInfo{Part: Part{Number: i + 1, Start: off, Size: p.size,
			FS: p.fs, Label: p.label, Type: p.typ, Name: p.label, UUID: p.uuid}})
		off += p.size
	}
	if b.info.Parts[6].Name == "" {
		b.info.Parts[6].Name = "unknown"
	}
	if off+mib > b.spec.Size {
		return fmt.Errorf("%w: feature disk needs at least %d MiB", ErrTooSmall, (off+mib)>>20)
	}
	b.info.Table = "gpt"
	b.info.DiskGUID = seededUUID(seed, "disk-guid")
	if err := b.createDisk(); err != nil {
		return err
	}
	if err := b.sgdisk(); err != nil {
		return err
	}
	ps := b.info.Parts
	if err := b.buildExt(&ps[0], extPlan{
		fstype:   "ext4",
		mkfsArgs: []string{"-b", "4096", "-I", "256", "-N", "32768"},
		kernel:   func(ctx context.Context, mnt string, pi *PartInfo) error { return featureExt4(ctx, mnt, pi, seed) },
	}); err != nil {
		return err
	}
	if err := b.buildExt(&ps[1], extPlan{
		fstype:   "ext4",
		mkfsArgs: []string{"-b", "1024", "-I", "256", "-O", "inline_data", "-N", "4096"},
		kernel:   func(ctx context.Context, mnt string, pi *PartInfo) error { return featureInline(ctx, mnt, pi, seed) },
	}); err != nil {
		return err
	}
	for i, f := range []struct {
		bits, depth int
		budget      int64
	}{{32, 12, 12 * mib}, {16, 8, 8 * mib}, {12, 5, 2 * mib}} {
		pi := &ps[2+i]
		depth, budget := f.depth, f.budget
		if err := b.buildFAT(pi, fatPlan{bits: f.bits, fill: func(w *treeWriter) error {
			return fatTree(w, budget, depth)
		}, after: featureFAT}); err != nil {
			return err
		}
		pi.Notes = append(pi.Notes, "long and Unicode names: "+strings.Join(fatNames, " | "),
			fmt.Sprintf("deep tree: %d levels under \"level 0 — nível\"", depth),
			"empty file: \"empty file.txt\"; empty dir: \"Empty Folder\"",
			"attributes: attr/hidden.txt (H), attr/system.sys (S), attr/readonly.txt (R)",
			"fragmented: frag/fragmented.bin (filled a freed gap, then continued after frag/c.bin)")
	}
	if err := b.buildNTFS(&ps[5]); err != nil {
		return err
	}
	if err := b.buildRandom(&ps[6]); err != nil {
		return err
	}
	if err := b.buildSwap(&ps[7]); err != nil {
		return err
	}
	b.info.Pattern = []Range{{0, 440}, {34 * 512, mib - 34*512}}
	return writePattern(b.disk, b.info.Pattern)
}

// featureExt4 makes everything partition 1 promises, through the kernel.
func featureExt4(ctx context.Context, mnt string, pi *PartInfo, seed int64) error {
	w := newTreeWriter(ctx, mnt, seed, "feature-ext4")
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	note := func(format string, a ...any) { pi.Notes = append(pi.Notes, fmt.Sprintf(format, a...)) }

	if err := w.writeText(FeatHello, "hello, dimg\n", 0o644); err != nil {
		return err
	}
	if err := w.file(FeatDataFile, 5*mib+123, contentRandom, 0o644, 0); err != nil {
		return err
	}
	if err := w.file("data/text-1M.txt", mib, contentText, 0o644, 0); err != nil {
		return err
	}
	if err := w.file("data/binary-300K.bin", 300*kib+17, contentBinary, 0o755, 0); err != nil {
		return err
	}

	// A directory big enough for an htree index, names of every length.
	if err := w.mkdirAll(FeatBigDir); err != nil {
		return err
	}
	for i := range FeatBigDirEntries {
		name := fmt.Sprintf("entry-%05d", i)
		if i%97 == 0 {
			n := 1 + i%255
			name = strings.Repeat("x", max(0, n-len(name))) + name
			name = name[len(name)-n:]
			if n < 11 {
				name = fmt.Sprintf("%0*d", n, i%pow10(n))
			}
		}
		f, err := os.OpenFile(p(FeatBigDir+"/"+name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			if os.IsExist(err) {
				continue // a short numeric name repeated; the count below is exact
			}
			return fmt.Errorf("testimages: %w", err)
		}
		f.Close()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	w.st.Files += FeatBigDirEntries
	ents, err := os.ReadDir(p(FeatBigDir))
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	// Top up so the count is exactly FeatBigDirEntries.
	for i := 0; len(ents) < FeatBigDirEntries; i++ {
		f, err := os.OpenFile(p(fmt.Sprintf("%s/extra-%05d", FeatBigDir, i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
			ents = append(ents, nil)
		}
	}
	note("bigdir: %s holds %d empty files (htree), names 1..255 bytes", FeatBigDir, FeatBigDirEntries)

	// Symlinks.
	long := "../" + strings.Repeat("./", 40) + FeatHello
	for _, l := range [][2]string{
		{"../" + FeatHello, FeatShortSymlink},
		{long, FeatLongSymlink},
		{"/" + FeatHello, FeatAbsSymlink},
		{"nowhere/at/all", FeatDangling},
		{"../data", "links/dir"},
		{"loop-b", "links/loop-a"},
		{"loop-a", "links/loop-b"},
	} {
		if err := w.symlink(l[0], l[1]); err != nil {
			return err
		}
	}
	note("symlinks: %s (fast), %s (%d-byte target, in a block), %s (absolute), %s, links/dir, links/loop-a <-> links/loop-b", FeatShortSymlink, FeatLongSymlink, len(long), FeatAbsSymlink, FeatDangling)

	// Hard links.
	if err := w.writeText(FeatHardLinks, "three names, one inode\n", 0o644); err != nil {
		return err
	}
	for _, n := range []string{"hard/b", "hard/c"} {
		if err := w.hardlink(FeatHardLinks, n); err != nil {
			return err
		}
	}
	note("hard links: hard/a hard/b hard/c share one inode (nlink 3)")

	// Sparse files.
	if err := w.mkdirAll("sparse"); err != nil {
		return err
	}
	island := make([]byte, 64*kib)
	rng := rand.NewChaCha8(seeded(seed, "islands"))
	if err := writeSparse(p(FeatSparse), gib, func(f *os.File) error {
		for _, off := range FeatSparseIslands {
			rng.Read(island)
			if _, err := f.WriteAt(island, off); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := writeSparse(p(FeatTrailingHole), 8*mib, func(f *os.File) error {
		_, err := f.WriteAt(bytes.Repeat([]byte("data before a trailing hole\n"), 1000), 0)
		return err
	}); err != nil {
		return err
	}
	if err := writeSparse(p(FeatAllHole), 10*mib, func(*os.File) error { return nil }); err != nil {
		return err
	}
	note("sparse: %s is 1 GiB with 64 KiB random islands at %v; %s has 27 KiB data then a hole to 8 MiB; %s is a 10 MiB hole", FeatSparse, FeatSparseIslands, FeatTrailingHole, FeatAllHole)

	// A fragmented file: two files grown 4 KiB at a time, each write synced,
	// so the allocator interleaves their blocks.
	if err := w.mkdirAll("frag"); err != nil {
		return err
	}
	extents, err := writeInterleaved(p(FeatFragmented), p("frag/b.bin"), 512, rand.NewChaCha8(seeded(seed, "frag")))
	if err != nil {
		return err
	}
	if extents < 5 {
		return fmt.Errorf("testimages: %s has only %d extents, want a depth-1 extent tree", FeatFragmented, extents)
	}
	note("fragmented: %s and frag/b.bin, 2 MiB each, %d extents each", FeatFragmented, extents)

	// Extended attributes.
	if err := w.writeText(FeatXattrFile, "a file with extended attributes\n", 0o644); err != nil {
		return err
	}
	for _, x := range []struct {
		name string
		val  []byte
	}{
		{"user.comment", []byte("hello xattr")},
		{"user.empty", nil},
		{"user.binary", []byte{0, 1, 2, 0xff}},
		{"security.selinux", []byte("system_u:object_r:etc_t:s0\x00")},
	} {
		if err := unix.Lsetxattr(p(FeatXattrFile), x.name, x.val, 0); err != nil {
			return fmt.Errorf("testimages: setxattr %s: %w", x.name, err)
		}
	}
	if err := w.writeText(FeatXattrBig, "a file with a big xattr\n", 0o644); err != nil {
		return err
	}
	if err := unix.Lsetxattr(p(FeatXattrBig), "user.big", bytes.Repeat([]byte("0123456789"), 300), 0); err != nil {
		return fmt.Errorf("testimages: setxattr: %w", err)
	}
	if err := unix.Lsetxattr(p("xattr"), "user.dir", []byte("on a directory"), 0); err != nil {
		return fmt.Errorf("testimages: setxattr: %w", err)
	}
	note("xattrs: %s has user.comment=hello xattr, user.empty=\"\", user.binary=00 01 02 ff, security.selinux; %s has user.big (3000 bytes); xattr/ has user.dir", FeatXattrFile, FeatXattrBig)

	// Empty file and special files.
	if err := w.file(FeatEmptyFile, 0, contentText, 0o644, 0); err != nil {
		return err
	}
	if err := w.mkdirAll("special"); err != nil {
		return err
	}
	for _, s := range []struct {
		rel  string
		mode uint32
		dev  int
	}{
		{FeatFifo, unix.S_IFIFO | 0o644, 0},
		{FeatCharDev, unix.S_IFCHR | 0o666, int(unix.Mkdev(1, 3))},
		{FeatBlockDev, unix.S_IFBLK | 0o660, int(unix.Mkdev(7, 7))},
		{FeatSocket, unix.S_IFSOCK | 0o755, 0},
	} {
		if err := unix.Mknod(p(s.rel), s.mode, s.dev); err != nil {
			return fmt.Errorf("testimages: mknod %s: %w", s.rel, err)
		}
	}
	note("special: %s (fifo), %s (char 1:3), %s (block 7:7), %s (socket); %s is empty", FeatFifo, FeatCharDev, FeatBlockDev, FeatSocket, FeatEmptyFile)

	// Deep tree.
	deep := FeatDeepLeaf
	for i := 1; i <= FeatDeepLevels; i++ {
		deep += fmt.Sprintf("/d%02d", i)
	}
	if err := w.writeText(deep+"/leaf.txt", "at the bottom\n", 0o644); err != nil {
		return err
	}
	note("deep: %s/leaf.txt", deep)

	// Names, modes, owners, times.
	for _, n := range []string{"unicode/日本語のファイル.txt", "unicode/emoji 🎉.txt", "unicode/Ελληνικά/кириллица.txt", "unicode/" + strings.Repeat("é", 126) + ".tx"} {
		if err := w.writeText(n, n+"\n", 0o644); err != nil {
			return err
		}
	}
	if err := w.writeText("modes/setuid", "#!/bin/sh\n", 0o755); err != nil {
		return err
	}
	if err := os.Chmod(p("modes/setuid"), 0o4755|os.ModeSetuid); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if err := w.mkdirAll("modes/sticky"); err != nil {
		return err
	}
	if err := os.Chmod(p("modes/sticky"), 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if err := w.writeText("modes/user1000", "owned by 1000:1000\n", 0o600); err != nil {
		return err
	}
	if err := os.Lchown(p("modes/user1000"), 1000, 1000); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	times := []struct {
		rel string
		t   time.Time
	}{
		{"times/nanoseconds", time.Unix(1600000000, 123456789)},
		{"times/before-1970", time.Unix(-300000000, 0)},
		{"times/after-2038", time.Date(2040, 2, 29, 12, 0, 0, 0, time.UTC)},
	}
	for _, tt := range times {
		if err := w.writeText(tt.rel, tt.rel+"\n", 0o644); err != nil {
			return err
		}
		if err := setTimes(p(tt.rel), tt.t); err != nil {
			return err
		}
	}
	note("modes: modes/setuid (04755), modes/sticky (01777), modes/user1000 (uid/gid 1000, 0600)")
	note("times: times/nanoseconds mtime 1600000000.123456789, times/before-1970 mtime -300000000, times/after-2038 mtime 2040-02-29T12:00:00Z")
	note("unicode: unicode/日本語のファイル.txt, unicode/emoji 🎉.txt, unicode/Ελληνικά/кириллица.txt, a 255-byte name of é")
	if err := w.fixDirTimes(); err != nil {
		return err
	}
	pi.treeStats = w.st
	return syncfs(mnt)
}

func pow10(n int) int {
	v := 1
	for range min(n, 9) {
		v *= 10
	}
	return v
}

// writeSparse creates a file of size bytes by truncation and lets write put
// data into it, leaving holes elsewhere.
func writeSparse(path string, size int64, write func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = write(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimages: sparse %s: %w", path, err)
	}
	return setTimes(path, time.Unix(fakeTime, 0))
}

// writeInterleaved grows a and b by 4 KiB alternately, syncing each write
// so the kernel allocates each block right away, and returns a's extent
// count (FIEMAP via filefrag).
func writeInterleaved(a, b string, blocks int, rng *rand.ChaCha8) (int, error) {
	fa, err := os.Create(a)
	if err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	defer fa.Close()
	fb, err := os.Create(b)
	if err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	defer fb.Close()
	buf := make([]byte, 4096)
	for range blocks {
		for _, f := range []*os.File{fa, fb} {
			rng.Read(buf)
			if _, err := f.Write(buf); err != nil {
				return 0, fmt.Errorf("testimages: %w", err)
			}
			if err := f.Sync(); err != nil {
				return 0, fmt.Errorf("testimages: %w", err)
			}
		}
	}
	if err := fa.Close(); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	if err := fb.Close(); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	for _, p := range []string{a, b} {
		if err := setTimes(p, time.Unix(fakeTime, 0)); err != nil {
			return 0, err
		}
	}
	out, err := run(context.Background(), "filefrag", a)
	if err != nil {
		return 0, err
	}
	// "path: 21 extents found"
	f := strings.Fields(string(out[bytes.LastIndexByte(out[:len(out)-1], ':')+1:]))
	if len(f) == 0 {
		return 0, fmt.Errorf("testimages: filefrag: %q", out)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, fmt.Errorf("testimages: filefrag: %q", out)
	}
	return n, nil
}

// featureInline fills the inline_data filesystem: files and directories
// small enough to live inside their inodes, and a few that are not.
func featureInline(ctx context.Context, mnt string, pi *PartInfo, seed int64) error {
	w := newTreeWriter(ctx, mnt, seed, "feature-inline")
	for i := range 100 {
		size := int64(i * 2) // 0..198 bytes: i_block (60) and the system.data xattr
		if err := w.file(fmt.Sprintf("small/f%03d.txt", i), size, contentText, 0o644, 0); err != nil {
			return err
		}
	}
	for i := range 20 {
		for j := range i % 4 {
			if err := w.writeText(fmt.Sprintf("dirs/d%02d/e%d", i, j), "x\n", 0o644); err != nil {
				return err
			}
		}
		if err := w.mkdirAll(fmt.Sprintf("dirs/d%02d", i)); err != nil {
			return err
		}
	}
	if err := w.file("large/not-inline.bin", 10*kib, contentBinary, 0o644, 0); err != nil {
		return err
	}
	if err := w.writeText("inline-hello.txt", "hello, inline\n", 0o644); err != nil {
		return err
	}
	if err := w.symlink("inline-hello.txt", "link-to-hello"); err != nil {
		return err
	}
	// A directory that outgrows its inode while files are added.
	for i := range 40 {
		if err := w.writeText(fmt.Sprintf("grown/file-with-a-long-name-%02d.txt", i), "y\n", 0o644); err != nil {
			return err
		}
	}
	if err := w.fixDirTimes(); err != nil {
		return err
	}
	pi.Notes = append(pi.Notes,
		"small/f000.txt..f099.txt: 0..198 bytes of text, inline in their inodes",
		"dirs/d00..d19: directories of 0..3 entries, inline",
		"grown/: 40 entries, outgrew the inode into a block",
		"large/not-inline.bin: 10 KiB in extents; inline-hello.txt: \"hello, inline\\n\"; link-to-hello -> inline-hello.txt")
	pi.treeStats = w.st
	return syncfs(mnt)
}

// featureFAT runs after mcopy: it sets attributes and makes a fragmented
// file by deleting a file between two others and copying a larger one that
// fills the gap and continues after them.
func featureFAT(ctx context.Context, image, scratch string, w *treeWriter) error {
	files := map[string]int64{"a.bin": 64 * kib, "b.bin": 64 * kib, "c.bin": 64 * kib, "fragmented.bin": 256 * kib}
	for _, n := range []string{"a.bin", "b.bin", "c.bin", "fragmented.bin"} {
		if err := w.file("fragsrc/"+n, files[n], contentRandom, 0o644, 0); err != nil {
			return err
		}
	}
	for _, n := range []string{"hidden.txt", "system.sys", "readonly.txt"} {
		if err := w.writeText("attrsrc/"+n, n+"\n", 0o644); err != nil {
			return err
		}
	}
	src := filepath.Join(w.root, "fragsrc")
	steps := [][]string{
		{"mmd", "-i", image, "::/frag", "::/attr"},
		{"mcopy", "-m", "-i", image, src + "/a.bin", "::/frag/"},
		{"mcopy", "-m", "-i", image, src + "/b.bin", "::/frag/"},
		{"mcopy", "-m", "-i", image, src + "/c.bin", "::/frag/"},
		{"mdel", "-i", image, "::/frag/b.bin"},
		{"forget-next-free"},
		{"mcopy", "-m", "-i", image, src + "/fragmented.bin", "::/frag/"},
		{"mcopy", "-m", "-i", image, filepath.Join(w.root, "attrsrc/hidden.txt"), filepath.Join(w.root, "attrsrc/system.sys"), filepath.Join(w.root, "attrsrc/readonly.txt"), "::/attr/"},
		{"mattrib", "-i", image, "+h", "::/attr/hidden.txt"},
		{"mattrib", "-i", image, "+s", "::/attr/system.sys"},
		{"mattrib", "-i", image, "+r", "::/attr/readonly.txt"},
	}
	for _, s := range steps {
		if s[0] == "forget-next-free" {
			if err := forgetNextFree(image); err != nil {
				return err
			}
			continue
		}
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	w.st.Files -= 1 // b.bin was deleted
	w.st.Bytes -= files["b.bin"]
	return nil
}

// forgetNextFree sets a FAT32 FSInfo "next free cluster" hint to unknown
// (0xFFFFFFFF), so mtools allocates first-fit from the start instead of
// after the last allocation. FAT12/16 have no FSInfo and are left alone.
func forgetNextFree(image string) error {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer f.Close()
	bpb := make([]byte, 90)
	if _, err := f.ReadAt(bpb, 0); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bpb[11:]))
	if binary.LittleEndian.Uint16(bpb[22:]) != 0 || bps == 0 { // FAT12/16: sectors per FAT in the old field
		return nil
	}
	fsinfo := int64(binary.LittleEndian.Uint16(bpb[48:]))
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, fsinfo*bps+492); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	return f.Close()
}

// buildNTFS makes an NTFS in a scratch file with mkntfs, sets a fixed
// serial, fills it through an ntfs-3g (FUSE) mount and splices it in.
func (b *builder) buildNTFS(pi *PartInfo) error {
	ctx := b.ctx
	part := filepath.Join(b.scratch, fmt.Sprintf("part%d.img", pi.Number))
	defer os.Remove(part)
	if err := truncateNew(part, pi.Size); err != nil {
		return err
	}
	if _, err := run(ctx, "mkntfs", "-F", "-Q", "-q", "-L", pi.Label, "-c", "4096",
		"-p", strconv.FormatInt(pi.Start/512, 10), "-H", "255", "-S", "63", part); err != nil {
		return err
	}
	if _, err := run(ctx, "ntfslabel", "--new-serial="+pi.UUID, part); err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(b.scratch, "ntfs-")
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	var cl cleanups
	defer cl.run()
	if _, err := run(ctx, "ntfs-3g", "-o", "streams_interface=xattr", part, mnt); err != nil {
		return err
	}
	cl.push(func() error { return unmount(mnt) })
	if err := featureNTFS(ctx, mnt, pi, b.spec.Seed); err != nil {
		return err
	}
	if err := cl.run(); err != nil {
		return err
	}
	if _, err := run(ctx, "ntfsfix", "-n", part); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return spliceFile(b.disk, pi.Start, part)
}

func featureNTFS(ctx context.Context, mnt string, pi *PartInfo, seed int64) error {
	w := newTreeWriter(ctx, mnt, seed, "feature-ntfs")
	w.chown = false
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	if err := w.writeText("small/resident.txt", "small enough to live in its MFT record\n", 0o644); err != nil {
		return err
	}
	if err := w.file("large/big.bin", 8*mib+5, contentRandom, 0o644, 0); err != nil {
		return err
	}
	if err := w.file("large/text.txt", 2*mib, contentText, 0o644, 0); err != nil {
		return err
	}
	if err := w.mkdirAll("sparse"); err != nil {
		return err
	}
	rng := rand.NewChaCha8(seeded(seed, "ntfs-sparse"))
	island := make([]byte, 64*kib)
	if err := writeSparse(p("sparse/sparse.bin"), 64*mib, func(f *os.File) error {
		for _, off := range []int64{0, 20 * mib, 64*mib - 64*kib} {
			rng.Read(island)
			if _, err := f.WriteAt(island, off); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Files created in a directory with the compressed attribute (0x800)
	// are LZNT1-compressed by ntfs-3g.
	if err := w.mkdirAll("compressed"); err != nil {
		return err
	}
	if err := unix.Setxattr(p("compressed"), "system.ntfs_attrib_be", []byte{0, 0, 0x08, 0}, 0); err != nil {
		return fmt.Errorf("testimages: set compressed attribute: %w", err)
	}
	if err := w.file("compressed/text.txt", 1*mib+99, contentText, 0o644, 0); err != nil {
		return err
	}
	if err := w.file("compressed/random.bin", 128*kib, contentRandom, 0o644, 0); err != nil {
		return err
	}
	attr := make([]byte, 4)
	if _, err := unix.Getxattr(p("compressed/text.txt"), "system.ntfs_attrib_be", attr); err != nil || attr[2]&0x08 == 0 {
		return fmt.Errorf("testimages: compressed/text.txt is not compressed (attributes %x): %v", attr, err)
	}
	if err := w.hardlink("small/resident.txt", "small/hardlink.txt"); err != nil {
		return err
	}
	if err := w.symlink("resident.txt", "small/symlink"); err != nil {
		return err
	}
	if err := w.writeText("ads.txt", "main stream\n", 0o644); err != nil {
		return err
	}
	if err := unix.Setxattr(p("ads.txt"), "user.Zone.Identifier", []byte("[ZoneTransfer]\r\nZoneId=3\r\n"), 0); err != nil {
		return fmt.Errorf("testimages: alternate data stream: %w", err)
	}
	if err := w.file("empty.txt", 0, contentText, 0o644, 0); err != nil {
		return err
	}
	for _, n := range append(fatNames[:len(fatNames):len(fatNames)], "emoji 🎉 party.png") {
		if err := w.writeText("unicode/"+n, n+"\n", 0o644); err != nil {
			return err
		}
	}
	deep := "deep"
	for i := 1; i <= 20; i++ {
		deep += fmt.Sprintf("/d%02d", i)
	}
	if err := w.writeText(deep+"/leaf.txt", "at the bottom\n", 0o644); err != nil {
		return err
	}
	pi.Notes = append(pi.Notes,
		"small/resident.txt: resident $DATA; small/hardlink.txt: second name of it; small/symlink -> resident.txt (reparse point)",
		"large/big.bin: 8 MiB + 5 bytes random; large/text.txt: 2 MiB text",
		"sparse/sparse.bin: 64 MiB, 64 KiB islands at 0, 20 MiB, 64 MiB-64 KiB",
		"compressed/: directory with the compressed attribute; text.txt (1 MiB + 99, LZNT1) and random.bin (128 KiB)",
		"ads.txt: alternate data stream Zone.Identifier = \"[ZoneTransfer]\\r\\nZoneId=3\\r\\n\"",
		"empty.txt; unicode/<long and Unicode names>; "+deep+"/leaf.txt")
	if err := w.fixDirTimes(); err != nil {
		return err
	}
	pi.treeStats = w.st
	return nil
}

// buildRandom fills the partition with deterministic random bytes: no
// filesystem signature any tool recognises.
func (b *builder) buildRandom(pi *PartInfo) error {
	f, err := os.OpenFile(b.disk, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	rng := rand.NewChaCha8(seeded(b.spec.Seed, "unknown"))
	buf := make([]byte, mib)
	for off := int64(0); off < pi.Size; off += mib {
		rng.Read(buf)
		if _, err := f.WriteAt(buf[:min(mib, pi.Size-off)], pi.Start+off); err != nil {
			f.Close()
			return fmt.Errorf("testimages: %w", err)
		}
	}
	pi.Notes = append(pi.Notes, "random bytes, no filesystem")
	return f.Close()
}
