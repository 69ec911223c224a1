package ntfs

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

func utf16Bytes(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// reparseBuffer builds a Windows symlink (tag 0xA000000C) or junction
// (0xA0000003) reparse buffer.
func reparseBuffer(tag uint32, sub, print string, flags uint32) []byte {
	s, p := utf16Bytes(sub), utf16Bytes(print)
	le := binary.LittleEndian
	var data []byte
	if tag == tagSymlink {
		data = make([]byte, 12)
		le.PutUint16(data[0:], 0)
		le.PutUint16(data[2:], uint16(len(s)))
		le.PutUint16(data[4:], uint16(len(s)))
		le.PutUint16(data[6:], uint16(len(p)))
		le.PutUint32(data[8:], flags)
		data = append(append(data, s...), p...)
	} else {
		data = make([]byte, 8)
		le.PutUint16(data[2:], uint16(len(s)))
		le.PutUint16(data[4:], uint16(len(s)+2))
		le.PutUint16(data[6:], uint16(len(p)))
		data = append(append(append(append(data, s...), 0, 0), p...), 0, 0)
	}
	hdr := make([]byte, 8)
	le.PutUint32(hdr, tag)
	le.PutUint16(hdr[4:], uint16(len(data)))
	return append(hdr, data...)
}

// TestWindowsLinks plants the reparse points Windows and WSL write (through
// ntfs-3g's system.ntfs_reparse_data) and compares with ntfs-3g's reading.
func TestWindowsLinks(t *testing.T) {
	fx := makeVolume(t, 16<<20, nil, func(t testing.TB, root string) {
		p := func(rel string) string { return filepath.Join(root, rel) }
		must(t, os.MkdirAll(p("dir"), 0o755))
		must(t, os.WriteFile(p("dir/f.txt"), []byte("x\n"), 0o644))
		set := func(name string, dir bool, buf []byte) {
			if dir {
				must(t, os.Mkdir(p(name), 0o755))
			} else {
				must(t, os.WriteFile(p(name), nil, 0o644))
			}
			must(t, unix.Setxattr(p(name), "system.ntfs_reparse_data", buf, 0))
		}
		set("rel", false, reparseBuffer(tagSymlink, `dir\f.txt`, `dir\f.txt`, symlinkRelative))
		set("abs", false, reparseBuffer(tagSymlink, `\??\C:\dir\f.txt`, `C:\dir\f.txt`, 0))
		set("junction", true, reparseBuffer(tagMountPoint, `\??\C:\dir`, `C:\dir`, 0))
		lx := binary.LittleEndian.AppendUint32(nil, tagLxSymlink)
		lx = binary.LittleEndian.AppendUint16(lx, 4+9)
		lx = binary.LittleEndian.AppendUint16(lx, 0)
		lx = binary.LittleEndian.AppendUint32(lx, 2)
		set("wsl", false, append(lx, "dir/f.txt"...))
	})
	v := open(t, fx.img)
	// ntfs-3g turns absolute targets into paths under its mount point; we
	// resolve them against our root. Compare those two by hand.
	opts := treeOptions
	opts.Skip = func(rel string) bool { return rel == "abs" || rel == "junction" }
	fstestutil.CompareTreeWith(t, v, fx.mnt, opts)
	for name, want := range map[string]string{"abs": "/dir/f.txt", "junction": "/dir"} {
		got, err := v.ReadLink(name)
		host, _ := os.Readlink(filepath.Join(fx.mnt, name))
		if err != nil || got != want || host != fx.mnt+want {
			t.Errorf("%s: ReadLink %q, %v; ntfs-3g %q", name, got, err, host)
		}
	}
	// Following them works inside our tree.
	for _, name := range []string{"abs", "rel", "wsl"} {
		b, err := fsReadFile(v, name)
		if err != nil || string(b) != "x\n" {
			t.Errorf("read through %s: %q, %v", name, b, err)
		}
	}
	if es, err := v.ReadDir("junction"); err != nil || len(es) != 1 || es[0].Name() != "f.txt" {
		t.Errorf("ReadDir through the junction: %v, %v", es, err)
	}
}
