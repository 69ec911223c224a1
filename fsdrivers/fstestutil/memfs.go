package fstestutil

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// MemFS is an in-memory fsdrivers.WritableFS for testing what sits above
// the writable seam (path layer, FUSE nodes) without a real writer. It
// keeps POSIX semantics where they are cheap (link counts, rename rules,
// held unlinked nodes) and a byte budget (Capacity) so ENOSPC can be
// provoked. It does not model holes: a gap reads as zeros and counts.
type MemFS struct {
	mu       sync.Mutex
	nodes    map[uint64]*memNode
	next     uint64
	used     int64
	Capacity int64 // bytes of file data it takes; 0: 1 GiB
	Syncs    int
}

type memNode struct {
	attr    fsdrivers.Attr
	data    []byte
	target  string
	entries map[string]uint64 // directories
	xattrs  map[string][]byte
	holds   int
}

var _ fsdrivers.WritableFS = (*MemFS)(nil)

// NewMemFS makes an empty filesystem with a root directory (node 2).
func NewMemFS() *MemFS {
	m := &MemFS{nodes: map[uint64]*memNode{}, next: 3}
	now := time.Now()
	m.nodes[2] = &memNode{attr: fsdrivers.Attr{Ino: 2, Mode: fsdrivers.ModeDir | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now}, entries: map[string]uint64{}, xattrs: map[string][]byte{}}
	return m
}

func (m *MemFS) Type() string  { return "memfs" }
func (m *MemFS) UUID() string  { return "" }
func (m *MemFS) Label() string { return "" }
func (m *MemFS) Root() uint64  { return 2 }

func errno(e syscall.Errno, op string, a ...any) error {
	return fmt.Errorf("memfs: %s: %w", fmt.Sprint(append([]any{op}, a...)...), e)
}

func (m *MemFS) node(ino uint64) (*memNode, error) {
	n := m.nodes[ino]
	if n == nil {
		return nil, errno(syscall.ENOENT, "node ", ino)
	}
	return n, nil
}

func (m *MemFS) dir(ino uint64) (*memNode, error) {
	n, err := m.node(ino)
	if err != nil {
		return nil, err
	}
	if n.entries == nil {
		return nil, errno(syscall.ENOTDIR, "node ", ino)
	}
	return n, nil
}

func (m *MemFS) capacity() int64 {
	if m.Capacity == 0 {
		return 1 << 30
	}
	return m.Capacity
}

func (m *MemFS) Lookup(dir uint64, name string) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.dir(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	ino, ok := d.entries[name]
	if !ok {
		return fsdrivers.Attr{}, errno(syscall.ENOENT, "lookup ", name)
	}
	return m.nodes[ino].attr, nil
}

func (m *MemFS) Getattr(ino uint64) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	return n.attr, nil
}

func (m *MemFS) ReadDir(dir uint64) ([]fsdrivers.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.dir(dir)
	if err != nil {
		return nil, err
	}
	var out []fsdrivers.DirEntry
	for name, ino := range d.entries {
		out = append(out, fsdrivers.DirEntry{Name: name, Ino: ino, Mode: m.nodes[ino].attr.Mode & fsdrivers.ModeType})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *MemFS) Readlink(ino uint64) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return "", err
	}
	if n.attr.Mode&fsdrivers.ModeType != fsdrivers.ModeLink {
		return "", errno(syscall.EINVAL, "readlink ", ino)
	}
	return n.target, nil
}

func (m *MemFS) ReadAt(ino uint64, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return 0, err
	}
	if n.entries != nil {
		return 0, errno(syscall.EISDIR, "read ", ino)
	}
	if off >= int64(len(n.data)) {
		return 0, io.EOF
	}
	c := copy(p, n.data[off:])
	if c < len(p) {
		return c, io.EOF
	}
	return c, nil
}

func (m *MemFS) ListXattr(ino uint64) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range n.xattrs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

func (m *MemFS) GetXattr(ino uint64, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return nil, err
	}
	v, ok := n.xattrs[name]
	if !ok {
		return nil, errno(syscall.ENODATA, "getxattr ", name)
	}
	return slices.Clone(v), nil
}

func (m *MemFS) Statfs() (fsdrivers.Statfs, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	free := (m.capacity() - m.used) / 4096
	return fsdrivers.Statfs{BlockSize: 4096, Blocks: m.capacity() / 4096, BlocksFree: free, BlocksAvail: free, NameMax: 255}, nil
}

func (m *MemFS) setLen(n *memNode, size int64) error {
	grow := size - int64(len(n.data))
	if grow > 0 && m.used+grow > m.capacity() {
		return errno(syscall.ENOSPC, "write")
	}
	m.used += grow
	if grow > 0 {
		n.data = append(n.data, make([]byte, grow)...)
	} else {
		n.data = n.data[:size]
	}
	n.attr.Size = size
	n.attr.Blocks = (size + 511) / 512
	return nil
}

func (m *MemFS) WriteAt(ino uint64, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return 0, err
	}
	if n.attr.Mode&fsdrivers.ModeType != fsdrivers.ModeFile {
		return 0, errno(syscall.EINVAL, "write ", ino)
	}
	if end := off + int64(len(p)); end > int64(len(n.data)) {
		if err := m.setLen(n, end); err != nil {
			return 0, err
		}
	}
	copy(n.data[off:], p)
	n.attr.Mtime = time.Now()
	n.attr.Ctime = n.attr.Mtime
	return len(p), nil
}

func (m *MemFS) add(dir uint64, name string, n *memNode) (fsdrivers.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if len(name) > 255 {
		return fsdrivers.Attr{}, errno(syscall.ENAMETOOLONG, "create ", name)
	}
	if _, ok := d.entries[name]; ok {
		return fsdrivers.Attr{}, errno(syscall.EEXIST, "create ", name)
	}
	now := time.Now()
	n.attr.Ino = m.next
	m.next++
	n.attr.Atime, n.attr.Mtime, n.attr.Ctime = now, now, now
	if n.xattrs == nil {
		n.xattrs = map[string][]byte{}
	}
	m.nodes[n.attr.Ino] = n
	d.entries[name] = n.attr.Ino
	d.attr.Mtime, d.attr.Ctime = now, now
	return n.attr, nil
}

func (m *MemFS) Create(dir uint64, name string, mode uint32, rdev uint64, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mode&fsdrivers.ModeType == 0 {
		mode |= fsdrivers.ModeFile
	}
	return m.add(dir, name, &memNode{attr: fsdrivers.Attr{Mode: mode, Nlink: 1, Uid: owner.Uid, Gid: owner.Gid, Rdev: rdev}})
}

func (m *MemFS) Mkdir(dir uint64, name string, mode uint32, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.add(dir, name, &memNode{attr: fsdrivers.Attr{Mode: fsdrivers.ModeDir | mode&fsdrivers.ModePerm, Nlink: 2, Uid: owner.Uid, Gid: owner.Gid}, entries: map[string]uint64{}})
	if err == nil {
		m.nodes[dir].attr.Nlink++
	}
	return a, err
}

func (m *MemFS) Symlink(dir uint64, name, target string, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.add(dir, name, &memNode{attr: fsdrivers.Attr{Mode: fsdrivers.ModeLink | 0o777, Nlink: 1, Uid: owner.Uid, Gid: owner.Gid, Size: int64(len(target))}, target: target})
}

func (m *MemFS) Link(ino, dir uint64, name string) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if n.entries != nil {
		return fsdrivers.Attr{}, errno(syscall.EPERM, "link directory ", ino)
	}
	d, err := m.dir(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if _, ok := d.entries[name]; ok {
		return fsdrivers.Attr{}, errno(syscall.EEXIST, "link ", name)
	}
	d.entries[name] = ino
	n.attr.Nlink++
	n.attr.Ctime = time.Now()
	return n.attr, nil
}

// drop removes one link of n, freeing it when none is left and nothing
// holds it.
func (m *MemFS) drop(ino uint64) {
	n := m.nodes[ino]
	if n.entries != nil {
		n.attr.Nlink = 0
	} else {
		n.attr.Nlink--
	}
	if n.attr.Nlink == 0 && n.holds == 0 {
		m.used -= int64(len(n.data))
		delete(m.nodes, ino)
	}
}

func (m *MemFS) Unlink(dir uint64, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.dir(dir)
	if err != nil {
		return err
	}
	ino, ok := d.entries[name]
	if !ok {
		return errno(syscall.ENOENT, "unlink ", name)
	}
	if m.nodes[ino].entries != nil {
		return errno(syscall.EISDIR, "unlink ", name)
	}
	delete(d.entries, name)
	m.drop(ino)
	return nil
}

func (m *MemFS) Rmdir(dir uint64, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.dir(dir)
	if err != nil {
		return err
	}
	ino, ok := d.entries[name]
	if !ok {
		return errno(syscall.ENOENT, "rmdir ", name)
	}
	c := m.nodes[ino]
	if c.entries == nil {
		return errno(syscall.ENOTDIR, "rmdir ", name)
	}
	if len(c.entries) > 0 {
		return errno(syscall.ENOTEMPTY, "rmdir ", name)
	}
	delete(d.entries, name)
	d.attr.Nlink--
	m.drop(ino)
	return nil
}

// isAncestor reports whether a is dir or one of its ancestors.
func (m *MemFS) isAncestor(a, dir uint64) bool {
	for {
		if a == dir {
			return true
		}
		if dir == 2 {
			return false
		}
		parent := uint64(0)
		for ino, n := range m.nodes {
			if n.entries != nil {
				for _, c := range n.entries {
					if c == dir {
						parent = ino
					}
				}
			}
		}
		if parent == 0 {
			return false
		}
		dir = parent
	}
}

func (m *MemFS) Rename(olddir uint64, oldname string, newdir uint64, newname string, flags fsdrivers.RenameFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	od, err := m.dir(olddir)
	if err != nil {
		return err
	}
	nd, err := m.dir(newdir)
	if err != nil {
		return err
	}
	src, ok := od.entries[oldname]
	if !ok {
		return errno(syscall.ENOENT, "rename ", oldname)
	}
	sn := m.nodes[src]
	if sn.entries != nil && m.isAncestor(src, newdir) {
		return errno(syscall.EINVAL, "rename into itself ", oldname)
	}
	dst, exists := nd.entries[newname]
	if flags&fsdrivers.RenameExchange != 0 {
		if !exists {
			return errno(syscall.ENOENT, "exchange ", newname)
		}
		od.entries[oldname], nd.entries[newname] = dst, src
		return nil
	}
	if exists {
		if flags&fsdrivers.RenameNoReplace != 0 {
			return errno(syscall.EEXIST, "rename ", newname)
		}
		if dst == src {
			return nil
		}
		dn := m.nodes[dst]
		switch {
		case dn.entries != nil && sn.entries == nil:
			return errno(syscall.EISDIR, "rename ", newname)
		case dn.entries == nil && sn.entries != nil:
			return errno(syscall.ENOTDIR, "rename ", newname)
		case dn.entries != nil && len(dn.entries) > 0:
			return errno(syscall.ENOTEMPTY, "rename ", newname)
		}
		if dn.entries != nil {
			nd.attr.Nlink--
		}
		m.drop(dst)
	}
	delete(od.entries, oldname)
	nd.entries[newname] = src
	if sn.entries != nil && olddir != newdir {
		od.attr.Nlink--
		nd.attr.Nlink++
	}
	return nil
}

func (m *MemFS) Setattr(ino uint64, set fsdrivers.SetAttr) (fsdrivers.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if set.Size != nil {
		if n.attr.Mode&fsdrivers.ModeType != fsdrivers.ModeFile {
			return fsdrivers.Attr{}, errno(syscall.EINVAL, "truncate ", ino)
		}
		if err := m.setLen(n, *set.Size); err != nil {
			return fsdrivers.Attr{}, err
		}
	}
	if set.Mode != nil {
		n.attr.Mode = n.attr.Mode&fsdrivers.ModeType | *set.Mode&fsdrivers.ModePerm
	}
	if set.Uid != nil {
		n.attr.Uid = *set.Uid
	}
	if set.Gid != nil {
		n.attr.Gid = *set.Gid
	}
	if set.Atime != nil {
		n.attr.Atime = *set.Atime
	}
	if set.Mtime != nil {
		n.attr.Mtime = *set.Mtime
	}
	n.attr.Ctime = time.Now()
	if set.Ctime != nil {
		n.attr.Ctime = *set.Ctime
	}
	return n.attr, nil
}

func (m *MemFS) Fallocate(ino uint64, off, length int64, flags fsdrivers.FallocFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return err
	}
	if flags&fsdrivers.FallocKeepSize == 0 && off+length > int64(len(n.data)) {
		return m.setLen(n, off+length)
	}
	return nil
}

func (m *MemFS) SetXattr(ino uint64, name string, value []byte, flags fsdrivers.XattrFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return err
	}
	_, ok := n.xattrs[name]
	switch {
	case ok && flags&fsdrivers.XattrCreate != 0:
		return errno(syscall.EEXIST, "setxattr ", name)
	case !ok && flags&fsdrivers.XattrReplace != 0:
		return errno(syscall.ENODATA, "setxattr ", name)
	}
	n.xattrs[name] = slices.Clone(value)
	return nil
}

func (m *MemFS) RemoveXattr(ino uint64, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(ino)
	if err != nil {
		return err
	}
	if _, ok := n.xattrs[name]; !ok {
		return errno(syscall.ENODATA, "removexattr ", name)
	}
	delete(n.xattrs, name)
	return nil
}

func (m *MemFS) Hold(ino uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[ino]; n != nil {
		n.holds++
	}
}

func (m *MemFS) Release(ino uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[ino]; n != nil && n.holds > 0 {
		n.holds--
		if n.holds == 0 && n.attr.Nlink == 0 {
			m.used -= int64(len(n.data))
			delete(m.nodes, ino)
		}
	}
}

func (m *MemFS) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Syncs++
	return nil
}

func (m *MemFS) Close() error { return m.Sync() }
