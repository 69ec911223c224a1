package swap

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
)

const testUUID = "5a1b4479-17cb-463f-ae5c-968489a29b19"

// blkid returns blkid's low-level probe of path as KEY=value pairs.
func blkid(t *testing.T, path string) map[string]string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "export", path).Output()
	if err != nil {
		t.Fatalf("blkid %s: %v", path, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestMkswap(t *testing.T) {
	for _, tool := range []string{"mkswap", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	cases := []struct {
		name     string
		pageSize int64
		label    string
	}{
		{"4k", 4096, "swappy"},
		{"8k no label", 8192, ""},
		{"64k long label", 65536, "sixteen-chars-ab"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := t.TempDir() + "/swap.img"
			if err := os.WriteFile(p, make([]byte, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"-U", testUUID, "--pagesize", strconv.FormatInt(c.pageSize, 10)}
			if c.label != "" {
				args = append(args, "-L", c.label)
			}
			if out, err := exec.Command("mkswap", append(args, p)...).CombinedOutput(); err != nil {
				t.Fatalf("mkswap: %v\n%s", err, out)
			}
			disk, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			v, err := Driver{}.Open(bytes.NewReader(disk), int64(len(disk)))
			if err != nil {
				t.Fatal(err)
			}
			want := blkid(t, p)
			if v.Type() != want["TYPE"] || v.UUID() != want["UUID"] || v.Label() != want["LABEL"] {
				t.Errorf("type %q uuid %q label %q; blkid %q %q %q", v.Type(), v.UUID(), v.Label(), want["TYPE"], want["UUID"], want["LABEL"])
			}
			rs, err := v.(fsdrivers.HeaderOnly).HeaderRanges()
			if err != nil || len(rs) != 1 || rs[0] != (fsdrivers.Range{Off: 0, Len: c.pageSize}) {
				t.Errorf("header ranges %v, %v", rs, err)
			}
			// Oracle for HeaderRanges: the first page alone, in an otherwise
			// zero area, is still the same swap area to blkid.
			only := make([]byte, len(disk))
			copy(only, disk[:c.pageSize])
			q := t.TempDir() + "/only.img"
			if err := os.WriteFile(q, only, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := blkid(t, q); got["UUID"] != want["UUID"] || got["TYPE"] != "swap" {
				t.Errorf("first page only: blkid %v", got)
			}
		})
	}
}

func v1Header(ps int) []byte {
	b := make([]byte, ps)
	copy(b[ps-10:], "SWAPSPACE2")
	b[versionOff] = 1
	return b
}

func TestOpenErrors(t *testing.T) {
	badVersion := v1Header(4096)
	badVersion[versionOff] = 7
	bigEndian := v1Header(4096)
	bigEndian[versionOff], bigEndian[versionOff+3] = 0, 1
	v0 := make([]byte, 4096)
	copy(v0[4086:], "SWAP-SPACE")
	cases := []struct {
		name string
		disk []byte
		want error // nil = opens
	}{
		{"zeros", make([]byte, 1<<16), fsdrivers.ErrNotFound},
		{"too small", v1Header(4096)[:4000], fsdrivers.ErrNotFound},
		{"empty", nil, fsdrivers.ErrNotFound},
		{"bad version", badVersion, fsdrivers.ErrCorrupt},
		{"big-endian", bigEndian, nil},
		{"version 0", v0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := Driver{}.Open(bytes.NewReader(c.disk), int64(len(c.disk)))
			if c.want == nil {
				if err != nil || v.UUID() != "" || v.Label() != "" {
					t.Errorf("got %v, %v", v, err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(v1Header(4096))
	f.Add(v1Header(8192))
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, disk []byte) {
		v, err := Driver{}.Open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		rs, _ := v.(fsdrivers.HeaderOnly).HeaderRanges()
		if len(rs) != 1 || rs[0].Len > int64(len(disk)) {
			t.Fatalf("ranges %v on %d bytes", rs, len(disk))
		}
	})
}
