package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// fakeFS is a file tree served from memory; fakeDriver recognises a
// partition that starts with "FAKEFS:label".
type fakeFS struct {
	fstest.MapFS
	label string
}

func (f fakeFS) Type() string                             { return "fakefs" }
func (f fakeFS) UUID() string                             { return "" }
func (f fakeFS) Label() string                            { return f.label }
func (f fakeFS) Xattrs(string) (map[string][]byte, error) { return nil, nil }

var _ fsdrivers.Filesystem = fakeFS{}

type fakeDriver struct{ probes *atomic.Int32 }

func (fakeDriver) Name() string { return "fake" }

func (d fakeDriver) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	d.probes.Add(1)
	buf := make([]byte, 32)
	if _, err := r.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	label, ok := strings.CutPrefix(string(bytes.TrimRight(buf, "\x00")), "FAKEFS:")
	if !ok {
		return nil, fmt.Errorf("%w: no FAKEFS magic", fsdrivers.ErrNotFound)
	}
	if label == "bad" {
		return nil, fmt.Errorf("fake: bad superblock: %w", fsdrivers.ErrCorrupt)
	}
	return fakeFS{MapFS: trees[label], label: label}, nil
}

var trees = map[string]fstest.MapFS{
	"boot": {
		"EFI/boot/bootx64.efi": {Data: []byte("MZ boot")},
		"readme.txt":           {Data: []byte("hello")},
	},
	"data": {
		"etc/hostname":     {Data: []byte("box\n")},
		"etc/hosts":        {Data: []byte("127.0.0.1 localhost\n")},
		"etc/fstab":        {Data: []byte("# none\n")},
		"etc/dangling":     {Mode: fs.ModeSymlink | 0o777, Data: []byte("/nowhere")},
		"home/alice/notes": {Data: []byte("notes")},
	},
}

// makeDisk builds a 4 MiB MBR disk: partition 1 "boot" files, 2 no
// filesystem, 3 "data" files.
func makeDisk(t *testing.T) []byte {
	t.Helper()
	d := make([]byte, 4<<20)
	type ent struct {
		start, sectors uint32
		label          string
	}
	for i, e := range []ent{{64, 1024, "boot"}, {1088, 1024, ""}, {2112, 2048, "data"}} {
		b := d[446+16*i:]
		b[4] = 0x83
		binary.LittleEndian.PutUint32(b[8:], e.start)
		binary.LittleEndian.PutUint32(b[12:], e.sectors)
		if e.label != "" {
			copy(d[int64(e.start)*512:], "FAKEFS:"+e.label)
		}
	}
	binary.LittleEndian.PutUint32(d[440:], 0x12345678)
	d[510], d[511] = 0x55, 0xaa
	return d
}

// writeImage stores disk as a dimg image, every non-zero chunk a frame.
func writeImage(t *testing.T, disk []byte, path string) {
	t.Helper()
	const chunk = 64 << 10
	var buf bytes.Buffer
	w, err := imagefmt.NewWriter(&buf, imagefmt.WriterOptions{DiskSize: int64(len(disk)), ChunkSize: chunk,
		ToolVersion: "test", Created: time.Unix(1700000000, 0),
		Metadata: []byte(`{"table":"mbr","mode":"sector","partitions":[{"number":1,"start":32768,"size":524288,"type":"0x83"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	var e imagefmt.Encoder
	fb := make([]byte, imagefmt.FrameBufSize(chunk))
	for c := int64(0); c*chunk < int64(len(disk)); c++ {
		data := disk[c*chunk : (c+1)*chunk]
		if imagefmt.IsZero(data) {
			continue
		}
		f, err := e.Encode(fb, c, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func drivers() ([]fsdrivers.Driver, *atomic.Int32) {
	n := new(atomic.Int32)
	return []fsdrivers.Driver{fakeDriver{n}}, n
}

// TestOpenKinds: an image, a raw file (only with Raw), and what is refused
// before it is opened.
func TestOpenKinds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disk := makeDisk(t)
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, disk, 0o644)
	img := filepath.Join(dir, "disk.dimg")
	writeImage(t, disk, img)
	notImage := filepath.Join(dir, "foreign.dimg")
	os.WriteFile(notImage, disk, 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// An image of a format version this dimg does not read: not a raw
	// disk, even where raw disks are accepted and it is not named *.dimg.
	newer := filepath.Join(dir, "newer.img")
	b, _ := os.ReadFile(img)
	binary.LittleEndian.PutUint32(b[8:], 99)
	os.WriteFile(newer, b, 0o644)

	s, err := Open(ctx, img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Image() == nil || s.Size() != int64(len(disk)) || s.SectorSize() != 512 || s.Name() != img {
		t.Errorf("image: Image %v, Size %d, SectorSize %d, Name %q", s.Image(), s.Size(), s.SectorSize(), s.Name())
	}
	got := make([]byte, 16)
	if _, err := s.ReadAt(got, 2112*512); err != nil || string(got[:11]) != "FAKEFS:data" {
		t.Errorf("ReadAt through the image: %q, %v", got, err)
	}
	s.Close()

	s, err = Open(ctx, raw, Options{Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Image() != nil || s.Size() != int64(len(disk)) || s.SectorSize() != 0 {
		t.Errorf("raw: Image %v, Size %d, SectorSize %d", s.Image(), s.Size(), s.SectorSize())
	}
	if tb, err := s.Table(); err != nil || tb.Kind != parttable.KindMBR || s.SectorSize() != 512 {
		t.Errorf("raw table: %v, %v, sector size %d", tb, err, s.SectorSize())
	}
	if _, err := s.Summary(); !errors.Is(err, imagefmt.ErrFormat) {
		t.Errorf("Summary of a raw disk: %v", err)
	}
	s.Close()

	for _, c := range []struct {
		path string
		opt  Options
		want string
		is   error
	}{
		{raw, Options{}, "not a dimg image", imagefmt.ErrFormat},
		{notImage, Options{Raw: true}, "not a dimg image", imagefmt.ErrFormat}, // *.dimg is never raw
		{newer, Options{Raw: true}, "format version 99", imagefmt.ErrFormat},
		{dir, Options{Raw: true}, "is a directory, not an image", nil},
		{fifo, Options{Raw: true}, "is a pipe or a character device", nil},
		{"/dev/null", Options{}, "is a pipe or a character device", nil},
		{filepath.Join(dir, "missing"), Options{Raw: true}, "no such file", fs.ErrNotExist},
	} {
		done := make(chan error, 1)
		go func() {
			s, err := Open(ctx, c.path, c.opt)
			if err == nil {
				s.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) || c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("Open(%s, %+v) = %v, want %q", c.path, c.opt, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Open(%s) hangs", c.path)
		}
	}
}

// TestLazyProbe: reading the table probes nothing; naming a partition
// probes that one only.
func TestLazyProbe(t *testing.T) {
	drv, probes := drivers()
	s, err := New(Backing{Name: "mem", ReaderAt: bytes.NewReader(makeDisk(t)), Size: 4 << 20}, Options{Drivers: drv})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Table(); err != nil || probes.Load() != 0 {
		t.Fatalf("Table: %v, %d probes", err, probes.Load())
	}
	p, err := s.Partition(3)
	if err != nil || probes.Load() != 1 || !HasFiles(p) || Describe(p) != `fakefs "data"` {
		t.Fatalf("Partition(3): %v, %d probes, %s", err, probes.Load(), Describe(p))
	}
	d, err := s.Layout()
	if err != nil || len(d.Parts) != 3 || probes.Load() != 3 {
		t.Fatalf("Layout: %v, %d probes", err, probes.Load())
	}
	if p := &d.Parts[1]; HasFiles(p) || p.ProbeErr == nil || !strings.Contains(p.ProbeErr.Error(), "partition 2: ") {
		t.Errorf("partition 2: %v, %v", p.Volume, p.ProbeErr)
	}
	if _, err := s.Layout(); err != nil || probes.Load() != 3 {
		t.Errorf("a second Layout probed again: %d probes", probes.Load())
	}
	if _, err := s.Partition(7); !errors.Is(err, fsdisk.ErrNoPartition) || !strings.Contains(err.Error(), "partitions: 1, 2, 3") {
		t.Errorf("Partition(7): %v", err)
	}
}

// TestResolve: N:/PATH addressing, its usage errors and its explanations.
func TestResolve(t *testing.T) {
	drv, _ := drivers()
	s, err := New(Backing{Name: "disk.raw", ReaderAt: bytes.NewReader(makeDisk(t)), Size: 4 << 20}, Options{Drivers: drv})
	if err != nil {
		t.Fatal(err)
	}
	loc, err := s.Resolve("3:/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	if loc.Path != "etc/hostname" || loc.String() != "3:/etc/hostname" || loc.Show(".") != "3:/" {
		t.Errorf("location %+v shown as %s", loc, loc)
	}
	f, err := loc.Open()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "box\n" {
		t.Errorf("read %q, %v", b, err)
	}
	f.Close()

	for _, c := range []struct {
		spec, want string
		is         error
	}{
		{"/etc", "holds 2 filesystems with files (partitions: 1 (fakefs \"boot\"), 2 (no filesystem recognised), 3 (fakefs \"data\")); name one, e.g. 1:/etc", ErrSpec},
		{"0:/x", "partition numbers start at 1", ErrSpec},
		{"3:/a\x00b", "contains NUL", ErrSpec},
		{"9:/x", "partitions: 1, 2, 3", fsdisk.ErrNoPartition},
		{"2:/x", "partition 2 holds no files dimg can read (no filesystem recognised: partition 2: fsdrivers: unknown filesystem: fake: fsdrivers: no filesystem signature: no FAKEFS magic)", nil},
	} {
		_, err := s.Resolve(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("Resolve(%q) = %v, want %q", c.spec, err, c.want)
		}
		if c.is != ErrSpec && errors.Is(err, ErrSpec) {
			t.Errorf("Resolve(%q): %v is not a usage error", c.spec, err)
		}
	}

	for _, c := range []struct {
		spec, want string
		lstat      bool
	}{
		{"3:/etc/hostnme", "3:/etc/hostnme: no such file or directory; similar names in 3:/etc: hostname", true},
		{"3:/nodir/x", "3:/nodir/x: no such file or directory; 3:/ holds: etc, home", true},
		{"3:/etc/dangling", "3:/etc/dangling: dangling symlink", false},
	} {
		loc, err := s.Resolve(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		if c.lstat {
			_, err = loc.Lstat()
		} else {
			_, err = loc.Stat()
		}
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: %v, want %q", c.spec, err, c.want)
		}
	}
	if loc, err := s.Resolve("3:/etc/dangling"); err != nil {
		t.Fatal(err)
	} else if fi, err := loc.Lstat(); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat of a symlink: %v, %v", fi, err)
	}

	// A disk with one filesystem with files takes a bare path.
	bare := make([]byte, 1<<20)
	copy(bare, "FAKEFS:boot")
	s, err = New(Backing{Name: "bare", ReaderAt: bytes.NewReader(bare), Size: int64(len(bare))}, Options{Drivers: drv})
	if err != nil {
		t.Fatal(err)
	}
	if loc, err := s.Resolve("/readme.txt"); err != nil || loc.String() != "1:/readme.txt" {
		t.Errorf("bare path: %v, %v", loc, err)
	}

	// A filesystem its driver finds corrupt: "holds no files", and the
	// damage stays reachable for the exit status.
	copy(bare, "FAKEFS:bad\x00\x00")
	s, err = New(Backing{Name: "bad", ReaderAt: bytes.NewReader(bare), Size: int64(len(bare))}, Options{Drivers: drv})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve("1:/x"); err == nil || !errors.Is(err, fsdrivers.ErrCorrupt) || errors.Is(err, ErrSpec) ||
		!strings.Contains(err.Error(), "partition 1 holds no files dimg can read (no filesystem recognised: partition 1: fsdrivers: unknown filesystem: fake: fake: bad superblock") {
		t.Errorf("corrupt filesystem: %v", err)
	}
}

// TestImageSummaryVerify: an image's own description, and a verification
// that finds damage returns the result and a *VerifyError.
func TestImageSummaryVerify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.dimg")
	writeImage(t, makeDisk(t), path)
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	// Partition 1 is [32768, 557056): chunk 0 (64 KiB, the MBR and the
	// magic at 32768) overlaps it by half.
	if sum.Disk.Table != "mbr" || len(sum.Stored) != 1 || sum.Stored[0] <= 0 || sum.StoredChunks != 2 {
		t.Errorf("summary: %+v", sum)
	}
	if res, err := s.Verify(context.Background(), nil); err != nil || !res.OK() {
		t.Errorf("Verify: %v, %v", res, err)
	}
	s.Close()

	// Damage one payload byte of the first frame.
	b, _ := os.ReadFile(path)
	img, _ := imagefmt.Open(path)
	var off int64
	for e := range img.Entries() {
		off = e.Offset
		break
	}
	img.Close()
	b[off+imagefmt.FrameHeaderSize+1] ^= 0xff
	os.WriteFile(path, b, 0o644)
	s, err = Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Verify(context.Background(), nil)
	var ve *VerifyError
	if res == nil || !errors.As(err, &ve) || ve.Bad != 1 || !errors.Is(err, imagefmt.ErrChecksum) ||
		err.Error() != path+": 1 damaged chunk(s)" {
		t.Errorf("Verify of a damaged image: %v, %v", res, err)
	}
	if (&VerifyError{Name: "x", DigestOK: false}).Error() != "x: image digest does not match its chunks" ||
		!errors.Is(&VerifyError{}, imagefmt.ErrCorrupt) {
		t.Error("digest-only VerifyError")
	}
}

func TestSimilar(t *testing.T) {
	names := []string{"hostname", "hosts", "fstab", "Passwd", "group"}
	for _, c := range []struct {
		want string
		got  string
	}{
		{"hostnme", "hostname"},
		{"host", "hostname,hosts"},
		{"passwd", "Passwd"},
		{"zzz", ""},
	} {
		if got := strings.Join(similar(c.want, names), ","); got != c.got {
			t.Errorf("similar(%q) = %q, want %q", c.want, got, c.got)
		}
	}
	if editDistance("kitten", "sitting") != 3 || editDistance("", "abc") != 3 || editDistance("é", "e") != 1 {
		t.Error("editDistance")
	}
}
