package fat

import (
	"fmt"
	"io"
	"sync"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Driver opens FAT12/16/32 volumes. The zero value is ready to use.
type Driver struct{}

var _ fsdrivers.Driver = Driver{}

// Name returns "fat".
func (Driver) Name() string { return "fat" }

// Open probes r and opens the volume; see Open.
func (Driver) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	v, err := Open(r, size)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Volume is an opened FAT volume. It implements fsdrivers.Filesystem and
// fsdrivers.UsedRanger and is safe for concurrent use.
type Volume struct {
	r     io.ReaderAt
	size  int64
	g     *geometry
	fat   *table
	root  *dirent
	label string

	mu        sync.Mutex // guards dirs and dirsSize
	dirs      map[uint32]*dirList
	dirsSize  int // entries held in dirs
	dirsLimit int
}

var (
	_ fsdrivers.Filesystem = (*Volume)(nil)
	_ fsdrivers.UsedRanger = (*Volume)(nil)
)

// dirCacheEntries bounds the parsed directories kept (≈150 bytes each): a
// path lookup parses every directory on the way, so without a cache walking
// a tree would be quadratic in its depth and directory sizes.
const dirCacheEntries = 1 << 17

// Open probes r (one partition of size bytes) and opens the FAT volume in
// it. Errors wrap fsdrivers.ErrNotFound when the boot sector is not FAT's,
// fsdrivers.ErrCorrupt when its geometry is inconsistent or does not fit.
func Open(r io.ReaderAt, size int64) (*Volume, error) {
	g, err := readBootSector(r, size)
	if err != nil {
		return nil, err
	}
	v := &Volume{
		r:         r,
		size:      size,
		g:         g,
		fat:       newTable(r, g),
		root:      &dirent{name: ".", attr: attrDirectory, first: g.rootCluster},
		dirs:      make(map[uint32]*dirList),
		dirsLimit: dirCacheEntries,
	}
	// The label lives in the root directory (where Windows and mlabel keep
	// it current); the boot sector's copy is the fallback. A damaged root
	// must not stop identification, so its error is not fatal here.
	v.label = labelString(g.bootLabel)
	if l, err := v.dirList(v.root); err == nil && l.label != nil {
		v.label = labelString(l.label)
	}
	return v, nil
}

// Type returns "fat12", "fat16" or "fat32".
func (v *Volume) Type() string { return v.g.typeName() }

// UUID returns the volume serial as blkid prints it ("1234-ABCD"), or ""
// when the boot sector has no extended BPB.
func (v *Volume) UUID() string { return v.g.uuid() }

// Label returns the volume label, "" if there is none.
func (v *Volume) Label() string { return v.label }

// dirList returns the parsed directory d, from the cache when possible.
func (v *Volume) dirList(d *dirent) (*dirList, error) {
	if d.first == 0 && d != v.root {
		// Cluster 0 would alias the FAT12/16 root in the cache.
		return nil, fmt.Errorf("fat: directory %q has no clusters: %w", d.name, fsdrivers.ErrCorrupt)
	}
	key := d.first
	v.mu.Lock()
	l, ok := v.dirs[key]
	v.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := v.parseDir(d)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.dirs[key]; !ok {
		// Evict arbitrary directories until the new one fits.
		for k, old := range v.dirs {
			if v.dirsSize+len(l.entries) <= v.dirsLimit {
				break
			}
			delete(v.dirs, k)
			v.dirsSize -= len(old.entries)
		}
		v.dirs[key] = l
		v.dirsSize += len(l.entries)
	}
	return l, nil
}

// parseDir reads and parses directory d: the fixed root region on FAT12/16
// (first cluster 0 on the root), else its cluster chain, one ReadAt per run.
func (v *Volume) parseDir(d *dirent) (*dirList, error) {
	g := v.g
	p := &dirParser{isFAT32: g.bits == 32}
	if d.first == 0 {
		if g.bits == 32 {
			return nil, fmt.Errorf("fat: directory %q has no clusters: %w", d.name, fsdrivers.ErrCorrupt)
		}
		buf := make([]byte, g.rootBytes)
		if err := readFull(v.r, buf, g.rootOffset); err != nil {
			return nil, fmt.Errorf("fat: read root directory: %w", err)
		}
		feed(p, buf, g.rootOffset)
		return &p.list, nil
	}
	maxClusters := max(maxDirBytes/g.clusterSize, 1)
	ch, err := v.fat.walk(d.first, maxClusters, maxClusters+1)
	if err != nil {
		return nil, fmt.Errorf("fat: directory %q: %w", d.name, err)
	}
	if ch.total > maxClusters {
		return nil, fmt.Errorf("fat: directory %q is larger than %d bytes: %w", d.name, maxDirBytes, fsdrivers.ErrCorrupt)
	}
	for _, r := range ch.runs {
		off := g.clusterOffset(r.first)
		buf := make([]byte, int64(r.n)*g.clusterSize)
		if err := readFull(v.r, buf, off); err != nil {
			return nil, fmt.Errorf("fat: read directory %q at %d: %w", d.name, off, err)
		}
		feed(p, buf, off)
		if p.done {
			break
		}
	}
	return &p.list, nil
}

// feed hands the entries in buf (read from byte off) to p.
func feed(p *dirParser, buf []byte, off int64) {
	for i := 0; i+entrySize <= len(buf) && !p.done; i += entrySize {
		p.add(buf[i:i+entrySize], off+int64(i))
	}
}
