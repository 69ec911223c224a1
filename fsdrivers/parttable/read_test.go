package parttable

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

const (
	mib       = 1 << 20
	diskGUID  = "11111111-2222-3333-4444-555555555555"
	espGUID   = "AAAAAAAA-0000-4000-8000-000000000001"
	rootGUID  = "AAAAAAAA-0000-4000-8000-000000000002"
	swapGUID  = "AAAAAAAA-0000-4000-8000-000000000004"
	mbrScript = `label: dos
label-id: 0x12345678
start=2048, size=20480, type=83, bootable
start=22528, size=10240, type=82
start=32768, type=%s
size=8192, type=83
size=8192, type=7
type=b
`
)

// makeGPT builds a 32 MiB GPT disk with sgdisk: an ESP, a Linux
// filesystem with a non-ASCII name and the legacy-boot attribute, a gap in
// the entry numbers, and a swap partition filling the rest.
func makeGPT(t testing.TB) string {
	t.Helper()
	needTools(t, "sgdisk", "sfdisk")
	p := newDisk(t, 32*mib)
	run(t, "", "sgdisk", "-o", "-U", diskGUID,
		"-n", "1:2048:+4M", "-t", "1:ef00", "-u", "1:"+espGUID, "-c", "1:EFI",
		"-n", "2:0:+8M", "-t", "2:8300", "-u", "2:"+rootGUID, "-c", "2:root ü", "-A", "2:set:2",
		"-n", "4:0:0", "-t", "4:8200", "-u", "4:"+swapGUID, p)
	return p
}

// makeMBR builds a 64 MiB MBR disk with sfdisk: two primaries, an extended
// container of type extType and three logical partitions.
func makeMBR(t testing.TB, extType string) string {
	t.Helper()
	needTools(t, "sfdisk")
	p := newDisk(t, 64*mib)
	run(t, strings.Replace(mbrScript, "%s", extType, 1), "sfdisk", "-q", p)
	return p
}

func readFile(t testing.TB, path string, ss int) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	tb, err := Read(f, fi.Size(), ss)
	if err != nil {
		t.Fatalf("Read(%s): %v", path, err)
	}
	return tb
}

func TestReadGPT(t *testing.T) {
	p := makeGPT(t)
	tb := readFile(t, p, 0)
	if len(tb.Warnings) != 0 {
		t.Errorf("warnings on a clean disk: %q", tb.Warnings)
	}
	compareSfdisk(t, p, tb)
	sgdiskCompare(t, p, tb)
	names := map[int]string{}
	for _, p := range tb.Partitions {
		names[p.Number] = p.TypeName
	}
	if names[1] != "EFI System" || names[2] != "Linux filesystem" || names[4] != "Linux swap" {
		t.Errorf("type names %v", names)
	}
	// Protective MBR, primary header+entries (LBA 1-33), backup entries +
	// header (the last 33 LBAs).
	want := []Range{{0, 34 * 512}, {32*mib - 33*512, 33 * 512}}
	if !equalRanges(tb.Reserved, want) {
		t.Errorf("reserved %v, want %v", tb.Reserved, want)
	}
}

func TestReadMBR(t *testing.T) {
	for _, ext := range []string{"5", "f", "85"} {
		t.Run("ext_"+ext, func(t *testing.T) {
			p := makeMBR(t, ext)
			tb := readFile(t, p, 0)
			if len(tb.Warnings) != 0 {
				t.Errorf("warnings on a clean disk: %q", tb.Warnings)
			}
			compareSfdisk(t, p, tb)
			var nums []int
			for _, p := range tb.Partitions {
				nums = append(nums, p.Number)
			}
			if len(nums) != 6 || nums[3] != 5 || nums[5] != 7 {
				t.Errorf("numbers %v", nums)
			}
			// MBR + one EBR per logical partition.
			if len(tb.Reserved) != 4 || tb.Reserved[0] != (Range{0, 512}) || tb.Reserved[1] != (Range{32768 * 512, 512}) {
				t.Errorf("reserved %v", tb.Reserved)
			}
		})
	}
}

func Test4Kn(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk")
	cases := []struct{ name, script string }{
		{"gpt", "label: gpt\nlabel-id: " + diskGUID + "\nfirst-lba: 6\n" +
			"start=256, size=2560, type=U, uuid=" + espGUID + ", name=\"EFI\"\n" +
			"size=4096, type=L, uuid=" + rootGUID + ", name=\"root\"\n" +
			"type=S, uuid=" + swapGUID + "\n"},
		{"mbr", strings.Replace(strings.ReplaceAll(mbrScript, "start=2048, size=20480", "start=256, size=2560"),
			"%s", "5", 1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newDisk(t, 256*mib)
			dev := attachLoop(t, p, 4096)
			// sfdisk cannot re-read a loop device's table here (no
			// partition scanning); the write itself succeeds.
			runNoFail(t, c.script, "sfdisk", "-q", dev)
			// Auto-detection finds a 4Kn GPT; an MBR-only disk needs the
			// caller to say 4096.
			ss := 0
			if c.name == "mbr" {
				ss = 4096
			}
			tb := readFile(t, p, ss)
			if tb.SectorSize != 4096 {
				t.Fatalf("sector size %d", tb.SectorSize)
			}
			compareSfdisk(t, dev, tb)
			if c.name == "gpt" {
				sgdiskVerify(t, dev)
				sgdiskCompare(t, dev, tb)
				// A damaged primary header: detection falls back to the
				// backup's signature in the last 4096-byte sector.
				f := openRW(t, p)
				if _, err := f.WriteAt(make([]byte, 8), 4096); err != nil {
					t.Fatal(err)
				}
				tb2 := readFile(t, p, 0)
				if tb2.SectorSize != 4096 || len(tb2.Partitions) != len(tb.Partitions) || len(tb2.Warnings) == 0 {
					t.Errorf("damaged 4Kn primary: %+v", tb2)
				}
			}
		})
	}
}

// runNoFail runs a command whose exit status we check against its output
// instead (sfdisk on a loop device fails only the final re-read ioctl).
func runNoFail(t testing.TB, stdin, name string, args ...string) {
	t.Helper()
	cmd := execCommand(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Re-reading the partition table failed") {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func TestReadNone(t *testing.T) {
	fatVBR := make([]byte, 4096)
	copy(fatVBR, []byte{0xeb, 0x3c, 0x90, 'm', 'k', 'f', 's', '.', 'f', 'a', 't', 0x00, 0x02, 0x04, 0x04, 0x00, 0x02})
	fatVBR[21] = 0xf8
	fatVBR[510], fatVBR[511] = 0x55, 0xaa
	// Boot flags that are neither 0 nor 0x80: not an MBR, as the kernel says.
	badFlags := make([]byte, 4096)
	badFlags[446] = 0x12
	badFlags[446+4] = 0x83
	badFlags[446+8] = 1
	badFlags[446+12] = 2
	badFlags[510], badFlags[511] = 0x55, 0xaa
	ntfs := make([]byte, 4096)
	copy(ntfs[3:], "NTFS    ")
	ntfs[510], ntfs[511] = 0x55, 0xaa
	emptyMBR := make([]byte, 4096)
	emptyMBR[510], emptyMBR[511] = 0x55, 0xaa
	for name, disk := range map[string][]byte{
		"zeros": make([]byte, 1<<16), "fat": fatVBR, "ntfs": ntfs, "bad flags": badFlags,
		"empty mbr": emptyMBR, "tiny": {1, 2, 3}, "empty": nil,
	} {
		t.Run(name, func(t *testing.T) {
			tb, err := Read(bytes.NewReader(disk), int64(len(disk)), 0)
			if err != nil {
				t.Fatal(err)
			}
			if tb.Kind != KindNone || len(tb.Partitions) != 0 || tb.SectorSize != 512 {
				t.Errorf("got %+v", tb)
			}
		})
	}
	t.Run("mkfs.fat", func(t *testing.T) {
		needTools(t, "mkfs.fat")
		p := newDisk(t, 32*mib)
		run(t, "", "mkfs.fat", "-F", "16", "-i", "12345678", p)
		if tb := readFile(t, p, 0); tb.Kind != KindNone {
			t.Errorf("bare FAT16 read as %q", tb.Kind)
		}
	})
}

func TestSectorSizeArg(t *testing.T) {
	if _, err := Read(bytes.NewReader(nil), 0, 1024); !errors.Is(err, ErrSectorSize) {
		t.Errorf("sector size 1024: %v", err)
	}
}

func equalRanges(a, b []Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWrongSectorSize(t *testing.T) {
	needTools(t, "sfdisk")
	p := newDisk(t, 64*mib)
	dev := attachLoop(t, p, 4096)
	runNoFail(t, "label: gpt\nfirst-lba: 6\nstart=256, size=2560, type=L\n", "sfdisk", "-q", dev)
	f := openRW(t, p)
	_, err := Read(f, 64*mib, 512)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "4096-byte sectors") {
		t.Errorf("4Kn GPT read as 512: %v", err)
	}
}
