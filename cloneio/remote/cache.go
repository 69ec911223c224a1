package remote

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// Cache is a directory of cached entries shared by processes.
//
// Layout: DIR/v1/XX/HASH, HASH the hex SHA-256 of the entry's key and XX
// its first two digits; DIR/v1/tmp holds entries being written and
// DIR/v1/lock the directory's size in bytes (8 bytes), read and written
// under its flock. An entry file is a
// header — magic "dimgce01", data length (u32), CRC-32C of label and
// data (u32), label length (u16) — then the label (which image or URL
// the entry belongs to, for `dimg cache ls`) and the data. All integers
// big-endian.
//
// An entry is written whole to a temporary file and renamed into place,
// so a reader sees the old entry, the new one or none; a file cut short
// (a crash before the data reached the disk, a full disk) fails its
// length or CRC and is a miss that gets removed. Recency is the file's
// modification time, touched on every hit, so least-recently-used is
// shared across processes. The directory's size is kept in the lock file
// and updated under its flock by every write, so each process sees the
// others' writes; the one whose write passes the bound removes the
// oldest entries down to 90 % of it.
type Cache struct {
	dir string
	max int64
}

const (
	cacheMagic   = "dimgce01"
	cacheHdrSize = 8 + 4 + 4 + 2
	// DefaultCacheBytes bounds a cache opened with maxBytes 0.
	DefaultCacheBytes = 2 << 30
)

// DefaultCacheDir is dimg's cache directory under os.UserCacheDir.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("remote: no cache directory (set --cache DIR): %w", err)
	}
	return filepath.Join(d, "dimg"), nil
}

// OpenCache opens the cache directory dir (made when first written), bounded to
// maxBytes (0: DefaultCacheBytes).
func OpenCache(dir string, maxBytes int64) (*Cache, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	if dir == "" {
		return nil, fmt.Errorf("remote: no cache directory given")
	}
	// The directory is made by the first Put: opening a cache that is
	// never written leaves nothing behind.
	return &Cache{dir: dir, max: maxBytes}, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Max is the bound on its size in bytes.
func (c *Cache) Max() int64 { return c.max }

func (c *Cache) path(key []byte) string {
	h := sha256.Sum256(key)
	x := hex.EncodeToString(h[:])
	return filepath.Join(c.dir, "v1", x[:2], x)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Get returns the data stored under key, in buf when it fits. A torn or
// damaged entry is removed and reported as a miss.
func (c *Cache) Get(key []byte, buf []byte) ([]byte, bool) {
	p := c.path(key)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	data, ok := parseEntry(b)
	if !ok {
		if os.Remove(p) == nil {
			c.account(-int64(len(b)))
		}
		return nil, false
	}
	now := time.Now()
	os.Chtimes(p, now, now)
	if cap(buf) >= len(data) {
		buf = buf[:len(data)]
		copy(buf, data)
		return buf, true
	}
	return data, true
}

// parseEntry checks an entry file and returns its data.
func parseEntry(b []byte) ([]byte, bool) {
	if len(b) < cacheHdrSize || string(b[:8]) != cacheMagic {
		return nil, false
	}
	dlen := int(binary.BigEndian.Uint32(b[8:]))
	sum := binary.BigEndian.Uint32(b[12:])
	llen := int(binary.BigEndian.Uint16(b[16:]))
	if len(b) != cacheHdrSize+llen+dlen || crc32.Checksum(b[cacheHdrSize:], castagnoli) != sum {
		return nil, false
	}
	return b[cacheHdrSize+llen:], true
}

// entryLabel returns an entry file's label ("" when damaged).
func entryLabel(b []byte) string {
	if _, ok := parseEntry(b); !ok {
		return ""
	}
	return string(b[cacheHdrSize : cacheHdrSize+int(binary.BigEndian.Uint16(b[16:]))])
}

// Put stores data under key (label says which image or URL it is of).
// Failures are not errors: the entry is simply not cached.
func (c *Cache) Put(key []byte, label string, data []byte) {
	if len(label) > 1024 {
		label = label[:1024]
	}
	b := make([]byte, cacheHdrSize, cacheHdrSize+len(label)+len(data))
	copy(b, cacheMagic)
	binary.BigEndian.PutUint32(b[8:], uint32(len(data)))
	binary.BigEndian.PutUint16(b[16:], uint16(len(label)))
	b = append(append(b, label...), data...)
	binary.BigEndian.PutUint32(b[12:], crc32.Checksum(b[cacheHdrSize:], castagnoli))
	p := c.path(key)
	tmpDir := filepath.Join(c.dir, "v1", "tmp")
	tmp, err := os.CreateTemp(tmpDir, "e-*")
	if errors.Is(err, fs.ErrNotExist) {
		if os.MkdirAll(tmpDir, 0o700) == nil {
			tmp, err = os.CreateTemp(tmpDir, "e-*")
		}
	}
	if err != nil {
		return
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	var replaced int64
	if st, err := os.Stat(p); err == nil {
		replaced = st.Size() // another process wrote it meanwhile
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
		if errors.Is(err, fs.ErrNotExist) && os.MkdirAll(filepath.Dir(p), 0o700) == nil {
			err = os.Rename(tmp.Name(), p)
		}
	}
	if err != nil {
		os.Remove(tmp.Name())
		return
	}
	c.account(int64(len(b)) - replaced)
}

// Drop removes the entry under key.
func (c *Cache) Drop(key []byte) {
	p := c.path(key)
	if st, err := os.Stat(p); err == nil && os.Remove(p) == nil {
		c.account(-st.Size())
	}
}

// cacheFile is one entry file found by a walk.
type cacheFile struct {
	path  string
	size  int64
	mtime time.Time
}

// walk lists the entry files (and removes temporary files left over by a
// process that died while writing).
func (c *Cache) walk() ([]cacheFile, error) {
	var out []cacheFile
	root := filepath.Join(c.dir, "v1")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // never written, or removed by another process meanwhile
			}
			return err
		}
		if d.IsDir() || d.Name() == "lock" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if filepath.Base(filepath.Dir(p)) == "tmp" {
			if time.Since(info.ModTime()) > time.Hour {
				os.Remove(p)
			}
			return nil
		}
		out = append(out, cacheFile{path: p, size: info.Size(), mtime: info.ModTime()})
		return nil
	})
	return out, err
}

// account adds delta bytes to the directory's size, kept in the lock
// file DIR/v1/lock (8 bytes, big-endian) under an flock so that every
// process sharing the directory counts every other's writes; when the
// size passes the bound, it evicts. A size never counted (a new lock
// file) is counted by a walk.
func (c *Cache) account(delta int64) {
	c.locked(func(size int64) int64 {
		if size < 0 {
			return size // never counted: counted below
		}
		return size + delta
	})
}

// locked runs f with the lock held on the size in the lock file (-1 when
// never counted) and stores what f returns, counting the directory and
// evicting when that is negative or over the bound.
func (c *Cache) locked(f func(size int64) int64) {
	lf, err := os.OpenFile(filepath.Join(c.dir, "v1", "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return
	}
	defer lf.Close()
	if syscall.Flock(int(lf.Fd()), syscall.LOCK_EX) != nil {
		return
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	var b [8]byte
	size := int64(-1)
	if n, _ := lf.ReadAt(b[:], 0); n == 8 {
		size = int64(binary.BigEndian.Uint64(b[:]))
	}
	size = f(size)
	if size < 0 || size > c.max {
		size = c.evictLocked()
	}
	if size < 0 {
		lf.Truncate(0) // not counted
		return
	}
	binary.BigEndian.PutUint64(b[:], uint64(size))
	lf.WriteAt(b[:], 0)
}

// evictLocked counts the directory and, when it is over its bound,
// removes the least recently used entries down to 90 % of it (the lock
// held). It returns the bytes left.
func (c *Cache) evictLocked() int64 {
	files, err := c.walk()
	if err != nil {
		return -1 // count again next time
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	if total > c.max {
		sort.Slice(files, func(i, j int) bool { return files[i].mtime.Before(files[j].mtime) })
		for _, f := range files {
			if total <= c.max/10*9 {
				break
			}
			if os.Remove(f.path) == nil {
				total -= f.size
			}
		}
	}
	return total
}

// CacheGroup is what the cache holds of one image or URL.
type CacheGroup struct {
	Label    string    `json:"label"` // image UUID (frames) or URL (small reads)
	Entries  int       `json:"entries"`
	Bytes    int64     `json:"bytes"`
	LastUsed time.Time `json:"last_used"`
}

// CacheInfo describes the cache directory.
type CacheInfo struct {
	Dir     string       `json:"dir"`
	Max     int64        `json:"max_bytes"`
	Entries int          `json:"entries"`
	Bytes   int64        `json:"bytes"`
	Damaged int          `json:"damaged"` // entries that fail their check (removed on next read)
	Groups  []CacheGroup `json:"groups"`
}

// List describes the cache's contents, grouped by image and URL, most
// recently used first.
func (c *Cache) List() (*CacheInfo, error) {
	files, err := c.walk()
	if err != nil {
		return nil, fmt.Errorf("remote: cache %s: %w", c.dir, err)
	}
	info := &CacheInfo{Dir: c.dir, Max: c.max}
	groups := map[string]*CacheGroup{}
	for _, f := range files {
		info.Entries++
		info.Bytes += f.size
		label := readLabel(f.path)
		if label == "" {
			info.Damaged++
			continue
		}
		g := groups[label]
		if g == nil {
			g = &CacheGroup{Label: label}
			groups[label] = g
		}
		g.Entries++
		g.Bytes += f.size
		if f.mtime.After(g.LastUsed) {
			g.LastUsed = f.mtime
		}
	}
	for _, g := range groups {
		info.Groups = append(info.Groups, *g)
	}
	sort.Slice(info.Groups, func(i, j int) bool { return info.Groups[i].LastUsed.After(info.Groups[j].LastUsed) })
	return info, nil
}

// readLabel reads an entry's label, checking the whole entry.
func readLabel(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	return entryLabel(b)
}

// Clear removes every entry; it returns how many and their bytes.
func (c *Cache) Clear() (int, int64, error) {
	files, err := c.walk()
	if err != nil {
		return 0, 0, fmt.Errorf("remote: cache %s: %w", c.dir, err)
	}
	n, bytes := 0, int64(0)
	for _, f := range files {
		if err := os.Remove(f.path); err == nil {
			n++
			bytes += f.size
		} else if !errors.Is(err, fs.ErrNotExist) {
			return n, bytes, fmt.Errorf("remote: cache %s: %w", c.dir, err)
		}
	}
	if n > 0 {
		c.locked(func(int64) int64 { return -1 }) // count again
	}
	return n, bytes, nil
}

// Frames is the cache as an imagefmt.FrameCache: frames keyed by image
// and chunk checksum, labelled with the image.
func (c *Cache) Frames() imagefmt.FrameCache { return frameCache{c} }

type frameCache struct{ c *Cache }

func frameKey(k imagefmt.FrameKey) []byte { return append([]byte("f\x00"), k.Bytes()...) }

// frameLabel names the image: its UUID (version 2) or digest (version 1).
func frameLabel(k imagefmt.FrameKey) string {
	if bytes.Equal(k.Image[16:], make([]byte, 16)) {
		return "image " + hex.EncodeToString(k.Image[:16])
	}
	return "image digest " + hex.EncodeToString(k.Image[:])
}

func (f frameCache) GetFrame(k imagefmt.FrameKey, buf []byte) ([]byte, bool) {
	return f.c.Get(frameKey(k), buf)
}

func (f frameCache) PutFrame(k imagefmt.FrameKey, frame []byte) {
	f.c.Put(frameKey(k), frameLabel(k), frame)
}

func (f frameCache) DropFrame(k imagefmt.FrameKey) { f.c.Drop(frameKey(k)) }
