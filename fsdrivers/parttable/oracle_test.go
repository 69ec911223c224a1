package parttable

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// This file holds the helpers that drive the field's own tools (sfdisk,
// sgdisk, losetup) as oracles.

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newDisk creates a sparse file of size bytes in t.TempDir().
func newDisk(t testing.TB, size int64) string {
	t.Helper()
	p := t.TempDir() + "/disk.img"
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

func openRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// attachLoop attaches path as a loop device with the given logical sector
// size (how 4Kn disks are made here: sfdisk 2.38 has no --sector-size).
func attachLoop(t testing.TB, path string, ss int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	needTools(t, "losetup")
	out, err := exec.Command("losetup", "-f", "--show", "--sector-size", strconv.Itoa(ss), path).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

type sfdiskJSON struct {
	PT struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Device     string `json:"device"`
		SectorSize int    `json:"sectorsize"`
		FirstLBA   int64  `json:"firstlba"`
		LastLBA    int64  `json:"lastlba"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
			Attrs    string `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskDump(t testing.TB, dev string) sfdiskJSON {
	t.Helper()
	out, err := exec.Command("sfdisk", "-J", dev).Output()
	if err != nil {
		t.Fatalf("sfdisk -J %s: %v", dev, err)
	}
	var j sfdiskJSON
	if err := json.Unmarshal(out, &j); err != nil {
		t.Fatalf("sfdisk -J: %v\n%s", err, out)
	}
	return j
}

var trailingDigits = regexp.MustCompile(`[0-9]+$`)

// compareSfdisk checks every field of every partition against sfdisk -J.
func compareSfdisk(t testing.TB, dev string, got *Table) {
	t.Helper()
	j := sfdiskDump(t, dev)
	wantKind := map[string]string{"dos": KindMBR, "gpt": KindGPT}[j.PT.Label]
	if got.Kind != wantKind {
		t.Fatalf("kind %q, sfdisk says label %q", got.Kind, j.PT.Label)
	}
	if got.SectorSize != j.PT.SectorSize {
		t.Errorf("sector size %d, sfdisk %d", got.SectorSize, j.PT.SectorSize)
	}
	switch got.Kind {
	case KindGPT:
		if got.DiskGUID != j.PT.ID {
			t.Errorf("disk GUID %s, sfdisk %s", got.DiskGUID, j.PT.ID)
		}
	case KindMBR:
		id, _ := strconv.ParseUint(strings.TrimPrefix(j.PT.ID, "0x"), 16, 32)
		if got.MBRSignature != uint32(id) {
			t.Errorf("MBR signature %#x, sfdisk %s", got.MBRSignature, j.PT.ID)
		}
	}
	ss := int64(j.PT.SectorSize)
	byNum := map[int]Partition{}
	for _, p := range got.Partitions {
		byNum[p.Number] = p
	}
	if len(byNum) != len(j.PT.Partitions) {
		t.Errorf("%d partitions, sfdisk lists %d", len(byNum), len(j.PT.Partitions))
	}
	for _, sp := range j.PT.Partitions {
		n, _ := strconv.Atoi(trailingDigits.FindString(strings.TrimPrefix(sp.Node, j.PT.Device)))
		p, ok := byNum[n]
		if !ok {
			t.Errorf("partition %d (sfdisk %s) missing", n, sp.Node)
			continue
		}
		if p.Start != sp.Start*ss || p.Size != sp.Size*ss {
			t.Errorf("partition %d: start %d size %d, sfdisk start %d size %d (bytes)", n, p.Start, p.Size, sp.Start*ss, sp.Size*ss)
		}
		switch got.Kind {
		case KindGPT:
			if p.Type != sp.Type || p.GUID != sp.UUID || p.Name != sp.Name {
				t.Errorf("partition %d: type %s guid %s name %q, sfdisk %s %s %q", n, p.Type, p.GUID, p.Name, sp.Type, sp.UUID, sp.Name)
			}
			if p.Bootable != strings.Contains(sp.Attrs, "LegacyBIOSBootable") {
				t.Errorf("partition %d: bootable %v, sfdisk attrs %q", n, p.Bootable, sp.Attrs)
			}
		case KindMBR:
			typ, _ := strconv.ParseUint(sp.Type, 16, 8)
			if p.Type != mbrTypeString(byte(typ)) || p.Bootable != sp.Bootable {
				t.Errorf("partition %d: type %s bootable %v, sfdisk %s %v", n, p.Type, p.Bootable, sp.Type, sp.Bootable)
			}
			if p.Extended != isExtendedType(byte(typ)) || p.Logical != (n >= 5) {
				t.Errorf("partition %d: extended %v logical %v", n, p.Extended, p.Logical)
			}
		}
	}
}

// sgdiskVerify runs sgdisk -v and fails on anything but a clean bill:
// "No problems found" and no Problem/Warning lines. Alignment "Caution"
// notes are not problems (sgdisk prints them for its own -n 0:0 too).
func sgdiskVerify(t testing.TB, dev string) {
	t.Helper()
	out := run(t, "", "sgdisk", "-v", dev)
	for _, line := range strings.Split(out, "\n") {
		l := strings.ToLower(strings.TrimSpace(line))
		if strings.HasPrefix(l, "problem") || strings.HasPrefix(l, "warning") || strings.Contains(l, "corrupt") || strings.Contains(l, "invalid") {
			t.Errorf("sgdisk -v %s: %s\n%s", dev, line, out)
			return
		}
	}
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", dev, out)
	}
}

// sgdiskField returns the value after "label: " in sgdisk output.
func sgdiskField(t testing.TB, out, label string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, label); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q in sgdisk output:\n%s", label, out)
	return ""
}

// sgdiskCompare checks each partition against sgdisk -i N.
func sgdiskCompare(t testing.TB, dev string, got *Table) {
	t.Helper()
	ss := int64(got.SectorSize)
	for _, p := range got.Partitions {
		out := run(t, "", "sgdisk", "-i", strconv.Itoa(p.Number), dev)
		if g := sgdiskField(t, out, "Partition unique GUID:"); g != p.GUID {
			t.Errorf("partition %d GUID %s, sgdisk %s", p.Number, p.GUID, g)
		}
		if g := strings.Fields(sgdiskField(t, out, "Partition GUID code:"))[0]; g != p.Type {
			t.Errorf("partition %d type %s, sgdisk %s", p.Number, p.Type, g)
		}
		first, _ := strconv.ParseInt(strings.Fields(sgdiskField(t, out, "First sector:"))[0], 10, 64)
		last, _ := strconv.ParseInt(strings.Fields(sgdiskField(t, out, "Last sector:"))[0], 10, 64)
		if first*ss != p.Start || (last-first+1)*ss != p.Size {
			t.Errorf("partition %d: start %d size %d, sgdisk first %d last %d", p.Number, p.Start, p.Size, first, last)
		}
		if name := strings.Trim(sgdiskField(t, out, "Partition name:"), "'"); name != p.Name {
			t.Errorf("partition %d name %q, sgdisk %q", p.Number, p.Name, name)
		}
	}
}

var execCommand = exec.Command
