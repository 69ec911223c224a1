package ext4

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// inlineSource builds a tree mke2fs -d stores inline: small files (empty,
// under and over the 60 bytes of i_block) and small directories.
func inlineSource(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	p := func(s string) string { return filepath.Join(src, s) }
	files := map[string]int{"e": 0, "tiny": 10, "sixty": 60, "mid": 100, "idir/a": 5, "idir/b": 7,
		"idir2/sub/a": 3, "idir3/x": 1, "bdir/keep": 1}
	for k := range 40 {
		files[fmt.Sprintf("bdir/entry-with-a-long-name-%02d", k)] = 2
	}
	for name, n := range files {
		os.MkdirAll(filepath.Dir(p(name)), 0o755)
		if err := os.WriteFile(p(name), bytes.Repeat([]byte{byte(len(name))}, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(p("edir"), 0o755)
	filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		os.Lchown(path, int(testOwner.Uid), int(testOwner.Gid))
		return nil
	})
	return src
}

func inodeFlagsOf(t *testing.T, img, rel string) uint32 {
	t.Helper()
	v := openImage(t, img)
	ino, err := v.walk("stat", rel, false)
	if err != nil {
		t.Fatal(err)
	}
	return ino.flags
}

// TestInlineDataWrite edits files and directories mke2fs stored inline:
// writes that fit stay inline, writes that do not convert the file to
// extents; any change to an inline directory converts it. The kernel then
// shows the mirror's tree and e2fsck finds the image clean.
func TestInlineDataWrite(t *testing.T) {
	needRoot(t)
	need(t, "mke2fs", "e2fsck", "cp")
	for _, c := range []struct {
		name string
		opts []string
	}{
		{"ext4", []string{"-t", "ext4", "-O", "inline_data", "-I", "256"}},
		{"ext4-1k-nocsum", []string{"-t", "ext4", "-b", "1024", "-O", "inline_data,^metadata_csum", "-I", "512"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := inlineSource(t)
			img := mkfs(t, 32<<20, src, c.opts...)
			fsck(t, img)
			for _, rel := range []string{"tiny", "mid", "idir", "idir2/sub", "idir3", "edir"} {
				if inodeFlagsOf(t, img, rel)&flagInlineData == 0 {
					t.Fatalf("mke2fs did not store %s inline: the test needs it", rel)
				}
			}
			host := t.TempDir()
			runCmd(t, "cp", "-a", src+"/.", host)
			p := &wpair{t: t, w: openW(t, img), host: host}

			p.write("tiny", []byte("abc"), 3)                     // stays inline
			p.write("mid", []byte("12345"), 100)                  // grows a little: still inline
			p.write("e", []byte("into i_block"), 20)              // empty file, data after a gap
			p.write("sixty", bytes.Repeat([]byte("s"), 5000), 30) // outgrows the inode
			p.truncate("tiny", 2)
			p.truncate("mid", 3000)                    // converts
			p.write("idir/new", []byte("new file"), 0) // converts the directory
			p.unlink("idir2/sub/a")
			p.rename("idir3", "bdir/idir3", 0) // an inline directory changes parent
			p.rmdir("edir")
			n, err := p.resolve("tiny")
			must(t, err)
			must(t, p.w.SetXattr(n, "user.note", []byte("on an inline file"), 0))
			must(t, unix.Setxattr(p.hp("tiny"), "user.note", []byte("on an inline file"), 0))
			got := make([]byte, 2)
			if k, _ := p.w.ReadAt(n, got, 0); k != 2 || string(got) != string([]byte{4, 4}) {
				t.Errorf("tiny after setxattr reads %q", got[:k])
			}
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, host, true)
			for rel, inline := range map[string]bool{"tiny": true, "e": true, "sixty": false, "mid": false,
				"idir": false, "idir2/sub": false, "bdir/idir3": true, "idir/new": true} {
				if got := inodeFlagsOf(t, img, rel)&flagInlineData != 0; got != inline {
					t.Errorf("%s: inline %v, want %v", rel, got, inline)
				}
			}
		})
	}
}
