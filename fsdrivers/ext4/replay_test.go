package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// ext4IocShutdown is EXT4_IOC_SHUTDOWN (_IOR('X', 125, __u32)); with
// goingLogFlush the kernel commits the running transaction to the journal
// and stops, leaving the filesystem needing recovery: what xfs_io's
// "shutdown -f" (godown) does.
const (
	ext4IocShutdown = 0x8004587D
	goingLogFlush   = 1
)

// shutdownFS forces the filesystem mounted at dir down with its journal
// committed but not checkpointed.
func shutdownFS(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.IoctlSetPointerInt(int(f.Fd()), ext4IocShutdown, goingLogFlush); err != nil {
		t.Skipf("EXT4_IOC_SHUTDOWN: %v", err)
	}
}

// needsRecovery builds a filesystem with mke2fs opts, mounts it with
// mountOpts, runs work on it and shuts it down, so that it is left with
// committed transactions in its journal and needs_recovery set.
func needsRecovery(t *testing.T, size int64, opts []string, mountOpts string, work func(t *testing.T, dir, img string)) string {
	t.Helper()
	needLoop(t)
	img := mkfs(t, size, "", opts...)
	dev := strings.TrimSpace(runCmd(t, "losetup", "-f", "--show", img))
	defer runCmdErr("losetup", "-d", dev)
	dir := t.TempDir()
	o := "rw"
	if mountOpts != "" {
		o += "," + mountOpts
	}
	if out, err := runCmdErr("mount", "-t", "ext4", "-o", o, dev, dir); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	func() {
		defer func() {
			if out, err := runCmdErr("umount", dir); err != nil {
				t.Errorf("umount: %v\n%s", err, out)
			}
		}()
		work(t, dir, img)
		shutdownFS(t, dir)
	}()
	runCmdErr("losetup", "-d", dev)
	if !superNeedsRecovery(t, img) {
		t.Fatal("the shut-down filesystem does not need recovery")
	}
	return img
}

func superNeedsRecovery(t *testing.T, img string) bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, superSize)
	if _, err := f.ReadAt(b, superOffset); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[0x60:])&incompatRecover != 0
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// journalWork writes, renames, deletes (freeing extent and directory
// blocks, which logs revokes) and syncs, round after round.
// With churn, it then makes that many small transactions (a file and a
// sync each), enough to wrap a small log.
func journalWork(rounds, churn int) func(t *testing.T, dir, img string) {
	return func(t *testing.T, dir, img string) {
		p := func(s string, a ...any) string { return filepath.Join(dir, fmt.Sprintf(s, a...)) }
		// syncfs, not sync: only this filesystem's transactions matter,
		// and a global sync waits for every other disk on the machine.
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		sync := func() {
			if err := unix.Syncfs(int(d.Fd())); err != nil {
				t.Fatalf("syncfs: %v", err)
			}
		}
		for r := range rounds {
			os.MkdirAll(p("d%d/sub", r), 0o755)
			for i := range 40 {
				os.WriteFile(p("d%d/f%d", r, i), bytes.Repeat([]byte{byte(r), byte(i)}, 100*i+1), 0o644)
			}
			// A fragmented file: its extent tree gets index blocks, freed
			// (and revoked) when it is deleted.
			f, _ := os.Create(p("d%d/frag", r))
			for i := range int64(400) {
				f.WriteAt([]byte("x"), i*8192)
			}
			f.Close()
			os.Symlink("f1", p("d%d/link", r))
			os.Link(p("d%d/f2", r), p("d%d/sub/hard", r))
			os.Rename(p("d%d/f3", r), p("d%d/sub/moved", r))
			unix.Setxattr(p("d%d/f4", r), "user.round", []byte(fmt.Sprint(r)), 0)
			// Data starting with the jbd2 magic: with data=journal the log
			// holds it escaped.
			esc := bytes.Repeat([]byte{0xC0, 0x3B, 0x39, 0x98, byte(r)}, 2000)
			os.WriteFile(p("d%d/escaped", r), esc, 0o644)
			sync()
			if r > 0 {
				os.Remove(p("d%d/frag", r-1))
				os.RemoveAll(p("d%d/sub", r-1))
			}
			sync()
		}
		// The kernel moves the log's tail after about a quarter of the
		// log: transactions of varying sizes keep that from lining up
		// with the log's end every time.
		for i := range churn {
			for k := range i%5 + 1 {
				os.WriteFile(p("churn%d", (i+k*7)%50), []byte{byte(i)}, 0o644)
			}
			sync()
			if logWraps(t, img) {
				break
			}
		}
	}
}

var recoveryCases = []struct {
	name        string
	size        int64
	opts        []string
	mountOpts   string
	rounds      int
	churn       int
	wantWrap    bool
	wantEscaped bool
	// journal features the case is meant to cover
	wantCompat, wantIncompat uint32
}{
	// Debian's defaults: csum v3 tags with 64-bit block numbers.
	{name: "ext4", size: 32 << 20, opts: []string{"-t", "ext4", "-b", "4096"}, rounds: 2,
		wantIncompat: jIncompatCsumV3 | jIncompat64bit | jIncompatRevoke},
	// v3 tags without 64-bit numbers, a 1 MiB log that wraps.
	{name: "ext4-1k-wrap", size: 32 << 20, opts: []string{"-t", "ext4", "-b", "1024", "-O", "^64bit", "-J", "size=1"},
		rounds: 2, churn: 400, wantWrap: true, wantIncompat: jIncompatCsumV3},
	// No metadata_csum: v1 commit checksums and async commits.
	{name: "ext4-async", size: 32 << 20, opts: []string{"-t", "ext4", "-O", "^metadata_csum,^64bit"},
		mountOpts: "journal_checksum,journal_async_commit,data=writeback", rounds: 2,
		wantCompat: jCompatChecksum, wantIncompat: jIncompatAsyncCommit},
	// ext3: a block-mapped journal, no checksums, 32-bit tags; file data
	// journaled too, so blocks starting with the jbd2 magic are escaped.
	{name: "ext3", size: 32 << 20, opts: []string{"-t", "ext3"}, mountOpts: "data=journal", rounds: 2,
		wantEscaped: true},
}

// TestReplayMatchesE2fsck leaves filesystems needing recovery through a
// kernel shutdown, replays one copy with replayJournal and another with
// e2fsck -fy, and checks that ours is clean for e2fsck -fn, that the
// kernel shows the same tree as the e2fsck-replayed copy, and that every
// block replay wrote is identical to e2fsck's.
func TestReplayMatchesE2fsck(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	for _, c := range recoveryCases {
		t.Run(c.name, func(t *testing.T) {
			img := needsRecovery(t, c.size, c.opts, c.mountOpts, journalWork(c.rounds, c.churn))
			ours := filepath.Join(t.TempDir(), "ours.img")
			theirs := filepath.Join(t.TempDir(), "theirs.img")
			copyFile(t, img, ours)
			copyFile(t, img, theirs)

			f, err := os.OpenFile(ours, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			st, err := replay(f, c.size)
			f.Close()
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			t.Logf("replayed %d transactions, %d blocks, %d revoked, wrapped %v; journal features compat %#x incompat %#x",
				st.transactions, st.blocks, st.revoked, st.wrapped, st.jcompat, st.jincompat)
			if c.wantIncompat != 0 && st.jincompat&c.wantIncompat != c.wantIncompat || st.jcompat&c.wantCompat != c.wantCompat {
				t.Errorf("journal features compat %#x incompat %#x, want %#x %#x: the case does not test what it says",
					st.jcompat, st.jincompat, c.wantCompat, c.wantIncompat)
			}
			if st.blocks == 0 || st.transactions == 0 {
				t.Errorf("nothing replayed")
			}
			if c.wantEscaped && st.escaped == 0 {
				t.Errorf("no escaped block replayed: the test does not cover escaping")
			}
			if c.wantWrap && !st.wrapped {
				t.Errorf("the log did not wrap: the test does not cover wrapping")
			}
			if superNeedsRecovery(t, ours) {
				t.Errorf("needs_recovery still set after replay")
			}
			fsck(t, ours)
			if out, err := runCmdErr("e2fsck", "-fy", theirs); err != nil {
				if code, ok := err.(interface{ ExitCode() int }); !ok || code.ExitCode() > 1 {
					t.Fatalf("e2fsck -fy: %v\n%s", err, out)
				}
			}
			compareImages(t, ours, theirs, openImage(t, ours).BlockSize())

			// The kernel mounts ours without needing recovery and shows
			// the tree e2fsck's replay gives.
			dir, _ := mount(t, ours, false)
			n := fstestutil.CompareTreeWith(t, openImage(t, theirs), dir, kernelView)
			t.Logf("%d entries compared", n)
			if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("d%d/f39", c.rounds-1))); err != nil {
				t.Errorf("the last round's files are missing: %v", err)
			}

			// Replay is idempotent: a second run finds nothing to do.
			f, _ = os.OpenFile(ours, os.O_RDWR, 0)
			defer f.Close()
			if n, err := replayJournal(f, c.size); n != 0 || err != nil {
				t.Errorf("second replay: %d blocks, %v", n, err)
			}
		})
	}
}

// logWraps says whether the live part of the journal of the (mounted)
// filesystem in img currently runs across the end of the log, replaying
// a snapshot into memory.
func logWraps(t *testing.T, img string) bool {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	st, err := replay(&memOverlay{base: f, w: map[int64][]byte{}}, fi.Size())
	return err == nil && st.wrapped
}

// memOverlay keeps writes in memory over a read-only base, in 1 KiB units
// (every write replay makes is 1 KiB aligned).
type memOverlay struct {
	base io.ReaderAt
	w    map[int64][]byte
}

func (m *memOverlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.base.ReadAt(p, off)
	for i := off &^ 1023; i < off+int64(len(p)); i += 1024 {
		if b, ok := m.w[i]; ok {
			lo, hi := max(i, off), min(i+1024, off+int64(len(p)))
			copy(p[lo-off:hi-off], b[lo-i:hi-i])
		}
	}
	return n, err
}

func (m *memOverlay) WriteAt(p []byte, off int64) (int, error) {
	if off%1024 != 0 || len(p)%1024 != 0 {
		return 0, fmt.Errorf("memOverlay: unaligned write of %d at %d", len(p), off)
	}
	for i := 0; i < len(p); i += 1024 {
		m.w[off+int64(i)] = append([]byte(nil), p[i:i+1024]...)
	}
	return len(p), nil
}

// compareImages checks that our replay and e2fsck's give the same image,
// apart from the superblock and group descriptor fields e2fsck's check
// itself updates.
func compareImages(t *testing.T, a, b string, bs int64) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	v := openImage(t, a)
	sbBlock := int64(superOffset) / bs
	var diff []int64
	for off := int64(0); off < int64(len(da)); off += bs {
		if !bytes.Equal(da[off:off+bs], db[off:off+bs]) {
			diff = append(diff, off/bs)
			var at []string
			for i := off; i < off+bs && len(at) < 12; i++ {
				if da[i] != db[i] {
					at = append(at, fmt.Sprintf("%#x:%02x/%02x", i-off, da[i], db[i]))
				}
			}
			t.Logf("block %d: ours/e2fsck at %v", off/bs, at)
			// e2fsck also updates the superblock (mount count, check
			// time) and group flags after its check: allowed there only.
			if blk := off / bs; blk < sbBlock || blk > sbBlock+int64(v.gdtBlocks) {
				t.Errorf("block %d differs from e2fsck's replay", blk)
			}
		}
	}
	if len(diff) > 0 {
		t.Logf("blocks differing from e2fsck's replay: %v", diff)
	}
}

// memDev is a device in memory.
type memDev []byte

func (m memDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("memDev: write of %d at %d past the end", len(p), off)
	}
	return copy(m[off:], p), nil
}

// smallRecovery is a small filesystem needing recovery (csum v3, 1 KiB
// blocks), built once per test binary.
var smallRecovery struct {
	once sync.Once
	img  []byte
	err  string
}

func needsRecoveryImage(t *testing.T) memDev {
	t.Helper()
	need(t, "mke2fs")
	needLoop(t)
	smallRecovery.once.Do(func() {
		img := needsRecovery(t, 16<<20, []string{"-t", "ext4", "-b", "1024", "-J", "size=1"}, "", journalWork(2, 0))
		b, err := os.ReadFile(img)
		if err != nil {
			smallRecovery.err = err.Error()
		}
		smallRecovery.img = b
	})
	if smallRecovery.img == nil {
		t.Fatalf("building the needs-recovery image failed: %s", smallRecovery.err)
	}
	return append(memDev(nil), smallRecovery.img...)
}

// TestReplayRefusesDamage damages a real log in the ways a hostile image
// could and checks that replay stops with a clear error before writing
// anything.
func TestReplayRefusesDamage(t *testing.T) {
	base := needsRecoveryImage(t)
	size := int64(len(base))
	open := func(t *testing.T, dev memDev) (*journal, []jtrans) {
		t.Helper()
		v, err := Open(dev, size)
		if err != nil {
			t.Fatal(err)
		}
		j, err := openJournal(dev, v, 8)
		if err != nil {
			t.Fatal(err)
		}
		tr, _, err := j.scan()
		if err != nil || len(tr) == 0 || len(tr[0].tags) == 0 {
			t.Fatalf("scan of the undamaged log: %d transactions, %v", len(tr), err)
		}
		return j, tr
	}
	at := func(j *journal, n uint32) int64 {
		p, err := j.phys(n)
		if err != nil {
			panic(err)
		}
		return int64(p) * j.bs
	}
	resealJSB := func(j *journal, dev memDev) {
		b := dev[at(j, 0):]
		binary.BigEndian.PutUint32(b[0xFC:], jsuperChecksum(b))
	}
	cases := []struct {
		name    string
		damage  func(j *journal, tr []jtrans, dev memDev)
		want    string
		wantErr error
	}{
		{"logged block", func(j *journal, tr []jtrans, dev memDev) {
			dev[at(j, tr[0].tags[0].jblk)+100] ^= 0xFF
		}, "bad checksum of journal block", fsdrivers.ErrCorrupt},
		{"descriptor", func(j *journal, tr []jtrans, dev memDev) {
			dev[at(j, tr[0].tags[0].jblk-1)+20] ^= 0xFF
		}, "descriptor block", fsdrivers.ErrCorrupt},
		{"target beyond the filesystem", func(j *journal, tr []jtrans, dev memDev) {
			off := at(j, tr[0].tags[0].jblk-1)
			b := dev[off : off+j.bs]
			binary.BigEndian.PutUint32(b[jHdrSize:], 0xFFFFFF00)
			binary.BigEndian.PutUint32(b[j.bs-4:], 0)
			c := crc32c(j.seed, b[:j.bs-4])
			binary.BigEndian.PutUint32(b[j.bs-4:], crc32c(c, []byte{0, 0, 0, 0}))
		}, "beyond the filesystem", fsdrivers.ErrCorrupt},
		{"log start out of range", func(j *journal, tr []jtrans, dev memDev) {
			binary.BigEndian.PutUint32(dev[at(j, 0)+0x1C:], j.sb.maxLen+5)
			resealJSB(j, dev)
		}, "outside the log", fsdrivers.ErrCorrupt},
		{"journal superblock checksum", func(j *journal, tr []jtrans, dev memDev) {
			dev[at(j, 0)+0x1C] ^= 1
		}, "journal superblock checksum", fsdrivers.ErrCorrupt},
		{"unknown journal feature", func(j *journal, tr []jtrans, dev memDev) {
			b := dev[at(j, 0):]
			binary.BigEndian.PutUint32(b[0x28:], binary.BigEndian.Uint32(b[0x28:])|0x4000)
			resealJSB(j, dev)
		}, "unknown incompatible features", fsdrivers.ErrReadOnly},
		{"external journal", func(j *journal, tr []jtrans, dev memDev) {
			sb := dev[superOffset : superOffset+superSize]
			binary.LittleEndian.PutUint32(sb[sbJournalInum:], 0)
			binary.LittleEndian.PutUint32(sb[sbJournalDev:], 0x0801)
			binary.LittleEndian.PutUint32(sb[sbOffChecksum:], crc32c(^uint32(0), sb[:sbOffChecksum]))
		}, "external device", fsdrivers.ErrReadOnly},
		{"fast commits pending", func(j *journal, tr []jtrans, dev memDev) {
			b := dev[at(j, 0):]
			binary.BigEndian.PutUint32(b[0x28:], binary.BigEndian.Uint32(b[0x28:])|jIncompatFastCommit)
			binary.BigEndian.PutUint32(b[0x54:], 16)
			resealJSB(j, dev)
			fc := dev[at(j, j.sb.maxLen-16):]
			binary.LittleEndian.PutUint16(fc, fcTagHead)
			binary.LittleEndian.PutUint16(fc[2:], 8)
			binary.LittleEndian.PutUint32(fc[8:], tr[len(tr)-1].tid+1)
		}, "fast-commit", fsdrivers.ErrReadOnly},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := append(memDev(nil), base...)
			j, tr := open(t, dev)
			c.damage(j, tr, dev)
			before := append(memDev(nil), dev...)
			n, err := replayJournal(dev, size)
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, c.wantErr) {
				t.Fatalf("replay = %d, %v; want an error mentioning %q wrapping %v", n, err, c.want, c.wantErr)
			}
			t.Logf("%v", err)
			if !bytes.Equal(before, dev) {
				t.Errorf("the refused replay wrote to the device")
			}
		})
	}
}

// TestReplayAsyncTornCommit: with async commits, a last transaction whose
// logged block fails its checksum is an interrupted commit: the log ends
// before it and the earlier transactions are replayed.
func TestReplayAsyncTornCommit(t *testing.T) {
	dev := needsRecoveryImage(t)
	size := int64(len(dev))
	v, err := Open(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	j, err := openJournal(dev, v, 8)
	if err != nil {
		t.Fatal(err)
	}
	tr, _, err := j.scan()
	if err != nil || len(tr) < 2 {
		t.Fatalf("want 2+ transactions, got %d, %v", len(tr), err)
	}
	b := dev[func() int64 { p, _ := j.phys(0); return int64(p) * j.bs }():]
	binary.BigEndian.PutUint32(b[0x28:], binary.BigEndian.Uint32(b[0x28:])|jIncompatAsyncCommit)
	binary.BigEndian.PutUint32(b[0xFC:], jsuperChecksum(b))
	last := tr[len(tr)-1]
	p, _ := j.phys(last.tags[0].jblk)
	dev[int64(p)*j.bs+7] ^= 0xFF
	st, err := replay(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	if st.transactions != len(tr)-1 {
		t.Errorf("replayed %d transactions, want %d (all but the torn one)", st.transactions, len(tr)-1)
	}
}

// FuzzReplay feeds damaged journals to the replay: errors are fine,
// panics and hangs are not.
func FuzzReplay(f *testing.F) {
	f.Add(uint32(0), []byte{0xFF})
	f.Add(uint32(4096), []byte("\xc0\x3b\x39\x98\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		dev := needsRecoveryImage(t)
		v, err := Open(dev, int64(len(dev)))
		if err != nil {
			t.Fatal(err)
		}
		j, err := openJournal(dev, v, 8)
		if err != nil {
			t.Fatal(err)
		}
		// Patch the journal file (not the rest of the filesystem).
		jlen := int64(j.sb.maxLen) * j.bs
		o := int64(off) % jlen
		for i, c := range patch {
			jo := o + int64(i)
			if jo >= jlen {
				break
			}
			p, err := j.phys(uint32(jo / j.bs))
			if err != nil {
				t.Fatal(err)
			}
			dev[int64(p)*j.bs+jo%j.bs] = c
		}
		replay(dev, int64(len(dev)))
	})
}

// TestWriteAfterReplay: opening a filesystem that needs recovery for
// writing replays it first; our edits then land on the replayed state and
// the kernel sees both.
func TestWriteAfterReplay(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, needsRecoveryImage(t), 0o644); err != nil {
		t.Fatal(err)
	}
	w := openW(t, img)
	a, err := w.Create(w.Root(), "after-replay", fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(a.Ino, []byte("written after replay"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if superNeedsRecovery(t, img) {
		t.Fatal("needs_recovery still set")
	}
	fsck(t, img)
	dir, _ := mount(t, img, false)
	if b, err := os.ReadFile(filepath.Join(dir, "after-replay")); err != nil || string(b) != "written after replay" {
		t.Errorf("our file: %q, %v", b, err)
	}
	// Files only the journal held before replay.
	if b, err := os.ReadFile(filepath.Join(dir, "d1/f39")); err != nil || len(b) != 2*(100*39+1) {
		t.Errorf("replayed file d1/f39: %d bytes, %v", len(b), err)
	}
}
