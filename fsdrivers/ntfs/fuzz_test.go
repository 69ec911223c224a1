package ntfs

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"testing"
)

func FuzzLZNT1(f *testing.F) {
	// A literal-only chunk, a chunk with a back reference, an uncompressed
	// chunk, and garbage.
	lit := []byte{0x05, 0xb0, 0x00, 'a', 'b', 'c', 'd', 'e'}
	f.Add(lit)
	f.Add([]byte{0x05, 0xb0, 0x02, 'a', 'b', 0x01, 0x00, 0x00, 0x00})
	f.Add(append([]byte{0xff, 0x3f}, bytes.Repeat([]byte{'x'}, 4096)...))
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, src []byte) {
		dst := make([]byte, 16*4096)
		lznt1Decompress(dst, src)
		dst = make([]byte, 4096+100)
		lznt1Decompress(dst, src)
	})
}

func FuzzRecord(f *testing.F) {
	if b, err := bareRecords(); err == nil {
		for i := 0; i < 12; i++ {
			f.Add(b[i*1024 : (i+1)*1024])
		}
	}
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(bytes.Clone(b), 1)
		if err != nil {
			return
		}
		for _, a := range r.attrs {
			if a.typ == atIndexRoot && len(a.value) >= 32 {
				if es, err := parseNode(a.value[16:]); err == nil {
					for _, e := range es {
						decodeKey(e)
					}
				}
			}
		}
	})
}

// bareRecords returns the first MFT records of a fresh mkntfs volume.
func bareRecords() ([]byte, error) {
	b, err := bareImage()
	if err != nil {
		return nil, err
	}
	mft, _ := mftOffsets(b)
	return b[mft : mft+16*1024], nil
}

func bareImage() ([]byte, error) {
	if _, err := exec.LookPath("mkntfs"); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp("", "ntfs-fuzz")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	p := d + "/v.img"
	if err := os.WriteFile(p, make([]byte, 2<<20), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mkntfs", "-F", "-Q", "-T", p).CombinedOutput(); err != nil {
		return nil, &exec.ExitError{Stderr: out}
	}
	return os.ReadFile(p)
}

// FuzzVolume patches a few bytes anywhere in a small real volume (filled
// by ntfs-3g when it can be mounted here) and then uses everything: open,
// walk, read every file, links, streams, used ranges. Nothing may panic or
// hang, whatever the patch.
func FuzzVolume(f *testing.F) {
	var base []byte
	if os.Geteuid() == 0 && haveNTFS3G() {
		fx := makeVolume(f, 2<<20, nil, func(t testing.TB, root string) {
			for _, d := range []string{"d/e", "c"} {
				must(t, os.MkdirAll(root+"/"+d, 0o755))
			}
			must(t, os.WriteFile(root+"/small", []byte("hello"), 0o644))
			must(t, os.WriteFile(root+"/d/e/big", randBytes(1, 100_000), 0o644))
			for i := 0; i < 40; i++ {
				must(t, os.WriteFile(root+"/d/"+manyName(i)[5:], nil, 0o644))
			}
			setAttrib(t, root+"/c", 0x810)
			must(t, os.WriteFile(root+"/c/t", text(70_000), 0o644))
			must(t, os.Symlink("d/e/big", root+"/link"))
			must(t, os.Link(root+"/small", root+"/d/hard"))
		})
		var err error
		if base, err = os.ReadFile(fx.img); err != nil {
			f.Fatal(err)
		}
	} else {
		var err error
		if base, err = bareImage(); err != nil {
			f.Skip("mkntfs not installed")
		}
	}
	mft, _ := mftOffsets(base)
	f.Add(uint32(0), []byte{})
	f.Add(uint32(0x0b), []byte{0x00, 0x04})
	f.Add(uint32(0x30), []byte{0x01})
	for rec := int64(0); rec < 40; rec += 3 {
		f.Add(uint32(mft+rec*1024+0x38), []byte{0xff, 0xff})
		f.Add(uint32(mft+rec*1024+0x100), []byte{0x41, 0x42, 0x43, 0x44})
	}
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		if len(patch) > 64 {
			patch = patch[:64]
		}
		img := bytes.Clone(base)
		copy(img[int(off)%len(img):], patch)
		v, err := openBytes(img)
		if err != nil {
			return
		}
		v.UsedRanges()
		fs.WalkDir(v, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			v.Lstat(p)
			v.Xattrs(p)
			if d.Type()&fs.ModeSymlink != 0 {
				v.ReadLink(p)
				v.Stat(p)
				return nil
			}
			if d.Type().IsRegular() {
				if fh, err := v.Open(p); err == nil {
					io.Copy(io.Discard, fh)
					fh.Close()
				}
			}
			return nil
		})
	})
}

func haveNTFS3G() bool {
	for _, tool := range []string{"mkntfs", "ntfs-3g", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	_, err := os.Stat("/dev/fuse")
	return err == nil
}
