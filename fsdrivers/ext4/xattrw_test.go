package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
)

// hostXattrs reads a file's attributes through the kernel, the way
// getfattr -d -m - does (ACLs in their xattr form).
func hostXattrs(t *testing.T, p string) map[string][]byte {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	m := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		m[name] = v[:vn]
	}
	return m
}

// aclXattr builds a POSIX ACL in the kernel's xattr form from (tag, perm,
// id) triples.
func aclXattr(entries ...[3]uint32) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 2)
	for _, e := range entries {
		b = le.AppendUint16(b, uint16(e[0]))
		b = le.AppendUint16(b, uint16(e[1]))
		b = le.AppendUint32(b, e[2])
	}
	return b
}

const noID = 0xFFFFFFFF

// patchXattrs replaces inode inum's attributes in img with list, encoded
// by encodeIbody and encodeXattrBlock, in the inode and its existing xattr
// block: the encoders tested without the rest of the writer.
func patchXattrs(t *testing.T, img string, inum uint32, list []xattr) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	v, err := Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	ino, err := v.readInode(inum)
	if err != nil {
		t.Fatal(err)
	}
	gd, err := v.groupDesc((inum - 1) / v.sb.inodesPerGroup)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(gd.inodeTable)<<v.blockBits + int64((inum-1)%v.sb.inodesPerGroup)*int64(v.sb.inodeSize)
	raw := make([]byte, v.sb.inodeSize)
	if _, err := f.ReadAt(raw, off); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	extra := 0
	if len(raw) > goodOldInode {
		extra = int(le.Uint16(raw[0x80:]))
	}
	area := raw[min(len(raw), goodOldInode+extra):]
	ibody, block, err := layoutXattrs(list, len(area), int(v.blockSize))
	if err != nil {
		t.Fatal(err)
	}
	if len(block) > 0 && ino.fileACL == 0 {
		t.Fatal("test setup: the inode has no xattr block to reuse")
	}
	if len(block) == 0 {
		t.Fatal("test setup: the list should spill into the block")
	}
	if err := encodeIbody(ibody, area); err != nil {
		t.Fatal(err)
	}
	b, err := encodeXattrBlock(block, int(v.blockSize), 1, ino.fileACL, v.metaCsum, v.csumSeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, int64(ino.fileACL)<<v.blockBits); err != nil {
		t.Fatal(err)
	}
	if v.metaCsum {
		setInodeCsum(raw, ino.seed, extra)
	}
	if _, err := f.WriteAt(raw, off); err != nil {
		t.Fatal(err)
	}
}

// setInodeCsum stores an inode's metadata_csum checksum (test helper; the
// writer has its own).
func setInodeCsum(raw []byte, seed uint32, extra int) {
	le := binary.LittleEndian
	le.PutUint16(raw[0x7C:], 0)
	if extra >= 4 {
		le.PutUint16(raw[0x82:], 0)
	}
	c := crc32c(seed, raw)
	le.PutUint16(raw[0x7C:], uint16(c))
	if extra >= 4 {
		le.PutUint16(raw[0x82:], uint16(c>>16))
	}
}

// TestXattrEncodersAgainstKernel checks the hashes against what the kernel
// writes, then replaces a kernel-written file's attributes with ours
// (in-inode and block, an ACL, an SELinux label) and checks that e2fsck
// finds the image clean and the kernel lists exactly what we set.
func TestXattrEncodersAgainstKernel(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	needLoop(t)
	for _, opts := range [][]string{
		{"-t", "ext4", "-b", "4096", "-I", "256"},
		{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum", "-I", "128"}, // no in-inode room
	} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 32<<20, "", opts...)
			dir, unmount := mount(t, img, true)
			p := filepath.Join(dir, "f")
			os.WriteFile(p, []byte("data"), 0o644)
			kernelSet := map[string][]byte{
				"user.small":       []byte("v"),
				"user.big":         bytes.Repeat([]byte("B"), 300),
				"trusted.t":        []byte("trusted value"),
				"security.selinux": []byte("system_u:object_r:etc_t:s0\x00"),
				"user.empty":       {},
			}
			for _, k := range slices.Sorted(maps.Keys(kernelSet)) {
				if err := unix.Setxattr(p, k, kernelSet[k], 0); err != nil {
					t.Fatalf("setxattr %s: %v", k, err)
				}
			}
			acl := aclXattr([3]uint32{aclUserObj, 6, noID}, [3]uint32{aclUser, 4, 1000},
				[3]uint32{aclGroupObj, 4, noID}, [3]uint32{aclGroup, 5, 100}, [3]uint32{aclMask, 7, noID},
				[3]uint32{aclOther, 4, noID})
			if err := unix.Setxattr(p, "system.posix_acl_access", acl, 0); err != nil {
				t.Fatalf("set ACL: %v", err)
			}
			kernelSet["system.posix_acl_access"] = acl
			var st unix.Stat_t
			unix.Stat(p, &st)
			unmount()

			// The kernel's hashes are ours.
			v := openImage(t, img)
			ino, err := v.readInode(uint32(st.Ino))
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.xattrMap(ino)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(got, kernelSet, bytes.Equal) {
				t.Errorf("reader: %q, kernel set %q", got, kernelSet)
			}
			if ino.fileACL == 0 {
				t.Fatal("the kernel used no xattr block")
			}
			blk, err := v.xattrBlock(ino.fileACL)
			if err != nil {
				t.Fatal(err)
			}
			checkBlockHashes(t, blk, v)

			// Ours, read by the kernel and e2fsck.
			all, err := v.allXattrs(ino)
			if err != nil {
				t.Fatal(err)
			}
			list := slices.Clone(all)
			want := maps.Clone(kernelSet)
			edit := func(name string, val []byte, flags fsdrivers.XattrFlags, remove bool) {
				t.Helper()
				var err error
				if list, err = editXattrs(list, name, val, flags, remove); err != nil {
					t.Fatalf("edit %s: %v", name, err)
				}
				if remove {
					delete(want, name)
				} else {
					want[name] = val
				}
			}
			edit("user.small", nil, 0, true)
			edit("user.big", bytes.Repeat([]byte("b"), 350), fsdrivers.XattrReplace, false)
			edit("security.selinux", []byte("unconfined_u:object_r:user_home_t:s0\x00"), 0, false)
			edit("user.new", []byte("new value"), fsdrivers.XattrCreate, false)
			acl2 := aclXattr([3]uint32{aclUserObj, 7, noID},
				[3]uint32{aclUser, 4, 33}, [3]uint32{aclUser, 6, 1000}, [3]uint32{aclGroupObj, 5, noID},
				[3]uint32{aclMask, 7, noID}, [3]uint32{aclOther, 0, noID})
			edit("system.posix_acl_access", acl2, 0, false)
			for i := range 5 {
				edit("trusted.n"+strings.Repeat("x", i*9), bytes.Repeat([]byte{byte(i)}, i*13), 0, false)
			}
			patchXattrs(t, img, uint32(st.Ino), list)
			fsck(t, img)
			dir, _ = mount(t, img, false)
			if host := hostXattrs(t, filepath.Join(dir, "f")); !maps.EqualFunc(host, want, bytes.Equal) {
				t.Errorf("kernel lists\n%q\nwe set\n%q", host, want)
			}
		})
	}
}

// checkBlockHashes compares a kernel-written block's entry and block
// hashes with ours.
func checkBlockHashes(t *testing.T, b []byte, v *Volume) {
	t.Helper()
	le := binary.LittleEndian
	var h uint32
	for pos := xattrHdrSize; le.Uint32(b[pos:]) != 0; {
		nl := int(b[pos])
		x := xattr{index: b[pos+1], name: string(b[pos+16 : pos+16+nl])}
		voff, vsize := int(le.Uint16(b[pos+2:])), int(le.Uint32(b[pos+8:]))
		x.value = b[voff : voff+vsize]
		stored := le.Uint32(b[pos+12:])
		if got := xattrEntryHash(x); got != stored {
			t.Errorf("entry %q: hash %#x, kernel %#x", x.name, got, stored)
		}
		h = h<<16 ^ h>>16 ^ stored
		pos += xattrEntryLen(x)
	}
	if stored := le.Uint32(b[12:]); stored != h {
		t.Errorf("block hash %#x, kernel %#x", h, stored)
	}
}

func TestEditXattrsErrors(t *testing.T) {
	list, err := editXattrs(nil, "user.a", []byte("1"), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		val    []byte
		flags  fsdrivers.XattrFlags
		remove bool
		want   error
	}{
		{"user.a", []byte("2"), fsdrivers.XattrCreate, false, syscall.EEXIST},
		{"user.b", []byte("2"), fsdrivers.XattrReplace, false, syscall.ENODATA},
		{"user.b", nil, 0, true, syscall.ENODATA},
		{"os2.x", []byte("2"), 0, false, syscall.EOPNOTSUPP},
		{"system.data", []byte("2"), 0, false, syscall.EOPNOTSUPP},
		{"user.", []byte("2"), 0, false, syscall.EINVAL},
		{"user." + strings.Repeat("n", 256), []byte("2"), 0, false, syscall.ERANGE},
		{"user.big", make([]byte, maxXattrValue+1), 0, false, syscall.E2BIG},
		{"system.posix_acl_access", []byte{2, 0, 0, 0, 1, 0}, 0, false, syscall.EINVAL},
		{"system.posix_acl_access", aclXattr([3]uint32{aclGroupObj, 4, noID}, [3]uint32{aclUserObj, 6, noID}), 0, false, syscall.EINVAL},
		{"system.posix_acl_access", aclXattr([3]uint32{aclUserObj, 6, noID}, [3]uint32{aclUser, 6, 5},
			[3]uint32{aclGroupObj, 4, noID}, [3]uint32{aclOther, 4, noID}), 0, false, syscall.EINVAL}, // no mask
	} {
		if _, err := editXattrs(list, c.name, c.val, c.flags, c.remove); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Too much for the inode and one block.
	for i := range 10 {
		list, _ = editXattrs(list, "user.k"+string(rune('a'+i)), make([]byte, 500), 0, false)
	}
	if _, _, err := layoutXattrs(list, 100, 4096); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("layout of 5000 bytes into 100+4096: %v, want ENOSPC", err)
	}
}

// TestXattrRoundTrip encodes attribute lists and reads them back with the
// reader's parser.
func TestXattrRoundTrip(t *testing.T) {
	v := &Volume{}
	list := []xattr{
		{index: xattrIndexSystem, name: "data", value: []byte("inline tail")},
		{index: xattrIndexUser, name: "zz", value: []byte("1")},
		{index: xattrIndexUser, name: "a", value: nil},
		{index: xattrIndexSecurity, name: "selinux", value: []byte("ctx\x00")},
		{index: xattrIndexTrusted, name: "long", value: bytes.Repeat([]byte("L"), 800)},
	}
	ibody, block, err := layoutXattrs(list, 256-128-32, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if len(ibody) == 0 || ibody[0].name != "data" || len(block) == 0 {
		t.Fatalf("layout: ibody %d (first %q), block %d", len(ibody), ibody[0].name, len(block))
	}
	area := make([]byte, 256-128-32)
	if err := encodeIbody(ibody, area); err != nil {
		t.Fatal(err)
	}
	got, err := v.parseXattrEntries(area[4:], area[4:], xattrLoc{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeXattrBlock(block, 1024, 1, 77, true, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = v.parseXattrEntries(b[xattrHdrSize:], b, xattrLoc{}, got); err != nil {
		t.Fatal(err)
	}
	key := func(x xattr) string { return xattrPrefix[x.index] + x.name + "=" + string(x.value) }
	var a, w []string
	for _, x := range got {
		a = append(a, key(x))
	}
	for _, x := range list {
		w = append(w, key(x))
	}
	slices.Sort(a)
	slices.Sort(w)
	if !slices.Equal(a, w) {
		t.Errorf("read back %q, want %q", a, w)
	}
	if binary.LittleEndian.Uint32(b[xattrBlockChecksum:]) != xattrBlockCsum(b, 77, 0x1234) {
		t.Error("block checksum")
	}
}

// wXattrs reads all attributes of ino through the WritableFS.
func wXattrs(t *testing.T, w fsdrivers.WritableFS, ino uint64) map[string][]byte {
	t.Helper()
	names, err := w.ListXattr(ino)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, n := range names {
		v, err := w.GetXattr(ino, n)
		if err != nil {
			t.Fatalf("GetXattr %d %s: %v", ino, n, err)
		}
		m[n] = v
	}
	return m
}

// TestSetXattrThroughWriter sets and removes attributes with the writer
// on files the kernel made (some sharing one xattr block) and on new ones,
// then checks e2fsck and what the kernel lists; and that what the kernel
// set (setfattr, setfacl, SELinux labels) reads back equal through
// ListXattr/GetXattr.
func TestSetXattrThroughWriter(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	needLoop(t)
	for _, opts := range [][]string{
		{"-t", "ext4", "-b", "4096"},
		{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum", "-I", "128"},
		{"-t", "ext3", "-b", "1024"},
	} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 32<<20, "", opts...)
			dir, unmount := mount(t, img, true)
			hp := func(n string) string { return filepath.Join(dir, n) }
			for _, n := range []string{"f", "s1", "s2", "g"} {
				os.WriteFile(hp(n), []byte(n), 0o640)
			}
			os.Mkdir(hp("d"), 0o755)
			set := func(n, k string, v []byte) {
				if err := unix.Setxattr(hp(n), k, v, 0); err != nil {
					t.Fatalf("setxattr %s %s: %v", n, k, err)
				}
			}
			set("f", "user.small", []byte("v"))
			set("f", "user.big", bytes.Repeat([]byte("B"), 600))
			set("f", "security.selinux", []byte("system_u:object_r:etc_t:s0\x00"))
			set("f", "system.posix_acl_access", aclXattr([3]uint32{aclUserObj, 6, noID}, [3]uint32{aclUser, 4, 1000},
				[3]uint32{aclGroupObj, 4, noID}, [3]uint32{aclMask, 4, noID}, [3]uint32{aclOther, 0, noID}))
			set("d", "system.posix_acl_default", aclXattr([3]uint32{aclUserObj, 7, noID},
				[3]uint32{aclGroupObj, 5, noID}, [3]uint32{aclGroup, 5, 50}, [3]uint32{aclMask, 5, noID}, [3]uint32{aclOther, 5, noID}))
			// Identical large sets: the kernel shares one block between them.
			for _, n := range []string{"s1", "s2"} {
				set(n, "user.shared", bytes.Repeat([]byte("S"), 700))
				set(n, "trusted.shared", bytes.Repeat([]byte("T"), 200))
			}
			kernel := map[string]map[string][]byte{}
			for _, n := range []string{"f", "s1", "s2", "g", "d"} {
				kernel[n] = hostXattrs(t, hp(n))
			}
			unmount()

			w := openW(t, img)
			ino := func(n string) uint64 {
				a, err := w.Lookup(w.Root(), n)
				if err != nil {
					t.Fatal(err)
				}
				return a.Ino
			}
			for n, m := range kernel {
				if got := wXattrs(t, w, ino(n)); !maps.EqualFunc(got, m, bytes.Equal) {
					t.Errorf("%s: GetXattr %q, kernel %q", n, got, m)
				}
			}
			want := map[string]map[string][]byte{}
			for n, m := range kernel {
				want[n] = maps.Clone(m)
			}
			do := func(n, k string, v []byte, flags fsdrivers.XattrFlags, remove bool) {
				t.Helper()
				var err error
				if remove {
					err = w.RemoveXattr(ino(n), k)
					delete(want[n], k)
				} else {
					err = w.SetXattr(ino(n), k, v, flags)
					want[n][k] = v
				}
				if err != nil {
					t.Fatalf("%s %s: %v", n, k, err)
				}
			}
			do("f", "user.small", nil, 0, true)
			do("f", "user.big", bytes.Repeat([]byte("b"), 300), fsdrivers.XattrReplace, false)
			do("f", "security.selinux", []byte("unconfined_u:object_r:user_home_t:s0\x00"), 0, false)
			do("f", "system.posix_acl_access", aclXattr([3]uint32{aclUserObj, 7, noID}, [3]uint32{aclUser, 6, 33},
				[3]uint32{aclUser, 4, 1000}, [3]uint32{aclGroupObj, 5, noID}, [3]uint32{aclMask, 7, noID},
				[3]uint32{aclOther, 1, noID}), 0, false)
			acl := func(n string) uint64 {
				i, err := w.(*wfs).liveInode(ino(n))
				if err != nil {
					t.Fatal(err)
				}
				return i.fileACL()
			}
			if acl("s1") == 0 || acl("s1") != acl("s2") {
				t.Errorf("the kernel did not share one xattr block (s1 %d, s2 %d): copy on write untested", acl("s1"), acl("s2"))
			}
			do("s1", "user.shared", []byte("changed"), 0, false) // copy on write: s2 keeps the old block
			if acl("s1") == acl("s2") {
				t.Errorf("s1 still uses the shared block %d", acl("s2"))
			}
			do("d", "system.posix_acl_default", aclXattr([3]uint32{aclUserObj, 7, noID},
				[3]uint32{aclGroupObj, 5, noID}, [3]uint32{aclOther, 0, noID}), 0, false)
			// An ACL the mode says as much as: only the mode changes.
			if err := w.SetXattr(ino("g"), "system.posix_acl_access", aclXattr([3]uint32{aclUserObj, 6, noID},
				[3]uint32{aclGroupObj, 0, noID}, [3]uint32{aclOther, 4, noID}), 0); err != nil {
				t.Fatal(err)
			}
			if err := w.SetXattr(ino("g"), "system.posix_acl_default", aclXattr([3]uint32{aclUserObj, 6, noID},
				[3]uint32{aclGroupObj, 0, noID}, [3]uint32{aclOther, 4, noID}), 0); !errors.Is(err, syscall.EACCES) {
				t.Errorf("default ACL on a file: %v, want EACCES", err)
			}
			if err := w.RemoveXattr(ino("g"), "user.none"); !errors.Is(err, syscall.ENODATA) {
				t.Errorf("removing a missing xattr: %v, want ENODATA", err)
			}
			// A new file whose attributes spill into a block, then all go.
			a, err := w.Create(w.Root(), "new", fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
			if err != nil {
				t.Fatal(err)
			}
			want["new"] = map[string][]byte{}
			for k := range 12 {
				do("new", fmt.Sprintf("user.k%02d", k), bytes.Repeat([]byte{byte('a' + k)}, 20+k*7), 0, false)
			}
			a2, _ := w.Create(w.Root(), "gone", fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
			want["gone"] = map[string][]byte{}
			for k := range 6 {
				do("gone", fmt.Sprintf("user.k%d", k), bytes.Repeat([]byte("x"), 100), 0, false)
			}
			for k := range 6 {
				do("gone", fmt.Sprintf("user.k%d", k), nil, 0, true)
			}
			_, _ = a, a2
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			fsck(t, img)
			dir, _ = mount(t, img, false)
			for n, m := range want {
				if got := hostXattrs(t, filepath.Join(dir, n)); !maps.EqualFunc(got, m, bytes.Equal) {
					t.Errorf("%s: kernel lists\n%q\nwant\n%q", n, got, m)
				}
			}
			for n, mode := range map[string]os.FileMode{"f": 0o771, "g": 0o604} {
				fi, err := os.Stat(filepath.Join(dir, n))
				if err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: mode %v, want %v (from the ACL)", n, fi.Mode().Perm(), mode)
				}
			}
		})
	}
}
