package testimages

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// extPlan says how to make and fill one ext2/3/4 filesystem.
type extPlan struct {
	fstype   string   // "ext4", "ext3", "ext2"
	mkfsArgs []string // extra mke2fs arguments (-b, -i, -O ...)
	fill     func(w *treeWriter) error
	// kernel runs after fill on kernel builds only, for what only the
	// kernel can make (interleaved writes, sparse islands, devices...).
	kernel func(ctx context.Context, mnt string, pi *PartInfo) error
	// user runs after fill on user-space builds only (into the staging dir).
	user  func(ctx context.Context, dir string, pi *PartInfo) error
	stale int64 // bytes of deleted data to leave in free blocks
	opts  string
}

// mke2fsArgs builds the deterministic mke2fs command line.
func (b *builder) mke2fsArgs(pi *PartInfo, p extPlan, extended string) []string {
	hashSeed := strings.ToLower(seededUUID(b.spec.Seed, fmt.Sprintf("hash-seed/%d", pi.Number)))
	ext := "hash_seed=" + hashSeed
	if extended != "" {
		ext += "," + extended
	}
	args := []string{"-q", "-F", "-t", p.fstype, "-U", strings.ToLower(pi.UUID), "-L", pi.Label, "-E", ext}
	return append(args, p.mkfsArgs...)
}

func (b *builder) buildExt(pi *PartInfo, p extPlan) error {
	if b.kernel {
		return b.buildExtKernel(pi, p)
	}
	return b.buildExtUser(pi, p)
}

// buildExtKernel makes the filesystem on a loop device over the partition
// and fills it through a kernel mount.
func (b *builder) buildExtKernel(pi *PartInfo, p extPlan) error {
	ctx := b.ctx
	dev, err := attachLoop(ctx, b.disk, pi.Start, pi.Size)
	if err != nil {
		return err
	}
	var cl cleanups
	defer cl.run()
	cl.push(func() error { return detachLoop(dev) })
	if _, err := run(ctx, "mke2fs", append(b.mke2fsArgs(pi, p, ""), dev)...); err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(b.scratch, "mnt-")
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	opts := "noatime"
	if p.opts != "" {
		opts += "," + p.opts
	}
	if _, err := run(ctx, "mount", "-t", p.fstype, "-o", opts, dev, mnt); err != nil {
		return err
	}
	cl.push(func() error { return unmount(mnt) })
	w := newTreeWriter(ctx, mnt, b.spec.Seed, fmt.Sprintf("part%d", pi.Number))
	if p.fill != nil {
		if err := p.fill(w); err != nil {
			return err
		}
	}
	pi.treeStats = w.st
	if p.kernel != nil {
		if err := p.kernel(ctx, mnt, pi); err != nil {
			return err
		}
	}
	if p.stale > 0 {
		n, err := writeDeleted(ctx, mnt, p.stale, b.spec.Seed)
		if err != nil {
			return err
		}
		pi.DeletedBytes = n
	}
	return cl.run()
}

// writeDeleted writes n bytes (at most 40% of the free space) of random data
// into a file, syncs it to disk and deletes it, so free blocks hold stale
// data. It returns the number of bytes written.
func writeDeleted(ctx context.Context, mnt string, n int64, seed int64) (int64, error) {
	// Allocate the files already written first: with delayed allocation
	// they would otherwise land on the blocks the deleted file frees and
	// overwrite its stale data.
	if err := syncfs(mnt); err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return 0, fmt.Errorf("testimages: statfs %s: %w", mnt, err)
	}
	free := int64(st.Bavail) * st.Bsize
	n = alignDown(min(n, free*4/10), mib)
	if n <= 0 {
		return 0, nil
	}
	p := filepath.Join(mnt, ".dimg-deleted-download.bin")
	f, err := os.Create(p)
	if err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	defer f.Close()
	rng := newStaleReader(seed)
	buf := make([]byte, mib)
	for left := n; left > 0; left -= mib {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rng.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return 0, fmt.Errorf("testimages: write deleted file: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	if err := os.Remove(p); err != nil {
		return 0, fmt.Errorf("testimages: %w", err)
	}
	return n, syncfs(mnt)
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("testimages: syncfs %s: %w", dir, err)
	}
	return nil
}

// buildExtUser builds the filesystem in a scratch file with mke2fs -d and
// splices it into the disk. Stale data is planted where mke2fs will leave
// free blocks (it allocates from the start), standing in for a deleted file.
func (b *builder) buildExtUser(pi *PartInfo, p extPlan) error {
	ctx := b.ctx
	part := filepath.Join(b.scratch, fmt.Sprintf("part%d.img", pi.Number))
	staging := filepath.Join(b.scratch, fmt.Sprintf("tree%d", pi.Number))
	defer os.Remove(part)
	defer os.RemoveAll(staging)
	if err := os.Mkdir(staging, 0o755); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if err := truncateNew(part, pi.Size); err != nil {
		return err
	}
	w := newTreeWriter(ctx, staging, b.spec.Seed, fmt.Sprintf("part%d", pi.Number))
	if p.fill != nil {
		if err := p.fill(w); err != nil {
			return err
		}
	}
	pi.treeStats = w.st
	if p.user != nil {
		if err := p.user(ctx, staging, pi); err != nil {
			return err
		}
	}
	if p.stale > 0 {
		free := pi.Size - w.st.Bytes - pi.Size/10
		n := alignDown(min(p.stale, free*4/10), mib)
		if n > 0 {
			if err := plantStale(part, alignDown(pi.Size*6/10, mib), n, b.spec.Seed); err != nil {
				return err
			}
			pi.DeletedBytes = n
		}
	}
	args := b.mke2fsArgs(pi, p, "nodiscard,lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0")
	args = append(args, "-d", staging, part)
	if _, err := run(ctx, "mke2fs", args...); err != nil {
		return err
	}
	if err := fixCtimes(ctx, part, staging); err != nil {
		return err
	}
	return spliceFile(b.disk, pi.Start, part)
}

// fixCtimes sets each inode's change time to its modification time.
// mke2fs -d copies the staging files' ctimes, which are the wall clock of
// this build (no syscall sets a ctime); without this, two builds of the same
// spec would differ.
func fixCtimes(ctx context.Context, image, staging string) error {
	var script strings.Builder
	err := filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(staging, p)
		if err != nil {
			return err
		}
		if strings.ContainsAny(rel, "\"\\\n") {
			return nil // cannot be quoted for debugfs; keep its ctime
		}
		fmt.Fprintf(&script, "sif \"/%s\" ctime @%d\n", strings.TrimPrefix(rel, "."), info.ModTime().Unix())
		return nil
	})
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	f := image + ".debugfs"
	if err := os.WriteFile(f, []byte(script.String()), 0o600); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer os.Remove(f)
	_, err = run(ctx, "debugfs", "-w", "-f", f, image)
	return err
}

func truncateNew(p string, size int64) error {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	return nil
}

// newStaleReader returns the deterministic stream a deleted file is made of.
func newStaleReader(seed int64) *rand.ChaCha8 { return rand.NewChaCha8(seeded(seed, "deleted")) }

// plantStale writes n deterministic random bytes at off into file.
func plantStale(file string, off, n int64, seed int64) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	rng := newStaleReader(seed)
	buf := make([]byte, mib)
	for done := int64(0); done < n; done += mib {
		rng.Read(buf)
		if _, err := f.WriteAt(buf[:min(mib, n-done)], off+done); err != nil {
			f.Close()
			return fmt.Errorf("testimages: %w", err)
		}
	}
	return f.Close()
}

// fatPlan says how to make and fill one FAT filesystem.
type fatPlan struct {
	bits           int // 12, 16, 32
	clusterSectors int // 0: mkfs.vfat's choice
	fill           func(w *treeWriter) error
	// after runs once the tree is copied in, on the image file, for what
	// needs mtools commands (deletions, attributes).
	after func(ctx context.Context, image, scratch string, w *treeWriter) error
}

// buildFAT makes the filesystem in a scratch file (the kernel has no vfat
// driver), fills it with mcopy, checks it and splices it into the disk.
func (b *builder) buildFAT(pi *PartInfo, p fatPlan) error {
	ctx := b.ctx
	part := filepath.Join(b.scratch, fmt.Sprintf("part%d.img", pi.Number))
	staging := filepath.Join(b.scratch, fmt.Sprintf("tree%d", pi.Number))
	defer os.Remove(part)
	defer os.RemoveAll(staging)
	if err := os.Mkdir(staging, 0o755); err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if err := truncateNew(part, pi.Size); err != nil {
		return err
	}
	// --invariant first: it would otherwise override -i.
	args := []string{"-F", strconv.Itoa(p.bits), "--invariant", "-i", strings.ReplaceAll(pi.UUID, "-", ""),
		"-n", pi.Label, "-h", strconv.FormatInt(pi.Start/512, 10)}
	if p.clusterSectors > 0 {
		args = append(args, "-s", strconv.Itoa(p.clusterSectors))
	}
	if _, err := run(ctx, "mkfs.vfat", append(args, part)...); err != nil {
		return err
	}
	w := newTreeWriter(ctx, staging, b.spec.Seed, fmt.Sprintf("part%d", pi.Number))
	w.chown = false // FAT has no owners
	if p.fill != nil {
		if err := p.fill(w); err != nil {
			return err
		}
	}
	if err := mcopyTree(ctx, part, staging); err != nil {
		return err
	}
	if p.after != nil {
		if err := p.after(ctx, part, b.scratch, w); err != nil {
			return err
		}
	}
	pi.treeStats = w.st
	if _, err := run(ctx, "fsck.fat", "-n", part); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return spliceFile(b.disk, pi.Start, part)
}

// mcopyTree copies the content of dir into the root of the FAT image.
func mcopyTree(ctx context.Context, image, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, filepath.Join(dir, e.Name()))
	}
	sort.Strings(names)
	args := append([]string{"-s", "-m", "-i", image}, names...)
	_, err = run(ctx, "mcopy", append(args, "::/")...)
	return err
}

// buildSwap writes a swap signature with a fixed UUID and label.
func (b *builder) buildSwap(pi *PartInfo) error {
	part := filepath.Join(b.scratch, fmt.Sprintf("part%d.img", pi.Number))
	defer os.Remove(part)
	if err := truncateNew(part, pi.Size); err != nil {
		return err
	}
	if _, err := run(b.ctx, "mkswap", "-U", strings.ToLower(pi.UUID), "-L", pi.Label, part); err != nil {
		return err
	}
	return spliceFile(b.disk, pi.Start, part)
}
