package source

import (
	"context"
	"io/fs"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// PrefetchOptions bound Prefetch; the zero value is the default.
type PrefetchOptions struct {
	// Depth is how many directory levels below each root are listed
	// (default 2: the root's directories and theirs).
	Depth int
	// MaxDirs bounds the directories listed per filesystem (default
	// 2,000).
	MaxDirs int
	// Workers is how many directories are read at once (default 8): over
	// a network, that many chunk fetches in flight.
	Workers int
}

// PrefetchResult says what Prefetch read.
type PrefetchResult struct {
	Filesystems int
	Dirs        int // directories listed
	Entries     int // entries stat'ed
	Wall        time.Duration
}

// Prefetch reads the filesystem metadata a first look at the disk touches,
// so that it is at hand before it is asked for: the partition table and
// every filesystem's superblocks, descriptors and tables (by probing every
// partition), then the directories nearest each root, breadth first, and
// the inode (MFT record, directory entry) of everything in them. It goes
// through the drivers, so it reads what they read — FAT tables, ext4 group
// descriptors and inode tables, the MFT — and nothing of the files' data.
//
// Over a network each read fetches the chunks holding that metadata (and
// keeps them, with a cache), several directories at a time; `dimg mount`
// runs it in the background. Errors are not reported: a read that fails
// here fails again, with its error, when it is asked for. It stops when
// ctx ends.
func (s *Source) Prefetch(ctx context.Context, opt PrefetchOptions) PrefetchResult {
	start := time.Now()
	if opt.Depth <= 0 {
		opt.Depth = 2
	}
	if opt.MaxDirs <= 0 {
		opt.MaxDirs = 2000
	}
	if opt.Workers <= 0 {
		opt.Workers = 8
	}
	var res PrefetchResult
	trees, err := s.Trees()
	if err != nil {
		return res
	}
	var dirs, entries atomic.Int64
	var wg sync.WaitGroup
	for _, p := range trees {
		fsys, ok := p.Volume.(fsdrivers.Filesystem)
		if !ok {
			continue
		}
		res.Filesystems++
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefetchTree(ctx, fsys, opt, &dirs, &entries)
		}()
	}
	wg.Wait()
	res.Dirs, res.Entries, res.Wall = int(dirs.Load()), int(entries.Load()), time.Since(start)
	return res
}

// prefetchTree lists fsys breadth first, a level at a time, opt.Workers
// directories at once.
func prefetchTree(ctx context.Context, fsys fsdrivers.Filesystem, opt PrefetchOptions, dirs, entries *atomic.Int64) {
	level := []string{"."}
	listed := 0
	for depth := 0; depth <= opt.Depth && len(level) > 0 && ctx.Err() == nil; depth++ {
		if listed+len(level) > opt.MaxDirs {
			level = level[:max(opt.MaxDirs-listed, 0)]
		}
		listed += len(level)
		var mu sync.Mutex
		var next []string
		work := make(chan string)
		var wg sync.WaitGroup
		for range opt.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dir := range work {
					sub := prefetchDir(ctx, fsys, dir, entries)
					dirs.Add(1)
					mu.Lock()
					next = append(next, sub...)
					mu.Unlock()
				}
			}()
		}
		for _, d := range level {
			if ctx.Err() != nil {
				break
			}
			work <- d
		}
		close(work)
		wg.Wait()
		level = next
	}
}

// prefetchDir lists dir, stats its entries and returns its
// subdirectories.
func prefetchDir(ctx context.Context, fsys fsdrivers.Filesystem, dir string, entries *atomic.Int64) []string {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil
	}
	var sub []string
	for _, e := range ents {
		if ctx.Err() != nil {
			return nil
		}
		if _, err := e.Info(); err != nil {
			continue
		}
		entries.Add(1)
		if e.IsDir() {
			sub = append(sub, path.Join(dir, e.Name()))
		}
	}
	return sub
}
