package testimages

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Content kinds for generated files, chosen so compressors see roughly what
// they see on a real system: text compresses ~3x, "binary" ~1.5-2x (repeated
// snippets between random runs and zero padding), random not at all.
type contentKind int

const (
	contentText contentKind = iota
	contentBinary
	contentRandom
)

// treeStats counts what a tree writer produced.
type treeStats struct {
	Files     int   `json:"files"`
	Dirs      int   `json:"dirs"`
	Symlinks  int   `json:"symlinks"`
	Hardlinks int   `json:"hardlinks"`
	Bytes     int64 `json:"bytes"` // bytes of regular-file data
}

func (s *treeStats) add(o treeStats) {
	s.Files += o.Files
	s.Dirs += o.Dirs
	s.Symlinks += o.Symlinks
	s.Hardlinks += o.Hardlinks
	s.Bytes += o.Bytes
}

// treeWriter writes generated files under root with deterministic names,
// contents, modes and timestamps.
type treeWriter struct {
	ctx   context.Context
	root  string
	rng   *rand.Rand
	chaos *rand.ChaCha8 // fast bulk random bytes
	chown bool          // running as root: ownership other than ours is possible
	st    treeStats
	dirs  map[string]bool
	names map[string]bool
	vocab []string
	snips [][]byte
	buf   []byte
}

func newTreeWriter(ctx context.Context, root string, seed int64, salt string) *treeWriter {
	s := seeded(seed, "tree/"+salt)
	cc := rand.NewChaCha8(s)
	w := &treeWriter{
		ctx:   ctx,
		root:  root,
		rng:   rand.New(cc),
		chaos: rand.NewChaCha8(seeded(seed, "bulk/"+salt)),
		chown: os.Geteuid() == 0,
		dirs:  map[string]bool{".": true},
		names: map[string]bool{},
		buf:   make([]byte, 256<<10),
	}
	w.vocab = make([]string, 1024)
	for i := range w.vocab {
		w.vocab[i] = w.word()
	}
	w.snips = make([][]byte, 256)
	for i := range w.snips {
		b := make([]byte, 3+w.rng.IntN(22))
		w.chaos.Read(b)
		w.snips[i] = b
	}
	return w
}

var syllables = []string{"ba", "ko", "ri", "tu", "nel", "sta", "gor", "pix", "mu", "zen", "ax", "lo", "fer", "qui", "dro", "van", "el", "op", "sys", "net", "io", "lib", "core", "gl", "xt", "ssl", "dev", "ut", "ar", "ing"}

// word makes a pronounceable pseudo-word of 1-4 syllables.
func (w *treeWriter) word() string {
	n := 1 + w.rng.IntN(4)
	var sb strings.Builder
	for range n {
		sb.WriteString(syllables[w.rng.IntN(len(syllables))])
	}
	return sb.String()
}

// fixedTime is a deterministic timestamp between 2019 and fakeTime.
func (w *treeWriter) fixedTime() time.Time {
	return time.Unix(fakeTime-int64(w.rng.IntN(4*365*24*3600)), 0)
}

// unique returns rel, or rel with a counter added when the name was taken.
func (w *treeWriter) unique(rel string) string {
	if !w.names[rel] {
		w.names[rel] = true
		return rel
	}
	ext := filepath.Ext(rel)
	base := strings.TrimSuffix(rel, ext)
	for i := 2; ; i++ {
		r := fmt.Sprintf("%s-%d%s", base, i, ext)
		if !w.names[r] {
			w.names[r] = true
			return r
		}
	}
}

func (w *treeWriter) mkdirAll(rel string) error {
	rel = filepath.Clean(rel)
	if w.dirs[rel] {
		return nil
	}
	if parent := filepath.Dir(rel); !w.dirs[parent] {
		if err := w.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(w.root, rel), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("testimages: %w", err)
	}
	w.dirs[rel] = true
	w.names[rel] = true
	w.st.Dirs++
	return nil
}

// file writes a generated regular file of the given size and kind.
func (w *treeWriter) file(rel string, size int64, kind contentKind, mode os.FileMode, uid int) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
		return err
	}
	p := filepath.Join(w.root, rel)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	for left := size; left > 0; {
		n := int64(len(w.buf))
		if n > left {
			n = left
		}
		b := w.buf[:n]
		w.fill(b, kind, size-left == 0)
		if _, err := f.Write(b); err != nil {
			f.Close()
			return fmt.Errorf("testimages: write %s: %w", rel, err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("testimages: write %s: %w", rel, err)
	}
	w.st.Files++
	w.st.Bytes += size
	return w.finish(p, mode, uid)
}

// finish sets mode, owner and a fixed timestamp on a written entry.
func (w *treeWriter) finish(p string, mode os.FileMode, uid int) error {
	if err := os.Chmod(p, mode); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if w.chown && uid != 0 {
		if err := os.Lchown(p, uid, uid); err != nil {
			return fmt.Errorf("testimages: %w", err)
		}
	}
	t := w.fixedTime()
	return setTimes(p, t)
}

func setTimes(p string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("testimages: set times %s: %w", p, err)
	}
	return nil
}

func (w *treeWriter) symlink(target, rel string) error {
	if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
		return err
	}
	p := filepath.Join(w.root, rel)
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	w.names[rel] = true
	w.st.Symlinks++
	return setTimes(p, w.fixedTime())
}

func (w *treeWriter) hardlink(oldRel, rel string) error {
	if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(w.root, oldRel), filepath.Join(w.root, rel)); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	w.names[rel] = true
	w.st.Hardlinks++
	return nil
}

// fill generates one buffer of content.
func (w *treeWriter) fill(b []byte, kind contentKind, first bool) {
	switch kind {
	case contentRandom:
		w.chaos.Read(b)
	case contentText:
		i := 0
		col := 0
		for i < len(b) {
			word := w.vocab[w.rng.IntN(len(w.vocab))]
			i += copy(b[i:], word)
			col += len(word)
			if i >= len(b) {
				break
			}
			if col > 60+w.rng.IntN(20) {
				b[i] = '\n'
				col = 0
			} else {
				b[i] = ' '
			}
			i++
		}
	case contentBinary:
		i := 0
		if first && len(b) >= 64 {
			// An ELF-looking header so `file` and humans see a binary.
			copy(b, "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00\x01\x00\x00\x00")
			binary.LittleEndian.PutUint64(b[24:], 0x1000+uint64(w.rng.IntN(1<<20)))
			clear(b[32:64])
			i = 64
		}
		for i < len(b) {
			r := w.rng.IntN(100)
			switch {
			case r < 55:
				i += copy(b[i:], w.snips[w.rng.IntN(len(w.snips))])
			case r < 85:
				n := min(1+w.rng.IntN(16), len(b)-i)
				w.chaos.Read(b[i : i+n])
				i += n
			default:
				n := min(1+w.rng.IntN(64), len(b)-i)
				clear(b[i : i+n])
				i += n
			}
		}
	}
}

// logSize draws a log-normally distributed size around median, bounded.
func (w *treeWriter) logSize(median, maxSize int64) int64 {
	s := int64(float64(median) * math.Exp(w.rng.NormFloat64()*1.2))
	return max(0, min(s, maxSize))
}

// fixDirTimes gives every directory a fixed timestamp, deepest first so a
// parent's time is not changed again by writes into it.
func (w *treeWriter) fixDirTimes() error {
	dirs := make([]string, 0, len(w.dirs))
	for d := range w.dirs {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool {
		if a, b := strings.Count(dirs[i], "/"), strings.Count(dirs[j], "/"); a != b {
			return a > b
		}
		return dirs[i] > dirs[j]
	})
	for _, d := range dirs {
		if err := setTimes(filepath.Join(w.root, d), w.fixedTime()); err != nil {
			return err
		}
	}
	return nil
}

// synthCategory is one part of a generated root filesystem.
type synthCategory struct {
	share  int // percent of the byte budget
	median int64
	kind   contentKind
	gen    func(w *treeWriter, pkg string) (rel string, mode os.FileMode, uid int)
}

var synthCategories = []synthCategory{
	{35, 8 << 10, contentBinary, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		return fmt.Sprintf("usr/lib/x86_64-linux-gnu/lib%s.so.%d", pkg, w.rng.IntN(12)), 0o644, 0
	}},
	{15, 8 << 10, contentBinary, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		return "usr/bin/" + pkg, 0o755, 0
	}},
	{8, 2 << 10, contentText, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		names := []string{"copyright", "README", "NEWS", "changelog", "TODO"}
		return fmt.Sprintf("usr/share/doc/%s/%s", pkg, names[w.rng.IntN(len(names))]), 0o644, 0
	}},
	{15, 3 << 10, contentText, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		exts := []string{".conf", ".xml", ".txt", ".json", ".py", ".sh", ""}
		return fmt.Sprintf("usr/share/%s/%s%s", pkg, w.word(), exts[w.rng.IntN(len(exts))]), 0o644, 0
	}},
	{2, 1 << 10, contentText, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		if w.rng.IntN(3) == 0 {
			return fmt.Sprintf("etc/%s/%s.conf", pkg, w.word()), 0o644, 0
		}
		return fmt.Sprintf("etc/%s.conf", pkg), 0o644, 0
	}},
	{5, 16 << 10, contentText, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		return fmt.Sprintf("var/log/%s.log.%d", pkg, w.rng.IntN(5)), 0o640, 0
	}},
	{20, 32 << 10, contentRandom, func(w *treeWriter, pkg string) (string, os.FileMode, int) {
		dirs := []string{"Documents", "Pictures", "Downloads", "Music"}
		exts := []string{".jpg", ".png", ".zip", ".ogg", ".pdf"}
		return fmt.Sprintf("home/user/%s/%s%s", dirs[w.rng.IntN(len(dirs))], w.word(), exts[w.rng.IntN(len(exts))]), 0o644, 1000
	}},
}

// synthRoot fills w with a Linux-root-like tree of about budget bytes:
// thousands of files of realistic sizes, a usr-merge symlink layout, shared
// library symlinks, hard links and empty files.
func synthRoot(w *treeWriter, budget int64, fstab string) error {
	for _, l := range [][2]string{{"usr/bin", "bin"}, {"usr/lib", "lib"}, {"usr/sbin", "sbin"}, {"usr/lib64", "lib64"}} {
		if err := w.mkdirAll(l[0]); err != nil {
			return err
		}
		if err := w.symlink(l[0], l[1]); err != nil {
			return err
		}
	}
	for _, d := range []string{"boot", "dev", "proc", "sys", "run", "tmp", "mnt", "srv", "opt", "root", "var/tmp", "var/cache/apt", "boot/efi"} {
		if err := w.mkdirAll(d); err != nil {
			return err
		}
	}
	if err := w.writeText("etc/fstab", fstab, 0o644); err != nil {
		return err
	}
	if err := w.writeText("etc/hostname", "dimg-test\n", 0o644); err != nil {
		return err
	}
	if err := w.file("etc/machine-id.empty", 0, contentText, 0o444, 0); err != nil {
		return err
	}
	pkgs := make([]string, 0, 64)
	npkg := int(min(max(budget/(160<<10), 16), 4096))
	for range npkg {
		pkgs = append(pkgs, w.word())
	}
	maxFile := min(max(budget/8, 1<<20), 256<<20)
	for _, c := range synthCategories {
		left := budget * int64(c.share) / 100
		for left > 0 {
			pkg := pkgs[w.rng.IntN(len(pkgs))]
			rel, mode, uid := c.gen(w, pkg)
			rel = w.unique(rel)
			size := w.logSize(c.median, min(maxFile, left))
			if w.rng.IntN(100) == 0 {
				size = 0
			}
			if err := w.file(rel, size, c.kind, mode, uid); err != nil {
				return err
			}
			left -= max(size, 512)
			// Debian-style development symlinks and hard links.
			if strings.Contains(rel, ".so.") && w.rng.IntN(4) == 0 {
				link := w.unique(rel[:strings.Index(rel, ".so.")+3])
				if err := w.symlink(filepath.Base(rel), link); err != nil {
					return err
				}
			}
			if strings.HasPrefix(rel, "usr/bin/") && w.rng.IntN(40) == 0 {
				if err := w.hardlink(rel, w.unique("usr/bin/"+w.word())); err != nil {
					return err
				}
			}
		}
	}
	return w.fixDirTimes()
}

func (w *treeWriter) writeText(rel, text string, mode os.FileMode) error {
	if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
		return err
	}
	p := filepath.Join(w.root, rel)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	w.names[rel] = true
	w.st.Files++
	w.st.Bytes += int64(len(text))
	return w.finish(p, mode, 0)
}

// copyHost copies real files from host directories into the tree, in
// lexical order (deterministic for a given host), until max bytes are
// copied. Files that would overrun the budget are skipped; other mounts,
// sockets, devices and unreadable entries are skipped too. Ownership is kept
// when running as root, and modification times always.
func copyHost(w *treeWriter, hostDirs []string, max int64) error {
	var copied int64
	buf := make([]byte, 1<<20)
	stop := errors.New("stop")
	for _, hd := range hostDirs {
		hd = filepath.Clean(hd)
		rootSt, err := os.Stat(hd)
		if err != nil {
			return fmt.Errorf("testimages: host dir: %w", err)
		}
		rootDev := rootSt.Sys().(*syscall.Stat_t).Dev
		err = filepath.WalkDir(hd, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if ctxErr := w.ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if max-copied < 4096 {
				return stop
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			st := info.Sys().(*syscall.Stat_t)
			if st.Dev != rootDev {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			rel := strings.TrimPrefix(p, "/")
			if w.names[rel] {
				return nil
			}
			dst := filepath.Join(w.root, rel)
			switch {
			case d.IsDir():
				if err := w.mkdirAll(rel); err != nil {
					return err
				}
				// Directory modes and times are applied after their content.
				return nil
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return nil
				}
				if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
					return err
				}
				if err := os.Symlink(target, dst); err != nil {
					return fmt.Errorf("testimages: %w", err)
				}
				w.names[rel] = true
				w.st.Symlinks++
				if w.chown {
					_ = os.Lchown(dst, int(st.Uid), int(st.Gid))
				}
				return setTimes(dst, info.ModTime())
			case info.Mode().IsRegular():
				if info.Size() > max-copied {
					return nil
				}
				n, err := copyFile(dst, p, info, buf)
				if err != nil {
					if errors.Is(err, fs.ErrPermission) {
						return nil
					}
					return err
				}
				w.names[rel] = true
				w.st.Files++
				w.st.Bytes += n
				copied += n
				if w.chown {
					_ = os.Lchown(dst, int(st.Uid), int(st.Gid))
				}
				if err := os.Chmod(dst, info.Mode().Perm()); err != nil {
					return fmt.Errorf("testimages: %w", err)
				}
				return setTimes(dst, info.ModTime())
			}
			return nil
		})
		if errors.Is(err, stop) {
			break
		}
		if err != nil {
			return fmt.Errorf("testimages: copy %s: %w", hd, err)
		}
	}
	return w.fixDirTimes()
}

func copyFile(dst, src string, info fs.FileInfo, buf []byte) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	// Bound the copy by the size we budgeted for: a growing log file must
	// not overrun the filesystem.
	n, err := io.CopyBuffer(out, io.LimitReader(in, info.Size()), buf)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("testimages: copy %s: %w", src, err)
	}
	return n, nil
}

// espTree fills an EFI system partition the way a Debian install does:
// shim, GRUB, a fallback loader, a CSV in UTF-16 and a grub.cfg that points
// at the root filesystem.
func espTree(w *treeWriter, rootUUID string) error {
	files := []struct {
		rel  string
		size int64
	}{
		{"EFI/BOOT/BOOTX64.EFI", 934 << 10},
		{"EFI/BOOT/fbx64.efi", 86 << 10},
		{"EFI/BOOT/mmx64.efi", 844 << 10},
		{"EFI/debian/shimx64.efi", 934 << 10},
		{"EFI/debian/grubx64.efi", 2468 << 10},
		{"EFI/debian/mmx64.efi", 844 << 10},
		{"EFI/debian/fbx64.efi", 86 << 10},
	}
	for _, f := range files {
		if err := w.efiFile(f.rel, f.size); err != nil {
			return err
		}
	}
	csv := utf16le("\ufeffshimx64.efi,debian,,This is the boot entry for debian\n")
	if err := w.writeText("EFI/debian/BOOTX64.CSV", string(csv), 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf("search.fs_uuid %s root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n", strings.ToLower(rootUUID))
	if err := w.writeText("EFI/debian/grub.cfg", cfg, 0o755); err != nil {
		return err
	}
	return w.fixDirTimes()
}

// efiFile writes a PE-looking binary: "MZ" header, then binary-like content.
func (w *treeWriter) efiFile(rel string, size int64) error {
	if err := w.file(rel, size, contentBinary, 0o755, 0); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(w.root, rel), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	hdr := make([]byte, 64)
	copy(hdr, "MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff")
	binary.LittleEndian.PutUint32(hdr[60:], 0x80)
	_, err = f.WriteAt(hdr, 0)
	if err == nil {
		_, err = f.WriteAt([]byte("PE\x00\x00\x64\x86"), 0x80)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	return setTimes(filepath.Join(w.root, rel), w.fixedTime())
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		if r > 0xffff {
			r = '?'
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return b
}

// synthData fills a data filesystem (a /srv or /home): documents, media and
// project files, without the root skeleton.
func synthData(w *treeWriter, budget int64) error {
	cats := []synthCategory{synthCategories[2], synthCategories[3], synthCategories[6]}
	total := 0
	for _, c := range cats {
		total += c.share
	}
	pkgs := make([]string, 0, 32)
	for range 32 {
		pkgs = append(pkgs, w.word())
	}
	maxFile := min(max(budget/8, mib), 256*mib)
	for _, c := range cats {
		left := budget * int64(c.share) / int64(total)
		for left > 0 {
			rel, mode, uid := c.gen(w, pkgs[w.rng.IntN(len(pkgs))])
			rel = w.unique(rel)
			size := w.logSize(c.median, min(maxFile, left))
			if err := w.file(rel, size, c.kind, mode, uid); err != nil {
				return err
			}
			left -= max(size, 512)
		}
	}
	return w.fixDirTimes()
}

// fatNames are long, mixed-case and Unicode names that need VFAT long
// name entries (and one that needs none).
var fatNames = []string{
	"README.TXT",
	"Meeting notes 2023-11-14 (final).txt",
	"Résumé — Zoë Ångström.pdf",
	"日本語のファイル名.txt",
	"Ελληνικά και кириллица.doc",
	"symbols ★♫✓ and € sign.png", // BMP only: mtools 4.0.32 drops characters beyond U+FFFF
	"a name that is quite a bit longer than sixty-four characters, to span several LFN entries.dat",
	"MiXeD CaSe.Txt",
	"dots.in.the.middle.tar.gz",
	"trailing space and ünïcödé",
}

// fatTree fills a FAT filesystem: long and Unicode names, a deep tree of
// depth levels, and files of assorted sizes totalling about budget bytes.
func fatTree(w *treeWriter, budget int64, depth int) error {
	left := budget
	maxFile := max(min(budget/4, 64*mib), 4*kib)
	put := func(rel string, kind contentKind) error {
		size := w.logSize(32*kib, min(maxFile, max(left, 0)))
		left -= max(size, 512)
		return w.file(rel, size, kind, 0o644, 0)
	}
	for i, n := range fatNames {
		if err := put(n, contentKind(i%3)); err != nil {
			return err
		}
	}
	dir := ""
	for d := 0; d < depth; d++ {
		dir += fmt.Sprintf("level %d — nível/", d)
		if err := put(dir+fatNames[d%len(fatNames)], contentText); err != nil {
			return err
		}
	}
	if err := w.file("empty file.txt", 0, contentText, 0o644, 0); err != nil {
		return err
	}
	if err := w.mkdirAll("Empty Folder"); err != nil {
		return err
	}
	for i := 0; left > 0; i++ {
		sub := fmt.Sprintf("Documents/%s", w.word())
		if err := put(w.unique(fmt.Sprintf("%s/%s %d.txt", sub, w.word(), i)), contentKind(i%3)); err != nil {
			return err
		}
	}
	return w.fixDirTimes()
}
