package parttable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
)

var (
	// ErrCorrupt is wrapped when a table is present but cannot be used:
	// both GPT copies damaged, an EBR chain that loops, an entry pointing
	// outside the disk.
	ErrCorrupt = errors.New("parttable: corrupt partition table")
	// ErrNoTable is wrapped by the writers when the disk has no MBR or GPT.
	ErrNoTable = errors.New("parttable: no partition table")
	// ErrSectorSize is wrapped when a sector size other than 0, 512 or 4096
	// is asked for.
	ErrSectorSize = errors.New("parttable: unsupported sector size")
)

// maxTableBytes bounds what one GPT entry array may claim, so a hostile
// header cannot make us allocate gigabytes. sgdisk's default is 16 KiB;
// 4 MiB leaves room for any table a real tool writes.
const maxTableBytes = 4 << 20

// Read reads the partition table of a disk of diskSize bytes.
//
// sectorSize is the logical sector size; 0 detects it: a GPT header
// signature at byte 512 means 512, at byte 4096 means 4096 ("4Kn"), and
// failing both, the backup header's signature in the last 512- or
// 4096-byte sector decides; an MBR-only disk is read with 512 unless the
// caller says 4096.
//
// A disk without a recognisable table (a bare filesystem, zeros) is returned
// as Kind "none" with no partitions. Read returns an error wrapping ErrCorrupt
// when a table is present but unusable.
func Read(r io.ReaderAt, diskSize int64, sectorSize int) (*Table, error) {
	if diskSize < 0 {
		return nil, fmt.Errorf("parttable: negative disk size %d", diskSize)
	}
	ss, err := detectSectorSize(r, diskSize, sectorSize)
	if err != nil {
		return nil, err
	}
	none := &Table{Kind: KindNone, SectorSize: ss, DiskSize: diskSize, Partitions: []Partition{}}
	if diskSize < int64(ss) {
		return none, nil
	}
	sector0 := make([]byte, 512)
	if err := readFull(r, sector0, 0); err != nil {
		return nil, fmt.Errorf("parttable: read sector 0: %w", err)
	}
	m, mbrOK := parseMBR(sector0)
	hasGPTSig, err := gptSignatureAt(r, diskSize, int64(ss))
	if err != nil {
		return nil, err
	}

	switch {
	case mbrOK && m.protective():
		t, err := readGPT(r, diskSize, ss)
		if err != nil {
			other := int64(4096 + 512 - ss)
			if ok, _ := gptSignatureAt(r, diskSize, other); ok {
				return nil, fmt.Errorf("%w (a GPT header is at byte %d: the disk has %d-byte sectors)", err, other, other)
			}
			return nil, err
		}
		if m.hybrid() {
			t.Warnings = append(t.Warnings, "hybrid MBR: the MBR lists partitions besides the GPT protective entry")
		}
		return t, nil
	case mbrOK && !m.empty():
		t, err := readMBR(r, diskSize, ss, m)
		if err != nil {
			return nil, err
		}
		if hasGPTSig {
			// The kernel trusts the MBR here (no protective entry), and so
			// do we; the GPT is most likely left over from an older layout.
			t.Warnings = append(t.Warnings, "stale GPT signature ignored: the MBR has no protective entry")
		}
		return t, nil
	case hasGPTSig:
		// A GPT without a protective MBR (sector 0 wiped or empty): usable,
		// but firmware and older tools will not see it.
		t, err := readGPT(r, diskSize, ss)
		if err != nil {
			// Not a table after all: treat as a bare disk.
			return none, nil
		}
		t.Warnings = append(t.Warnings, "GPT without a protective MBR")
		return t, nil
	}
	return none, nil
}

// detectSectorSize applies the rule documented on Read.
func detectSectorSize(r io.ReaderAt, diskSize int64, sectorSize int) (int, error) {
	switch sectorSize {
	case 512, 4096:
		return sectorSize, nil
	case 0:
	default:
		return 0, fmt.Errorf("%w: %d", ErrSectorSize, sectorSize)
	}
	// The primary header first; if neither size has one (a damaged
	// primary), the backup header in the disk's last sector.
	for _, at := range []func(ss int64) int64{
		func(ss int64) int64 { return ss },
		func(ss int64) int64 { return diskSize/ss*ss - ss },
	} {
		for _, ss := range []int64{512, 4096} {
			off := at(ss)
			if off <= 0 {
				continue
			}
			ok, err := gptSignatureAt(r, diskSize, off)
			if err != nil {
				return 0, err
			}
			if ok {
				return int(ss), nil
			}
		}
	}
	return 512, nil
}

var gptSignature = []byte("EFI PART")

func gptSignatureAt(r io.ReaderAt, diskSize, off int64) (bool, error) {
	if off+int64(len(gptSignature)) > diskSize {
		return false, nil
	}
	b := make([]byte, len(gptSignature))
	if err := readFull(r, b, off); err != nil {
		return false, fmt.Errorf("parttable: read at %d: %w", off, err)
	}
	return bytes.Equal(b, gptSignature), nil
}

// readFull reads exactly len(b) bytes at off. An io.EOF that comes with a
// full buffer is success, as io.ReaderAt allows; a short read is
// io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// checkOverlaps adds a warning for each pair of data partitions that share
// bytes. Extended containers overlap their logical partitions by design and
// are left out.
func checkOverlaps(t *Table) {
	var ps []Partition
	for _, p := range t.Partitions {
		if !p.Extended {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Start < ps[j].Start })
	for i := 1; i < len(ps); i++ {
		prev := ps[i-1]
		if ps[i].Start < prev.Start+prev.Size {
			t.Warnings = append(t.Warnings, fmt.Sprintf("partitions %d and %d overlap", prev.Number, ps[i].Number))
		}
	}
}
